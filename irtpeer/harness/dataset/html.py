"""The self-contained review page (no network, no external files): the build's instances as cards,
accept / reject buttons and a comment box per instance, kept in the browser's localStorage, and a
button that downloads the reviewed CSV for ``irtpeer dataset accept``. Data is embedded as JSON and
put on the page with ``textContent`` only, so instance text can never run as markup."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>irtpeer dataset review</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem;color:#222}
.card{border:1px solid #ccc;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.card.accept{border-color:#2a7;background:#f3fbf6}.card.reject{border-color:#c33;background:#fdf3f3}
h2{font-size:1rem;margin:.2rem 0}.meta{color:#555;font-size:.85rem}
dt{font-weight:600;margin-top:.5rem}dd{margin:.1rem 0 0 0;white-space:pre-wrap}
.neg dt{color:#a33}textarea{width:100%;min-height:2.5rem}
#bar{position:sticky;top:0;background:#fff;padding:.5rem 0;border-bottom:1px solid #ddd}
</style></head><body>
<div id="bar"><b>irtpeer dataset review</b> — <span id="progress"></span>
<button id="download">Download reviewed CSV</button></div>
<p>Accept an instance when the reference is good on every active dimension and each negative fails
exactly its own dimension while staying good on the others. Then download the CSV and run
<code>irtpeer dataset accept DIR reviewed.csv</code>.</p>
<div id="cards"></div>
<script type="application/json" id="data">__DATA__</script>
<script>
const DATA = JSON.parse(document.getElementById("data").textContent);
const KEY = "irtpeer-review:" + DATA.rows.length + ":" + (DATA.rows[0] || {}).instance_id;
const state = JSON.parse(localStorage.getItem(KEY) || "{}");
function save() { localStorage.setItem(KEY, JSON.stringify(state)); progress(); }
function progress() {
  const n = Object.values(state).filter(s => s.decision).length;
  document.getElementById("progress").textContent = n + " of " + DATA.rows.length + " reviewed";
}
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function card(r) {
  const s = state[r.instance_id] = state[r.instance_id] || {decision: "", comment: ""};
  const c = el("div", undefined, "card " + s.decision);
  c.appendChild(el("h2", r.instance_id + "  [" + r.mask + "]"));
  c.appendChild(el("div", r.task_format + " · " + r.source_category + " · scene: " + r.seed_scene + " · regenerations: " + r.regenerations, "meta"));
  const dl = el("dl");
  for (const [k, label] of [["context", "Context"], ["trigger", "Trigger"], ["prompt", "User prompt"], ["reference", "Reference (golden)"]]) {
    dl.appendChild(el("dt", label)); dl.appendChild(el("dd", r[k]));
  }
  c.appendChild(dl);
  const neg = el("dl", undefined, "neg");
  for (const d of r.mask.split(",")) {
    neg.appendChild(el("dt", "Negative " + d + " — " + (DATA.dims[d] || d)));
    neg.appendChild(el("dd", r["reject_" + d]));
  }
  c.appendChild(neg);
  for (const d of ["accept", "reject"]) {
    const b = el("button", d); b.onclick = () => { s.decision = s.decision === d ? "" : d; c.className = "card " + s.decision; save(); };
    c.appendChild(b);
  }
  const t = el("textarea"); t.placeholder = "comment"; t.value = s.comment; t.oninput = () => { s.comment = t.value; save(); };
  c.appendChild(t);
  return c;
}
function csvCell(v) { v = String(v); return /[",\n\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
document.getElementById("download").onclick = () => {
  const lines = ["instance_id,accept,reject,comment"];
  for (const r of DATA.rows) {
    const s = state[r.instance_id] || {};
    lines.push([r.instance_id, s.decision === "accept" ? "x" : "", s.decision === "reject" ? "x" : "", s.comment || ""].map(csvCell).join(","));
  }
  const a = el("a"); a.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], {type: "text/csv"}));
  a.download = "reviewed.csv"; a.click();
};
const root = document.getElementById("cards");
for (const r of DATA.rows) root.appendChild(card(r));
progress();
</script></body></html>
"""

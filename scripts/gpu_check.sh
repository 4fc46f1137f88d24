#!/usr/bin/env bash
# The prepared GPU check of issue 13: one CUDA GPU (H100/H200), at most ~9.5 minutes, no downloads,
# only tiny models built on the spot. Steps (each runs even when an earlier one failed):
#   cuda_tests   python -m pytest -q tests/test_cuda.py tests/test_estimator.py tests/test_segsum.py
#                tests/test_scale.py -k cuda (CUDA vs CPU fits; the Schur complement on the GPU)
#   bench_gpu    benchmarks/bench_gpu.py: CUDA vs CPU fit on ~2 M ratings (s, bytes/observation)
#   lagdpo       scripts/gpu_lagdpo.py --out DIR/lagdpo: real bf16 steps per accelerate config
#   vllm         tests/harness/test_vllm_gpu.py on a real vLLM engine (skipped without vllm)
# Output folder: $1, else $OUT, else ./gpu_check_out: summary.json and summary.md (per-step
# pass/fail/skipped and figures, the card, the date), gpu_check.log (every step's output),
# bench_gpu.json, vllm_gpu.json and lagdpo/. Exit status: 0 every step passed or was skipped,
# 1 a step failed, 2 no CUDA device (said in one line, within seconds).
#
#   bash scripts/gpu_check.sh [OUT_DIR]
# Settings (environment): PYTHON (default python3, else python), GPU_CHECK_BUDGET_S (total, 570),
# GPU_CHECK_RATINGS (bench size, 2000000), GPU_CHECK_STEPS (comma-separated subset of the steps),
# GPU_CHECK_CPU_DRY_RUN=1 (exercise this script without a GPU: no CUDA check, the bench on the CPU
# only; for its own test, never for figures).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$(command -v python3 >/dev/null 2>&1 && echo python3 || echo python)}
DIR=${1:-${OUT:-$ROOT/gpu_check_out}}
BUDGET=${GPU_CHECK_BUDGET_S:-570}
RATINGS=${GPU_CHECK_RATINGS:-2000000}
STEPS_WANTED=",${GPU_CHECK_STEPS:-cuda_tests,bench_gpu,lagdpo,vllm},"
DRY=${GPU_CHECK_CPU_DRY_RUN:-0}
BENCH_ARGS=()
[[ $DRY == 1 ]] && BENCH_ARGS=(--cpu-only)
START=$(date +%s)
# this checkout's code, installed or not; nothing may be fetched from a hub
export PYTHONPATH="$ROOT:$ROOT/lagdpo_plugin/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1

if [[ $DRY != 1 ]] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1
then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False): nothing checked" >&2
  exit 2
fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
LOG=$DIR/gpu_check.log
STEPS=$(mktemp)
trap 'rm -f "$STEPS"' EXIT
: >"$LOG"
"$PY" - 2>>"$LOG" >"$DIR/.machine.json" <<'EOF'
import json, platform, subprocess, sys, torch
from importlib.metadata import PackageNotFoundError, version

def v(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None

# what the steps use; a missing one is said in the summary, not discovered in a traceback
names = ["numpy", "scipy", "pandas", "pyarrow", "tqdm", "pytest", "pytest-timeout", "pydantic",
         "openai", "pyyaml", "transformers", "tokenizers", "accelerate", "peft", "trl",
         "deepspeed", "vllm", "xgrammar"]
packages = {n: v(n) for n in names}
missing = [n for n, x in packages.items() if x is None]
if missing:
    print(f"gpu_check: python packages missing on this machine: {', '.join(missing)}",
          file=sys.stderr)
if not torch.cuda.is_available():  # GPU_CHECK_CPU_DRY_RUN
    print(json.dumps({"card": "none (CPU dry run)", "torch": torch.__version__,
                      "packages": packages, "missing_packages": missing}))
    raise SystemExit
p = torch.cuda.get_device_properties(0)
try:
    drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20).stdout.strip()
except Exception:
    drv = None
print(json.dumps({"card": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                  "driver": drv, "torch": torch.__version__, "cuda": torch.version.cuda,
                  "python": platform.python_version(), "packages": packages,
                  "missing_packages": missing}))
EOF

wanted() { [[ $STEPS_WANTED == *",$1,"* ]]; }

cat "$LOG" >&2  # the machine line(s): missing packages

# run_step NAME BUDGET_S CMD...: the command's output goes to the log; one JSON line per step
run_step() {
  local name=$1 budget=$2 left rc t0 t1
  shift 2
  left=$((BUDGET - ($(date +%s) - START) - 10))
  ((budget > left)) && budget=$left
  if ((budget < 5)); then
    echo "{\"name\": \"$name\", \"status\": \"failed\", \"rc\": null, \"seconds\": 0, \"note\": \"no time left in the check's budget\"}" >>"$STEPS"
    echo "== $name: not run, no time left" | tee -a "$LOG"
    return
  fi
  echo "== $name (at most ${budget}s): $*" | tee -a "$LOG"
  t0=$(date +%s%N)
  timeout --kill-after=10 "$budget" "$@" >>"$LOG" 2>&1
  rc=$?
  t1=$((($(date +%s%N) - t0) / 1000000))
  printf '{"name": "%s", "rc": %d, "budget_s": %d, "seconds": %d.%03d}\n' \
    "$name" "$rc" "$budget" $((t1 / 1000)) $((t1 % 1000)) >>"$STEPS"
  echo "== $name: exit $rc" | tee -a "$LOG"
}

skip_step() {  # NAME MESSAGE
  echo "$2" | tee -a "$LOG"
  "$PY" -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "status": "skipped", "note": sys.argv[2]}))' "$1" "$2" >>"$STEPS"
}

# (a) the CUDA estimator tests (CUDA vs CPU comparisons); a missing file is a failure
wanted cuda_tests && {
  CUDA_TESTS=()
  for f in tests/test_cuda.py tests/test_estimator.py tests/test_segsum.py tests/test_scale.py; do
    [[ -f $f ]] && CUDA_TESTS+=("$f") || echo "gpu_check: $f is missing" | tee -a "$LOG"
  done
  if ((${#CUDA_TESTS[@]})); then
    run_step cuda_tests 150 "$PY" -m pytest -q -rs -p no:cacheprovider "${CUDA_TESTS[@]}" -k cuda
  else
    echo '{"name": "cuda_tests", "status": "failed", "rc": null, "seconds": 0, "note": "no test file"}' >>"$STEPS"
  fi
}

# (b) CUDA vs CPU fit on ~2 M ratings
wanted bench_gpu && run_step bench_gpu 150 "$PY" benchmarks/bench_gpu.py --ratings "$RATINGS" \
  --out "$DIR/bench_gpu.json" "${BENCH_ARGS[@]}"

# (c) real bf16 training steps of lagdpo-plugin per shipped accelerate config
if ! wanted lagdpo; then
  :
elif [[ -f scripts/gpu_lagdpo.py ]]; then
  run_step lagdpo 200 "$PY" scripts/gpu_lagdpo.py --out "$DIR/lagdpo"
else
  echo '{"name": "lagdpo", "status": "failed", "rc": null, "seconds": 0, "note": "scripts/gpu_lagdpo.py is missing"}' >>"$STEPS"
fi

# (d) the vLLM offline backend on a real engine with a tiny local model
if ! wanted vllm; then
  :
elif "$PY" -c 'import importlib.util as u, sys; sys.exit(0 if u.find_spec("vllm") else 1)' 2>/dev/null; then
  run_step vllm 100 env IRTPEER_GPU_CHECK_JSON="$DIR/vllm_gpu.json" \
    "$PY" -m pytest -q -rs -p no:cacheprovider tests/harness/test_vllm_gpu.py
else
  skip_step vllm "vllm not installed: skipped (pip install 'irtpeer[vllm]' to check the vLLM backend)"
fi

"$PY" - "$DIR" "$STEPS" "$LOG" <<'EOF'
"""Summary: every step's status and figures, as JSON and markdown (for reports/gpu.md)."""
import json, re, sys, time
from pathlib import Path

d, steps_file, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]).read_text()
steps = [json.loads(x) for x in steps_file.read_text().splitlines() if x.strip()]
machine = json.loads((d / ".machine.json").read_text() or "{}")
(d / ".machine.json").unlink()


def pytest_counts(name):
    part = log.split(f"== {name} (", 1)[-1].split(f"== {name}: exit", 1)[0]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", part)}
    return counts


def load(name):
    p = d / name
    return json.loads(p.read_text()) if p.is_file() else None


for s in steps:
    if "status" in s:
        continue
    rc = s["rc"]
    s["status"] = "passed" if rc == 0 else "timeout" if rc in (124, 137) else "failed"
    if s["name"] in ("cuda_tests", "vllm"):
        s["tests"] = c = pytest_counts(s["name"])
        # on a GPU machine with the step's packages nothing may skip: a skip hides the check
        if s["status"] == "passed" and (c.get("skipped") or not c.get("passed")):
            s["status"], s["note"] = "failed", "tests skipped or none ran (see SKIPPED in the log)"
    if s["name"] == "cuda_tests":
        missing = [f for f in ("tests/test_cuda.py",) if f"{f} is missing" in log]
        if missing:
            s["status"], s["note"] = "failed", f"missing: {', '.join(missing)}"
    if s["name"] == "bench_gpu":
        s["figures"] = load("bench_gpu.json")
    if s["name"] == "vllm":
        s["figures"] = load("vllm_gpu.json")
    if s["name"] == "lagdpo":
        # whatever JSON gpu_lagdpo.py wrote at the top of its folder (s/step, memory per config)
        s["figures"] = {f.name: json.loads(f.read_text()) for f in sorted((d / "lagdpo").glob("*.json"))} or None
passed = all(s["status"] in ("passed", "skipped") for s in steps)
summary = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "machine": machine,
           "passed": passed, "steps": steps}
(d / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

md = [f"## GPU check {summary['date_utc']} UTC: {machine.get('card')} "
      f"({machine.get('memory_gib')} GiB, driver {machine.get('driver')}, torch {machine.get('torch')}, "
      f"CUDA {machine.get('cuda')})", ""]
if machine.get("missing_packages"):
    md += [f"Python packages missing on this machine: {', '.join(machine['missing_packages'])}", ""]
md += ["| step | status | seconds | note |", "|---|---|---|---|"]
for s in steps:
    counts = ", ".join(f"{n} {k}" for k, n in s.get("tests", {}).items())
    extra = "; ".join(x for x in (counts, s.get("note", "")) if x)
    md.append(f"| {s['name']} | {s['status']} | {s.get('seconds') or 0:.0f} | {extra} |")
b = (next((s for s in steps if s["name"] == "bench_gpu"), {}) or {}).get("figures")
if b:
    md += ["", f"CUDA vs CPU fit, {b.get('design')}:", "",
           "| device | ratings | fit s | bytes/obs | peak RSS GB | GPU peak GB |", "|---|---|---|---|---|---|"]
    for dev in ("cpu", "cuda"):
        x = b.get(dev) or {}
        if "fit_s" in x:
            md.append(f"| {dev} | {x['n']:,} | {x['fit_s']:.2f} | {x['bytes_per_obs']:.0f} | "
                      f"{x['peak_rss_gb']:.2f} | {x.get('cuda_peak_gb', float('nan')):.3f} |")
        elif x:
            md.append(f"| {dev} | failed: {x.get('error', '')[:200]} | | | | |")
    c = b.get("cuda_vs_cpu")
    if c:
        md += ["", f"max |measure CUDA - CPU| {c['max_abs_diff_measure']:.2e}, max SE relative "
               f"difference {c['max_rel_diff_se']:.2e}, same iterations: {c['same_iterations']}, "
               f"speed-up {b.get('speedup', float('nan')):.1f}x"]
for name in ("lagdpo", "vllm"):
    f = (next((s for s in steps if s["name"] == name), {}) or {}).get("figures")
    if f:
        md += ["", f"{name}: `{json.dumps(f)[:1500]}`"]
md += ["", f"Overall: {'PASSED' if passed else 'FAILED'} (log: gpu_check.log)", ""]
(d / "summary.md").write_text("\n".join(md))
print("\n".join(md))
sys.exit(0 if passed else 1)
EOF

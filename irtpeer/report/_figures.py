"""Matplotlib figures of the report, each returned as an SVG ``data:`` URI.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (no pyplot state, no GUI backend)
and saved as SVG with text as paths, so they look the same in every browser and carry no font
or network dependency. Question-level plots are distributions, never one mark per question.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

#: Colour-blind safe palette (Okabe-Ito).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000"]
_RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "irtpeer-report",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
#: Most labelled marks in one panel; beyond it a panel shows a distribution.
MAX_LABELS = 40


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_uri(fig) -> str:
    """The figure as a base64 SVG data URI (deterministic: no date, fixed ids)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None}, dpi=150)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def style():
    """Context manager applying the report's matplotlib settings while a figure is drawn."""
    import matplotlib

    return matplotlib.rc_context(_RC)


def short(label: str, n: int = 28) -> str:
    label = str(label)
    return label if len(label) <= n else label[: n - 1] + "…"


# ---------------------------------------------------------------- headline scores
def score_panels(view: pd.DataFrame, metric: str, person: str) -> str:
    """Calibrated measure with 95% intervals beside the raw mean and the Z-score, per model."""
    v = view.sort_values(metric).reset_index(drop=True)
    panels = [(metric, f"{metric} (logits, 95% CI)")]
    for col, title in ((f"raw_{metric}", "Raw Prob / mean score"), (f"z_{metric}", "Z-score")):
        if col in v and v[col].notna().any():
            panels.append((col, title))
    n = len(v)
    with style():
        fig = new_figure(2.6 * len(panels) + 1.2, 0.8 + 0.24 * max(n, 3))
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        y = np.arange(n)
        for ax, (col, title) in zip(axes, panels):
            x = v[col].to_numpy(dtype=float)
            if col == metric and f"{metric}_se" in v:
                err = 1.96 * v[f"{metric}_se"].to_numpy(dtype=float)
                ax.errorbar(x, y, xerr=err, fmt="o", color=PALETTE[0], ms=4, capsize=2, lw=1)
            else:
                ax.plot(x, y, "o", color=PALETTE[1], ms=4)
            ax.set_title(title)
            ax.set_xlabel(title.split(" (")[0] if col != metric else "measure (logits)")
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(y, [short(m) for m in v[person]])
        axes[0].set_ylabel(person)
        return to_uri(fig)


def rank_heatmap(prob: pd.DataFrame, metric: str) -> str:
    """P(rank = r) per model (rows ordered by expected rank), as a heatmap with its values."""
    n, k = prob.shape
    with style():
        fig = new_figure(1.8 + 0.42 * k, 0.9 + 0.26 * n)
        ax = fig.subplots()
        im = ax.imshow(prob.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(k), [str(r) for r in range(1, k + 1)])
        ax.set_yticks(range(n), [short(m) for m in prob.index])
        ax.set_xlabel("rank (1 = best)")
        ax.set_title(f"{metric}: probability of each rank")
        if n * k <= 400:
            for (i, j), p in np.ndenumerate(prob.to_numpy()):
                if p >= 0.005:
                    ax.text(j, i, f"{p:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if p > 0.6 else "black")
        fig.colorbar(im, ax=ax, label="probability", shrink=0.8)
        return to_uri(fig)


# ----------------------------------------------------------------------- Wright map
def _spread(y: np.ndarray, gap: float, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
    """Label positions near ``y`` (order kept), at least ``gap`` apart, inside [lo, hi]."""
    order = np.argsort(y, kind="stable")
    pos = np.clip(y[order].astype(float), lo, hi)
    for i in range(1, len(pos)):  # push up
        pos[i] = max(pos[i], pos[i - 1] + gap)
    if len(pos) and pos[-1] > hi:  # then down from the top where that overflowed
        pos[-1] = hi
        for i in range(len(pos) - 2, -1, -1):
            pos[i] = min(pos[i], pos[i + 1] - gap)
    out = np.empty_like(pos)
    out[order] = pos
    return out


def wright_map(columns: list[tuple[str, pd.DataFrame]], dimension: str) -> str:
    """Every facet on one logit ruler: labelled marks for small facets, histograms for large."""
    allm = np.concatenate([c["measure"].to_numpy(dtype=float) for _, c in columns])
    allm = allm[np.isfinite(allm)]
    lo, hi = (float(allm.min()), float(allm.max())) if len(allm) else (-1.0, 1.0)
    from matplotlib.ticker import MaxNLocator

    pad = 0.08 * max(hi - lo, 1.0)
    height = 5.0
    with style():
        fig = new_figure(1.0 + 1.9 * len(columns), height)
        axes = fig.subplots(1, len(columns), sharey=True, squeeze=False)[0]
        for i, (ax, (name, df)) in enumerate(zip(axes, columns)):
            m = df["measure"].to_numpy(dtype=float)
            labels = df["element"].astype(str).to_numpy()
            ok = np.isfinite(m)
            ax.set_title(f"{short(name, 18)}\n({len(df)})")
            if ok.sum() <= MAX_LABELS:
                ax.set_xticks([])
                ax.spines["bottom"].set_visible(False)
                _labelled(ax, m[ok], labels[ok], PALETTE[i % len(PALETTE)], lo - pad, hi + pad,
                          height)
            else:
                bins = np.linspace(lo - pad, hi + pad, 31)
                ax.hist(m[ok], bins=bins, orientation="horizontal", color=PALETTE[i % 8],
                        alpha=0.8)
                ax.set_xlabel("count")
                ax.xaxis.set_major_locator(MaxNLocator(3, integer=True))
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylim(lo - pad, hi + pad)
        axes[0].set_ylabel("measure (logits)")
        fig.suptitle(f"Wright map, dimension {dimension}: persons higher = better, "
                     "other facets higher = harder / more severe", fontsize=9)
        return to_uri(fig)


def _labelled(ax, m, labels, color, ymin, ymax, height):
    ax.set_xlim(0, 1)
    ax.scatter(np.full(len(m), 0.08), m, s=14, color=color, zorder=3)
    gap = (ymax - ymin) / (height * 72 / 10.5)  # one 8-pt text line in data units
    pos = _spread(m, gap, ymin + gap / 2, ymax - gap / 2)
    for yv, pv, lab in zip(m, pos, labels):
        ax.plot([0.1, 0.2], [yv, pv], color="0.6", lw=0.5)
        ax.text(0.22, pv, short(lab, 16), va="center", fontsize=7.5)


# ------------------------------------------------------------- interval dot plots
def interval_plot(df: pd.DataFrame, label: str, group: str | None, xlabel: str,
                  title: str) -> str:
    """Measures with 95% intervals, one row per element, coloured by ``group`` when given."""
    groups = list(dict.fromkeys(df[group])) if group else [None]
    elements = list(dict.fromkeys(df[label]))
    n, g = len(elements), len(groups)
    offs = np.linspace(-0.25, 0.25, g) if g > 1 else np.zeros(1)
    with style():
        fig = new_figure(6.5, 1.0 + 0.22 * n * max(1, min(g, 3)) ** 0.5 + 0.25 * (g > 1))
        ax = fig.subplots()
        ypos = {e: i for i, e in enumerate(elements)}
        for k, gv in enumerate(groups):
            sub = df if gv is None else df[df[group] == gv]
            y = np.array([ypos[e] for e in sub[label]]) + offs[k]
            ax.errorbar(sub["measure"], y, xerr=1.96 * sub["se"].fillna(0), fmt="o", ms=3.5,
                        lw=1, capsize=1.5, color=PALETTE[k % len(PALETTE)],
                        label=None if gv is None else short(gv, 20))
        ax.axvline(0, color="0.5", lw=0.7, ls=":")
        ax.set_yticks(range(n), [short(e) for e in elements])
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
        if g > 1:
            ax.legend(title=group, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        return to_uri(fig)


def distribution_panels(data: dict[str, np.ndarray], xlabel: str, title: str) -> str:
    """One histogram per dimension (for facets with many elements, e.g. questions)."""
    k = len(data)
    cols = min(k, 3)
    rows = int(np.ceil(k / cols))
    with style():
        fig = new_figure(2.7 * cols + 0.6, 2.1 * rows + 0.4)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, (name, vals) in zip(axes, data.items()):
            vals = vals[np.isfinite(vals)]
            ax.hist(vals, bins=30, color=PALETTE[0], alpha=0.85)
            ax.set_title(f"{short(name, 20)} (n = {len(vals)})")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("count")
        for ax in axes[k:]:
            ax.set_visible(False)
        fig.suptitle(title, fontsize=10)
        return to_uri(fig)


# --------------------------------------------------------------- category curves
def category_probabilities(x: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Andrich rating-scale probabilities P(k | x), k = 0..K, for thresholds ``tau``."""
    K = len(tau)
    cum = np.concatenate([[0.0], np.cumsum(tau)])
    logits = np.arange(K + 1)[None, :] * x[:, None] - cum[None, :]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def category_curves(panels: list[tuple[str, np.ndarray, list]], title: str) -> str:
    """Category probability curves (one panel per dimension or partial-credit element)."""
    k = len(panels)
    cols = min(k, 3)
    rows = int(np.ceil(k / cols))
    x = np.linspace(-6, 6, 241)
    with style():
        fig = new_figure(3.0 * cols + 1.4, 2.3 * rows + 0.5)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, (name, tau, cats) in zip(axes, panels):
            p = category_probabilities(x, np.asarray(tau, dtype=float))
            for j in range(p.shape[1]):
                ax.plot(x, p[:, j], color=PALETTE[j % len(PALETTE)], lw=1.4,
                        ls="-" if j < len(PALETTE) else "--", label=str(cats[j]))
            ax.set_title(short(name, 24))
            ax.set_xlabel("person − facets (logits)")
            ax.set_ylabel("probability")
            ax.set_ylim(0, 1.02)
        for ax in axes[k:]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, title="category", loc="outside right upper", frameon=False)
        fig.suptitle(title, fontsize=10)
        return to_uri(fig)


# ------------------------------------------------------------------ analyses figures
def _grid(k: int, cols: int, w: float, h: float, extra_w: float = 0.6):
    cols = min(k, cols)
    rows = int(np.ceil(k / cols))
    fig = new_figure(w * cols + extra_w, h * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[k:]:
        ax.set_visible(False)
    return fig, axes


def bias_heatmaps(table: pd.DataFrame, fa: str, fb: str) -> str:
    """Bias (logits) per cell of facet_a x facet_b, one panel per dimension; * marks a flagged
    cell (Holm-adjusted p below alpha)."""
    dims = list(dict.fromkeys(table["dimension"]))
    lim = float(np.nanmax(np.abs(table["bias"].to_numpy(dtype=float)))) or 1.0
    lim = min(lim, 3.0)
    rows_ = list(dict.fromkeys(table["element_a"]))
    cols_ = list(dict.fromkeys(table["element_b"]))
    w = 1.2 + 0.32 * len(cols_)
    h = 0.9 + 0.22 * len(rows_)
    with style():
        fig, axes = _grid(len(dims), max(1, int(11 // w)), w, h, 1.2)
        im = None
        for ax, d in zip(axes, dims):
            g = table[table["dimension"] == d]
            mat = g.pivot_table(index="element_a", columns="element_b", values="bias",
                                aggfunc="first").reindex(index=rows_, columns=cols_)
            flag = g.pivot_table(index="element_a", columns="element_b", values="flag",
                                 aggfunc="first").reindex(index=rows_, columns=cols_)
            im = ax.imshow(mat.to_numpy(dtype=float), cmap="RdBu_r", vmin=-lim, vmax=lim,
                           aspect="auto")
            for (i, j), f in np.ndenumerate(flag.fillna(False).to_numpy(dtype=bool)):
                if f:
                    ax.text(j, i, "*", ha="center", va="center", fontsize=11, weight="bold")
            ax.set_xticks(range(len(cols_)), [short(c, 16) for c in cols_], rotation=60,
                          ha="right")
            ax.set_yticks(range(len(rows_)), [short(r, 18) for r in rows_])
            ax.set_title(f"dimension {short(d, 20)}")
            ax.set_xlabel(fb)
            ax.set_ylabel(fa)
        fig.colorbar(im, ax=list(axes[: len(dims)]), label=f"bias (logits; > 0: {fa} harsher)",
                     shrink=0.8)
        return to_uri(fig)


def equating_panels(common: pd.DataFrame, table: pd.DataFrame, z: float = 1.96) -> str:
    """Common-person cross-plots of two dimensions: identity line moved by the linking
    constant, its 95% bands (mean SEs), and the verdict; hexbin where points are many."""
    k = len(table)
    with style():
        fig, axes = _grid(k, 3, 3.1, 3.0)
        for ax, rec in zip(axes, table.to_dict(orient="records")):
            a, b = rec["dim_a"], rec["dim_b"]
            sub = common[[a, b, f"{a}_se", f"{b}_se"]].dropna()
            x, y = sub[a].to_numpy(dtype=float), sub[b].to_numpy(dtype=float)
            if len(x) > 2000:
                ax.hexbin(x, y, gridsize=35, cmap="Blues", mincnt=1, linewidths=0,
                          rasterized=True)
            else:  # many marks: drawn as one embedded bitmap inside the SVG
                ax.plot(x, y, "o", ms=2.5, alpha=0.45, color=PALETTE[0], rasterized=True)
            lo, hi = np.nanmin([x.min(), y.min()]), np.nanmax([x.max(), y.max()])
            line = np.linspace(lo, hi, 2)
            band = z * float(np.sqrt(np.mean(sub[f"{a}_se"] ** 2) + np.mean(sub[f"{b}_se"] ** 2)))
            ax.plot(line, line + rec["shift"], color=PALETTE[1], lw=1.2, label="identity + shift")
            ax.plot(line, line + rec["shift"] + band, color=PALETTE[1], lw=0.8, ls="--",
                    label="95% band")
            ax.plot(line, line + rec["shift"] - band, color=PALETTE[1], lw=0.8, ls="--")
            ax.set_xlabel(f"{short(a, 16)} (logits)")
            ax.set_ylabel(f"{short(b, 16)} (logits)")
            ax.set_title(f"{short(a, 12)} vs {short(b, 12)}: {rec['verdict']}", fontsize=9)
        axes[0].legend(loc="upper left", frameon=False)
        return to_uri(fig)


def kendall_w_bars(friedman: pd.DataFrame) -> str:
    """Kendall's W (agreement of the questions on the model ranking) per target and method."""
    targets = list(dict.fromkeys(friedman["target"]))
    methods = list(dict.fromkeys(friedman["method"]))
    x = np.arange(len(targets))
    width = 0.8 / max(len(methods), 1)
    with style():
        fig = new_figure(1.5 + 0.6 * len(targets) * max(1, len(methods) / 2), 2.8)
        ax = fig.subplots()
        for i, m in enumerate(methods):
            g = friedman[friedman["method"] == m].set_index("target").reindex(targets)
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, g["kendall_w"], width,
                   label=m, color=PALETTE[i % len(PALETTE)])
        ax.set_xticks(x, [short(t, 14) for t in targets])
        ax.set_ylabel("Kendall's W")
        ax.set_xlabel("target")
        ax.set_ylim(0, 1)
        ax.set_title("Agreement of the questions on the model ranking (Friedman)")
        fig.legend(title="method", loc="outside right upper", frameon=False)
        return to_uri(fig)


def judge_count_curves(curve: pd.DataFrame, dstudy: pd.DataFrame) -> str:
    """Kendall tau of the model ranking with k judges vs the full panel; D-study E rho^2."""
    panels = [p for p, df in (("curve", curve), ("dstudy", dstudy)) if len(df)]
    with style():
        fig = new_figure(4.0 * len(panels) + 1.4, 3.0)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, panel in zip(axes, panels):
            if panel == "curve":
                for i, (t, g) in enumerate(curve.groupby("target", sort=False)):
                    ax.plot(g["k"], g["tau_models_mean"], "o-", ms=3,
                            color=PALETTE[i % len(PALETTE)], label=short(t, 14))
                ax.set_xlabel("judges in the panel (k)")
                ax.set_ylabel("Kendall τ-b with the full panel")
                ax.set_title("Model ranking with k judges (mean over subsets)")
                ax.legend(title="target", loc="lower right", frameon=False)
            else:
                for i, (d, g) in enumerate(dstudy.groupby("dimension", sort=False)):
                    ax.plot(g["n_judges"], g["e_rho2"], "o-", ms=3,
                            color=PALETTE[i % len(PALETTE)], label=short(d, 14))
                ax.set_xlabel("judges (n)")
                ax.set_ylabel("generalizability Eρ²")
                ax.set_ylim(0, 1)
                ax.set_title("D-study: reliability with n judges")
                ax.legend(title="dimension", loc="lower right", frameon=False)
        return to_uri(fig)


def ppc_scatter(ppc: pd.DataFrame) -> str:
    """Observed count per element x category against the posterior predictive 90% interval."""
    with style():
        fig = new_figure(4.6, 3.8)
        ax = fig.subplots()
        inside = ~ppc["outside"].to_numpy(dtype=bool)
        for mask, color, label in ((inside, PALETTE[0], "inside 90% interval"),
                                   (~inside, PALETTE[1], "outside")):
            g = ppc[mask]
            ax.errorbar(g["predicted"], g["observed"],
                        xerr=[g["predicted"] - g["low"], g["high"] - g["predicted"]], fmt="o",
                        ms=2.5, lw=0.6, color=color, label=f"{label} ({mask.sum()})")
        hi = float(np.nanmax(ppc[["observed", "high"]].to_numpy(dtype=float))) * 1.05
        ax.plot([0, hi], [0, hi], color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("replicated count (posterior predictive mean, 90% interval)")
        ax.set_ylabel("observed count")
        ax.set_title("Posterior predictive check per element and category")
        ax.legend(loc="upper left", frameon=False)
        return to_uri(fig)

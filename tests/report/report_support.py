"""Small calibrated data sets for the report tests (a uniquely named helper module)."""

from __future__ import annotations

import base64
import functools
import re
import tempfile
from pathlib import Path

import irtpeer

XSS_MODEL = "<script>alert(1)</script>"
XSS_JUDGE = "<img src=x onerror=alert(2)>"
XSS_ITEM = "\"quoted' & <b>bold</b>"


def simulated(*, categories: int = 2, questions: int = 30, models: int = 4, seed: int = 1,
              rename: dict | None = None, path: Path | None = None):
    """(Ratings, Calibration) of a small simulated design; ``rename`` maps column -> {old: new}."""
    sim = irtpeer.simulate(models=models, questions=questions, judges=3, dimensions="A,T,E,C",
                           items_per_dimension=2, categories=categories, seed=seed)
    df = sim.ratings
    for col, mapping in (rename or {}).items():
        df[col] = df[col].replace(mapping)
    source = df
    if path is not None:
        df.to_parquet(path, index=False)
        source = path
    ratings = irtpeer.load_ratings(source)
    cal = irtpeer.TorchMFRM(irtpeer.ModelSpec()).fit(ratings).calibration_
    return ratings, cal


def figure_svgs(html: str) -> list[bytes]:
    """Decoded SVG documents of every figure in the report."""
    uris = re.findall(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    return [base64.b64decode(u) for u in uris]


@functools.lru_cache(maxsize=1)
def xss_report() -> tuple[Path, str]:
    """A report whose model, judge and item names are markup (rendered once per session)."""
    from irtpeer.report import write_report

    ratings, cal = simulated(rename={"model": {"model-1": XSS_MODEL},
                                     "judge": {"judge-1": XSS_JUDGE},
                                     "item": {"A1": XSS_ITEM}}, questions=12)
    out = write_report(cal, ratings, Path(tempfile.mkdtemp(prefix="irtpeer-xss-")) / "xss.html",
                       max_refits=0)  # no judge-count refits: names are what this tests
    return out, out.read_text(encoding="utf-8")

"""Assemble the sections and render the one self-contained HTML file."""

from __future__ import annotations

import os
from pathlib import Path

from .. import __version__
from .._errors import require
from .._io import atomic_write_text
from . import _analyses, _measures, _meta, _sections
from ._sections import guarded


def _environment():
    jinja2 = require("jinja2", "report")
    return jinja2.Environment(
        loader=jinja2.PackageLoader("irtpeer.report", "templates"),
        autoescape=True,  # every user string (model, judge, item, question names) is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def build_sections(cal, ratings, *, analyses: bool = True, head: int = 10,
                   max_rows: int = 1000, estimator=None,
                   max_refits: int = 12) -> list[_sections.Section]:
    """Every section of the report, in order; failures are notes inside their sections."""
    require("matplotlib", "report")
    S = _sections
    out = []
    out += guarded("Scores", S.headline, cal)
    out += guarded("Wright map", S.wright, cal)
    out += guarded("Facet measures", S.facet_plots, cal)
    out += guarded("Rating scale", S.category_section, cal)
    if analyses:
        out += guarded("Measurement tables", _measures.measurement_tables, cal, ratings,
                       head=head, limit=max_rows)
        out += _analyses.analyses_sections(cal, ratings, guarded, estimator=estimator,
                                           max_refits=max_refits)
    out += guarded("Convergence", S.convergence, cal)
    return out


def render_report(cal, ratings, *, analyses: bool = True, title: str | None = None,
                  head: int = 10, max_rows: int = 1000, estimator=None,
                  max_refits: int = 12) -> str:
    """The report as one HTML string (figures, CSS inline; no script, no network request).

    ``analyses=False`` leaves out the sections that need the ratings' residuals (measurement
    tables with fit statistics and the analyses); ``head`` is the number of rows shown at each
    end of a long table and ``max_rows`` the longest table embedded in full on demand. The
    judge-count curve refits subsets of judges with ``estimator`` (default: a torch estimator
    with the calibration's settings, when it came from one), at most ``max_refits`` times.
    """
    facts = _meta.run_facts(cal, ratings)
    sections = build_sections(cal, ratings, analyses=analyses, head=head, max_rows=max_rows,
                              estimator=estimator, max_refits=max_refits)
    sections += guarded("Run metadata", _meta.metadata_section, cal, ratings, facts)
    css = (Path(__file__).parent / "templates" / "report.css").read_text(encoding="utf-8")
    return _environment().get_template("report.html.j2").render(
        title=title or f"irtpeer report: {Path(str(cal.source)).name}",
        cal=cal,
        facts=facts,
        sections=sections,
        css=css,
        n_models=len(cal.scores),
        dimensions=cal.dimensions,
        version=__version__,
    )


def write_report(cal, ratings, path: str | os.PathLike, *, analyses: bool = True,
                 title: str | None = None, head: int = 10, max_rows: int = 1000,
                 estimator=None, max_refits: int = 12) -> Path:
    """Render the report of ``cal`` (fitted to ``ratings``) and write it atomically to ``path``.

    Examples
    --------
    >>> import irtpeer
    >>> from irtpeer.report import write_report
    >>> r = irtpeer.load_ratings(irtpeer.example_path())
    >>> cal = irtpeer.TorchMFRM().fit(r).calibration_
    >>> write_report(cal, r, "report.html")  # doctest: +SKIP
    PosixPath('report.html')
    """
    html = render_report(cal, ratings, analyses=analyses, title=title, head=head,
                         max_rows=max_rows, estimator=estimator, max_refits=max_refits)
    return atomic_write_text(Path(path), html)

"""Self-contained HTML report of facet diagnostics (one file, no script, no network request).

``write_report(cal, ratings, "report.html")`` renders a :class:`~irtpeer.Calibration` (from
either estimator) and the :class:`~irtpeer.Ratings` it was fitted to: headline scores with
their uncertainty, Wright map, FACETS-style measurement tables, facet plots, rating-scale
curves, the analyses of :mod:`irtpeer.analyses`, convergence and run metadata. Templates are
Jinja2 with autoescaping; figures are matplotlib SVGs embedded as data URIs.
"""

from ._render import build_sections, render_report, write_report

__all__ = ["build_sections", "render_report", "write_report"]

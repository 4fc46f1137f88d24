"""``stats``: scipy.stats, imported on first use.

Importing scipy.stats takes about a second, and ``irtpeer score`` imports this package for the
facet summary and the fit statistics, which do not need it.
"""

from __future__ import annotations


class _LazyStats:
    def __getattr__(self, name: str):
        from scipy import stats as _stats

        return getattr(_stats, name)


stats = _LazyStats()

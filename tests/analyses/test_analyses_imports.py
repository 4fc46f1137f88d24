"""irtpeer.analyses imports its modules on first use: every public name resolves, the
submodules are reachable as attributes, and `irtpeer score`'s needs (fit statistics, facet
summary) import neither the clustered SEs' scipy.linalg/scipy.sparse nor the refits."""

import subprocess
import sys

CODE = """
import sys
import irtpeer.analyses.stability  # the module first: the package's `stability` stays the function
import irtpeer.analyses as A
from irtpeer.analyses import facet_summary, fit_statistics
loaded = sorted(m for m in sys.modules if m.startswith("irtpeer.analyses."))
print(",".join(loaded))
print(callable(A.stability), A.fit.__name__, A._model.__name__)
print(sorted(n for n in A.__all__ if getattr(A, n) is None or n not in dir(A)))
print("clustered" in A.question_uncertainty.__module__, "irtpeer.analyses.clustered" in sys.modules)
"""


def test_public_names_and_lazy_modules():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    loaded = set(out[0].split(","))
    assert {"irtpeer.analyses.fit", "irtpeer.analyses.facets"} <= loaded
    assert not loaded & {"irtpeer.analyses.clustered", "irtpeer.analyses.bias",
                         "irtpeer.analyses.judges", "irtpeer.analyses.refit"}
    assert out[1] == "True irtpeer.analyses.fit irtpeer.analyses._model"
    assert out[2] == "[]"
    assert out[3] == "True True"

"""The torch estimator: exact (penalised) maximum likelihood for the many-facet Rasch model.

Method, per dimension
---------------------
1. *Extreme elements* (all scores at the lowest or the highest category) have no finite MLE.
   Without a penalty they are found iteratively (removing one can make another extreme), their
   observations are set aside, and the rest is fitted. Each extreme element is then placed on the
   scale FACETS' way: the measure at which its expected score equals its observed score moved
   0.3 score points inward (``extreme_adjustment``), the other elements held at their estimates,
   using its observations that involve no other extreme element (all of them if there are none).
   With a penalty nothing is set aside: the ridge keeps every estimate finite.
2. *Newton's method* on the joint likelihood (convex), from a PROX start (each element's
   marginal logit, widened for the spread of the other facets, then moved along the null
   directions onto the anchors), with a backtracking line search whose full step also gives the
   next iteration's Hessian: one pass over the data per iteration, plus one at the end. The
   Hessian's facet blocks are diagonal, so each Newton system is solved by nested Schur
   complements (:mod:`irtpeer.estimators._blocksolve`), exactly, in a few passes over the data.
   When forming the remainder after eliminating the largest facet would be costly (two large
   facets crossed: a leaderboard of models x items), each system is solved instead by
   preconditioned conjugate gradients on the Schur complement (:mod:`irtpeer.estimators._cg`),
   to a tolerance that follows the gradient; the fit stops on the same criterion at the same
   optimum. ``solver`` forces either path. Binary data of a densely crossed design are passed
   over as a grid of cells (:class:`~irtpeer.estimators._likelihood.GridLikelihoodEngine`).
   Without a penalty, one element of each non-person facet (and one threshold) is held at 0
   while fitting; with a penalty ``lambda/2 * sum(params^2)`` every parameter is free (the
   ridge-penalised, over-parametrised model, which is what scikit-learn fits on a one-hot
   design). Either way the result is then expressed in the reported identification by moving
   along the likelihood's null directions, which leaves every fitted probability unchanged:
   the person facet floats, every other facet sums to zero, thresholds sum to zero.
3. *Standard errors*: ``se`` from the inverse information under those constraints,
   ``P G P^T`` with ``G`` the inverse of the (penalised) information in the fitting
   coordinates and ``P`` the projection onto the constraints along the null directions; its
   diagonal and the covariance of model-level scores are computed from solves with the
   factorised Hessian, never by inverting a dense matrix of the largest facet's size. On the
   iterative path ``se`` of every element is given when that is cheap
   (:data:`~irtpeer.estimators._cg.FORM_S_FLOPS`), else for the facets in ``se_facets`` (by
   default the persons) and NaN for the others; each exactly, by the cheaper of forming the
   Schur complement once (in place, by BLAS, when it fits) and batched CG solves
   (:func:`~irtpeer.estimators._cg.se_route`). ``convergence`` records ``se_method``.
   ``se_model`` is FACETS' 1/sqrt(information) of the element alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .._design import DimensionDesign, FacetData, build_designs
from .._errors import ConvergenceError, DesignError, IrtpeerError
from .._fitrecord import DimensionFit
from ..ratings import Ratings
from ..spec import ModelSpec
from ._blocksolve import BlockSchurSolver, NotPositiveDefinite, SchurPlan
from ._cg import IterativeSchurSolver
from ._likelihood import GridLikelihoodEngine, _as_index, _read_only, make_engine
from ._threads import choose_threads, torch_threads

__all__ = ["DEFAULT_RESPONSE_PENALTY", "TorchMFRM"]

#: Ridge penalty used in response mode when none is given (a standard-normal prior on logits).
DEFAULT_RESPONSE_PENALTY = 1.0
#: Multiply-adds of the first Schur elimination above which ``solver="auto"`` iterates (CG)
#: instead of forming the remainder densely each Newton iteration.
DIRECT_MAX_FLOPS = 3e8
SOLVERS = ("auto", "direct", "iterative")
#: The last Newton step (logits) below which the Hessian before it serves for the standard errors.
FINAL_HESSIAN_STEP = 1e-10


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise IrtpeerError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise IrtpeerError(f"device {device!r} is not one of auto, cpu, cuda")
    return torch.device(device)


class TorchMFRM:
    """Exact maximum-likelihood calibration of a many-facet Rasch model with torch.

    Parameters
    ----------
    spec
        The :class:`~irtpeer.ModelSpec` (scale, person mode, partial-credit facet).
    penalty
        L2 penalty ``lambda`` on all parameters (``lambda/2 * sum(params^2)``). ``None`` means 0
        in model mode (the exact MLE) and :data:`DEFAULT_RESPONSE_PENALTY` in response mode,
        where the penalty is what separates a response from its question.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    tol
        Convergence: the fit stops when the Newton step (the distance to the optimum, in logits)
        is below ``tol`` for every parameter; that last step is taken, and since Newton converges
        quadratically the estimates are then exact to about ``tol**2``.
    max_iter
        Newton iterations allowed per dimension before :class:`ConvergenceError`.
    extreme_adjustment
        Score points by which an extreme element's score is moved inward (FACETS: 0.3).
    threads
        CPU threads for torch; ``None`` chooses by the size of the work (one thread for small
        designs, see :mod:`irtpeer.estimators._threads`).
    se_facets
        Facets (names as in the measures table, a list or a comma-separated string) whose ``se``
        must be computed exactly even when the design is too large for exact ``se`` of every
        element. ``None``: every element where it is affordable. Elements left out get ``se``
        NaN (``se_model`` is always given); ``convergence`` records ``se_method``.
    solver
        ``"auto"`` (nested Schur complements, factorised densely, when cheap; otherwise
        preconditioned conjugate gradients on the Schur complement, see
        :mod:`irtpeer.estimators._cg`), ``"direct"`` or ``"iterative"``.
    progress
        Print one line per dimension and Newton iteration to stderr.

    After :meth:`fit`, ``calibration_`` holds the :class:`~irtpeer.Calibration`.
    """

    name = "torch"
    #: keyword options a user may set from the command line (``irtpeer score --penalty ...``)
    OPTIONS = ("penalty", "device", "threads", "se_facets")

    def __init__(
        self,
        spec: ModelSpec | None = None,
        *,
        penalty: float | None = None,
        device: str = "auto",
        tol: float = 1e-6,
        max_iter: int = 100,
        extreme_adjustment: float = 0.3,
        chunk_size: int = 2_000_000,
        threads: int | None = None,
        se_facets: list[str] | str | None = None,
        solver: str = "auto",
        progress: bool = False,
    ):
        self.spec = spec if spec is not None else ModelSpec()
        self.penalty = penalty
        self.device = device
        self.tol = tol
        self.max_iter = max_iter
        self.extreme_adjustment = extreme_adjustment
        self.chunk_size = chunk_size
        self.threads = threads
        self.se_facets = se_facets
        self.solver = solver
        self.progress = progress

    # ------------------------------------------------------------------ public
    def fit(self, ratings: Ratings) -> TorchMFRM:
        from .._calibration import Calibration

        if not isinstance(ratings, Ratings):
            raise IrtpeerError("fit() takes the Ratings returned by irtpeer.load_ratings()")
        lam = self.penalty
        if lam is None:
            lam = DEFAULT_RESPONSE_PENALTY if self.spec.person_mode == "response" else 0.0
        lam = float(lam)
        if not (lam >= 0 and math.isfinite(lam)):
            raise IrtpeerError(f"penalty must be a finite number >= 0, got {self.penalty!r}")
        if self.spec.person_mode == "hierarchical":
            raise DesignError(
                "person mode 'hierarchical' (random response effects) needs the Bayesian "
                "estimator: use --estimator bayes, or person mode 'model' / 'response' here"
            )
        if self.spec.person_mode == "response" and lam == 0:
            raise DesignError(
                "person mode 'response' with penalty 0 is not identified: a response's measure "
                "and its question's difficulty can trade off freely. Give a penalty > 0 "
                f"(default {DEFAULT_RESPONSE_PENALTY}) or use person mode 'model'"
            )
        self.penalty_ = lam
        if self.solver not in SOLVERS:
            raise IrtpeerError(f"solver {self.solver!r} is not one of {', '.join(SOLVERS)}")
        self._se_facets = _parse_se_facets(self.se_facets)
        self.device_ = _resolve_device(self.device)
        self.options_ = {"penalty": lam, "device": str(self.device_), "tol": self.tol,
                         "max_iter": self.max_iter, "extreme_adjustment": self.extreme_adjustment,
                         "se_facets": None if self._se_facets is None else ",".join(self._se_facets),
                         "solver": self.solver}
        t0 = time.perf_counter()
        designs = build_designs(ratings, self.spec)
        largest = max(len(d.data.x) for d in designs)
        n_threads = choose_threads(self.threads, largest if self.device_.type == "cpu" else 0)
        self.options_["threads"] = n_threads
        with torch_threads(n_threads):
            fits = [self._fit_dimension(d, lam) for d in designs]
        notes = []
        if self.spec.person_mode == "response":
            notes.append(
                "person mode 'response': each model x question response has its own measure, "
                "separated from the question's difficulty only by the ridge penalty "
                f"({lam:g}); a model's score is the mean of its responses"
            )
        self.calibration_ = Calibration._from_fits(
            ratings=ratings,
            spec=self.spec,
            fits=fits,
            estimator=self.name,
            options=self.options_,
            notes=notes,
            seconds=time.perf_counter() - t0,
        )
        return self

    # ---------------------------------------------------------------- internals
    def _log(self, msg: str):
        if self.progress:
            import sys

            print(f"[irtpeer] {msg}", file=sys.stderr, flush=True)

    def _fit_dimension(self, design: DimensionDesign, lam: float) -> DimensionFit:
        t0 = time.perf_counter()
        data = design.data
        notes = list(design.notes)
        engine, sums = _engine_and_sums(data, self.device_, self.chunk_size)
        lay = _Layout.build(design, lam, sums)
        if lay.n_extreme:
            notes.append(_extreme_note(design, lay.extreme, self.extreme_adjustment))
        if engine is None or lay.core is not data:  # elements set aside: an engine of the rest
            engine = None  # (the grid of all the data freed first)
            engine = make_engine(lay.core, device=self.device_, chunk=self.chunk_size,
                                 totals=lay.core_sums.tot)
        x, ev, solver, conv = self._newton(design, engine, lay, lam)
        V, Cm = _null_space(data, lay.active, data.offsets, data.K)
        want = self._se_wanted(design, lay, solver)
        t_se = time.perf_counter()
        self._log(f"{design.dimension}: standard errors")
        params, se, se_model, status, placed, Y = self._constrained_estimates(
            lay, x, ev, solver, V, Cm, lam, want
        )
        conv["se_method"] = getattr(solver, "se_method", "exact")
        self._log(f"{design.dimension}: standard errors {conv['se_method']} in "
                  f"{time.perf_counter() - t_se:.1f} s")
        missing_se = _facets_without_se(design, lay, se)
        if missing_se:
            notes.append(
                f"dimension {design.dimension!r}: the design is too large for exact se of every "
                f"element; se of {', '.join(missing_se)} was not computed (NaN; se_model is "
                f"given). Ask for it with --se-facets"
            )
        measures = _measures_table(design, params, se, se_model, status, sums)
        model_measure, model_cov = _model_scores(design, lay, params, se, placed, solver, V, Cm, Y)
        self._log(f"{design.dimension}: model covariance in {time.perf_counter() - t_se:.1f} s "
                  f"after the fit")
        conv["seconds"] = time.perf_counter() - t0
        return DimensionFit(
            design=design,
            measures=measures,
            model_measure=model_measure,
            model_cov=model_cov,
            diagnostics=conv,
            identification=_identification(design, lam, lay.n_extreme),
            notes=notes,
        )

    def _newton(self, design: DimensionDesign, engine, lay: _Layout, lam: float):
        """Damped Newton on the (penalised) negative log-likelihood in the free coordinates."""
        F = lay.F
        names = [design.person_facet, *design.facet_names]
        x = _anchored_start(lay, _start_values(lay.core, lay.active, lay.core_sums, expand=lam == 0))

        def objective(ev, xv):
            return ev.f + 0.5 * lam * float(np.dot(xv[F], xv[F])) if lam else ev.f

        ev = engine.evaluate(x)
        fval = objective(ev, x)
        converged, it, last_step, proposed = False, 0, float("inf"), float("inf")
        stale = True  # ev (the Hessian) is not at the final x
        matvecs = 0
        while True:
            g = ev.g[F] + lam * x[F]
            gmax = float(np.max(np.abs(g))) if len(g) else 0.0
            solver = self._make_solver(ev, lay, lam, design, names)
            if isinstance(solver, IterativeSchurSolver):
                # inexact Newton: the CG accuracy follows the gradient (quadratic convergence)
                step = -solver.solve(g, rtol=min(1e-3, max(1e-12, 1e-4 * gmax)))
                matvecs += solver.matvecs
            else:
                step = -solver.solve(g)
            proposed = float(np.max(np.abs(step))) if len(step) else 0.0
            self._log(
                f"{design.dimension}: iteration {it} objective {fval:.6f} max|gradient| {gmax:.3e} "
                f"Newton step {proposed:.3e}"
            )
            if proposed < self.tol:
                # Newton converges quadratically: after this last step the estimates are exact to
                # about tol**2; the Hessian here serves for the standard errors.
                x[F] += step
                last_step, converged = proposed, True
                break
            if it >= self.max_iter:
                break
            # this Hessian is done with: free it (a leaderboard's is GBs) before the next is built
            solver = None
            ev.H = ev.dense = None
            accepted, xt, ev_t, ft, t = _line_search(
                engine, objective, x, F, step, fval, float(np.dot(g, step))
            )
            if not accepted:
                # no decrease is possible: at the optimum to machine precision if the step is
                # tiny, otherwise the fit has failed
                converged = proposed < 1e-4
                if converged:  # the standard errors need the Hessian at x again
                    ev = engine.evaluate(x)
                    solver = self._make_solver(ev, lay, lam, design, names)
                    stale = False
                break
            if ev_t.H is None:
                ev_t = engine.evaluate(xt)
            x, ev, fval = xt, ev_t, ft
            last_step = float(np.max(np.abs(t * step)))
            it += 1
        if not converged:
            raise ConvergenceError(
                f"dimension {design.dimension!r} did not converge in {it} Newton iterations "
                f"(max |gradient| {gmax:.3g} score points, Newton step {proposed:.3g} logits). "
                f"This usually means some estimate runs off to infinity (a quasi-separated "
                f"design, e.g. an element scored at the maximum on all but confounded "
                f"observations). Try --penalty 0.01, or raise max_iter."
            )
        fresh = stale and last_step > FINAL_HESSIAN_STEP
        if fresh:  # the old Hessian (GBs on a leaderboard) is not needed: free it here, where
            solver = None  # the last references are, before the final one is built
            ev.H = ev.dense = None
        ev, solver, fval, gmax = self._final_evaluation(
            engine, objective, ev, x, solver, fresh, (lay, lam, design, names))
        conv = _convergence_row(design, lay, engine, ev, fval, gmax, it, last_step, matvecs)
        return x, ev, solver, conv

    def _final_evaluation(self, engine, objective, ev, x, solver, fresh: bool, solver_args):
        """The gradient at the final estimates, for the report. The Hessian of the previous
        point serves for the standard errors when that point is within FINAL_HESSIAN_STEP (a
        gradient-only pass); otherwise (``fresh``) the Hessian is evaluated here too, so that
        the standard errors belong to the reported estimates (to ~1e-10 relative); the caller
        has freed the old Hessian then (it holds the last references to it)."""
        lay, lam = solver_args[0], solver_args[1]
        ev_final = engine.evaluate(x, need_hessian=fresh)
        if fresh:
            ev = ev_final
            solver = self._make_solver(ev, *solver_args)
        ev.g, ev.f = ev_final.g, ev_final.f
        F = lay.F
        gmax = float(np.max(np.abs(ev.g[F] + lam * x[F]))) if len(F) else 0.0
        return ev, solver, objective(ev_final, x), gmax

    def _make_solver(self, ev, lay: _Layout, lam: float, design, names):
        """Factorise the Newton system: nested Schur complements (direct) or CG (iterative)."""
        F, n, off = lay.F, lay.n, design.data.offsets
        Hs = _restrict(ev.H, F, lay)
        if lam:
            Hs = Hs + lam * _speye(len(F))
        pos = -np.ones(n, dtype=np.int64)
        pos[F] = np.arange(len(F))
        dense = [(pos[off[a] : off[a + 1]], pos[off[b] : off[b + 1]], B) for a, b, B in ev.dense or []]
        kind = lay.solver_kind or (
            self.solver if self.solver != "auto" else _choose_solver(Hs, dense, lay.blocks)
        )
        try:
            if kind == "direct":
                H = Hs
                if dense:
                    H = ev.full_hessian(off)[F][:, F] + (lam * _speye(len(F)) if lam else 0)
                try:
                    solver = BlockSchurSolver(H, lay.blocks, plan=lay.schur_plan)
                except MemoryError:
                    if self.solver == "direct":
                        raise
                    kind = "iterative"
            if kind == "iterative":
                solver = IterativeSchurSolver(
                    Hs, dense, lay.blocks,
                    device=None if self.device_.type == "cpu" else self.device_)
        except NotPositiveDefinite as exc:
            raise _not_identified(exc, F, n, design, names, off) from None
        except MemoryError as exc:
            raise DesignError(
                f"dimension {design.dimension!r} is too large for the direct solver: {exc}. "
                f"Use solver='iterative' (or 'auto')."
            ) from None
        lay.solver_kind = kind
        return solver

    def _se_wanted(self, design: DimensionDesign, lay: _Layout, solver) -> np.ndarray | None:
        """Parameters (free coordinates) whose ``se`` must be exact; None: all."""
        names = [design.person_facet, *design.facet_names]
        off = design.data.offsets
        if self._se_facets is not None:
            unknown = [f for f in self._se_facets if f not in names + ["threshold"]]
            if unknown:
                raise IrtpeerError(
                    f"se_facets names {', '.join(map(repr, unknown))}, not a facet of dimension "
                    f"{design.dimension!r}; facets are {', '.join(names)} (and threshold)"
                )
            asked = self._se_facets
        elif not isinstance(solver, IterativeSchurSolver) or solver.dense_affordable():
            return None
        else:
            asked = [design.person_facet]  # model standard errors stay exact
        want = np.zeros(lay.n, dtype=bool)
        for a, name in enumerate(names):
            if name in asked:
                want[off[a] : off[a + 1]] = True
        if "threshold" in asked:
            want[off[len(names)] :] = True
        return want[lay.F]

    def _constrained_estimates(self, lay: _Layout, x, ev, solver, V, Cm, lam, want=None):
        """Estimates moved onto the reported constraints, ``se`` = sqrt(diag(P G P^T)),
        ``se_model``, and the placed extreme elements."""
        data = lay.design.data
        n, F, active = lay.n, lay.F, lay.active
        xc = x - V @ (Cm @ x)
        Y = np.zeros((n, Cm.shape[0]))
        if Cm.shape[0]:
            Y[F] = solver.solve(Cm.T[F])
        Gdiag = np.zeros(n)
        Gdiag[F] = solver.diag_inv(want)
        off_all = [*data.offsets, n]
        free_mask = np.zeros(n, dtype=bool)
        free_mask[F] = True
        var = Gdiag - 2.0 * np.einsum("ij,ij->i", V, Y) + np.einsum("ij,ij->i", V @ (Cm @ Y), V)
        var[~active] = np.nan
        for a in range(len(data.sizes) + 1):  # a facet's se is given for all or none
            sl = slice(off_all[a], off_all[a + 1])
            if np.isnan(Gdiag[sl][free_mask[sl]]).any():
                var[sl] = np.nan
        se = np.sqrt(np.maximum(var, 0.0))
        info_diag = np.asarray(ev.H.diagonal()).ravel()  # unpenalised information
        with np.errstate(divide="ignore"):
            se_model = 1.0 / np.sqrt(info_diag)
        se_model[~active] = np.nan
        params = xc.copy()
        status = np.array([""] * n, dtype=object)
        off, A = data.offsets, len(data.sizes)
        placed = ~active.copy()
        placed[off[A] :] = False
        if placed.any():
            params, se_p = _place_extremes(
                data, lay.extreme, lay.orphan, params, off, self.extreme_adjustment, self.device_
            )
            se[placed] = se_p[placed]
            se_model[placed] = se_p[placed]
            _flag_extremes(status, lay.extreme, off, lay.orphan)
        elif lam > 0:
            ext2, _ = _find_extremes(data, iterate=False, sums=lay.sums)
            _flag_extremes(status, ext2, off)
        return params, se, se_model, status, placed, Y


# ---------------------------------------------------------------------- layout
@dataclass
class _Layout:
    """Which parameters are fitted: extremes set aside, orphans, anchors, Schur blocks."""

    design: DimensionDesign
    core: FacetData  # the observations that are fitted (extreme elements' set aside)
    extreme: list[np.ndarray]  # per facet: +1 all-maximum, -1 all-minimum, 0 otherwise
    active: np.ndarray  # parameters estimated by Newton (not extreme, with data left)
    orphan: np.ndarray  # elements whose every observation involves an extreme element
    free: np.ndarray  # active and not anchored at 0 while fitting
    F: np.ndarray  # indices of the free parameters
    blocks: list[np.ndarray]  # per facet (and thresholds): positions in F, for the Schur solver
    n_extreme: int
    sums: _ElementSums  # per-element counts and totals of all the observations
    core_sums: _ElementSums  # the same for the fitted ones
    solver_kind: str | None = None  # "direct" or "iterative", chosen at the first Newton step
    restrict: tuple | None = None  # the Hessian's pattern restricted to F (see _restrict)
    schur_plan: SchurPlan = field(default_factory=lambda: SchurPlan())  # the direct solver's

    @property
    def n(self) -> int:
        return self.design.data.n_params

    @classmethod
    def build(cls, design: DimensionDesign, lam: float, sums: _ElementSums) -> _Layout:
        data = design.data
        A, K, off, n = len(data.sizes), data.K, data.offsets, data.n_params
        extreme = [np.zeros(s, dtype=np.int8) for s in data.sizes]
        keep = np.ones(len(data.x), dtype=bool)
        if lam == 0:  # with a penalty the ridge keeps every estimate finite
            extreme, keep = _find_extremes(data, sums=sums)
        if keep.sum() == 0:
            raise DesignError(
                f"dimension {design.dimension!r}: every element is extreme (all scores at one "
                f"end of the scale); nothing can be estimated"
            )
        core = data if keep.all() else FacetData(
            idx=[ix[keep] for ix in data.idx], sizes=data.sizes, x=data.x[keep], K=K,
            w=None if data.w is None else data.w[keep], pcm=data.pcm,
        )
        core_sums = sums if core is data else _element_sums(core)
        active = np.ones(n, dtype=bool)
        has_data = np.ones(n, dtype=bool)
        for a in range(A):
            active[off[a] : off[a + 1]] = extreme[a] == 0
            has_data[off[a] : off[a + 1]] = core_sums.cnt[a] > 0
        orphan = active & ~has_data
        active &= has_data
        free = active.copy()
        if lam == 0:
            for a in range(1, A):  # anchor one element of each centred facet while fitting
                free[off[a] + np.flatnonzero(active[off[a] : off[a + 1]])[-1]] = False
            if K > 1:
                n_sets = 1 if data.pcm is None else data.sizes[data.pcm]
                free[off[A] + np.arange(n_sets) * K + K - 1] = False
        F = np.flatnonzero(free)
        pos = -np.ones(n, dtype=np.int64)
        pos[F] = np.arange(len(F))
        blocks = [pos[off[a] : off[a + 1]] for a in range(A)]
        if K > 1:
            blocks.append(pos[off[A] :])
        blocks = [b[b >= 0] for b in blocks]
        n_ext = sum(int((e != 0).sum()) for e in extreme)
        return cls(design, core, extreme, active, orphan, free, F, blocks, n_ext, sums, core_sums)


def _extreme_note(design: DimensionDesign, extreme, adjustment: float) -> str:
    names = [design.person_facet, *design.facet_names]
    desc = ", ".join(
        f"{int((e != 0).sum())} {names[a]}" for a, e in enumerate(extreme) if (e != 0).any()
    )
    return (
        f"dimension {design.dimension!r}: extreme elements ({desc}) have all-minimum or "
        f"all-maximum scores; they were set aside while fitting and placed afterwards "
        f"with the {adjustment} score-point adjustment (status column)"
    )


def _line_search(engine, objective, x, F, step, fval, slope):
    """Backtracking (Armijo) along the Newton step; the full step also evaluates the Hessian."""
    t = 1.0
    for _ in range(40):
        xt = x.copy()
        xt[F] += t * step
        ev_t = engine.evaluate(xt, need_hessian=(t == 1.0))
        ft = objective(ev_t, xt)
        if ft <= fval + 1e-4 * t * slope + 1e-12 * abs(fval):
            return True, xt, ev_t, ft, t
        t *= 0.5
    return False, x, None, fval, 0.0


def _flag_extremes(status, extreme, off, orphan=None):
    for a, e in enumerate(extreme):
        st = status[off[a] : off[a + 1]]
        st[e > 0] = "extreme_max"
        st[e < 0] = "extreme_min"
        if orphan is not None:
            st[orphan[off[a] : off[a + 1]]] = "only_extreme_data"


def _model_scores(design, lay: _Layout, params, se, placed, solver, V, Cm, Y):
    """Per-model measure (response mode: mean of its responses) and the covariance of those.

    ``cov = L^T P G P^T L`` with ``L`` the persons -> models averaging, ``G`` the inverse
    information and ``P = I - V C`` the projection onto the constraints. With ``Y = G C^T``
    (already solved for the standard errors) and the symmetry of ``G`` only the persons' block
    ``G_pp L_p`` needs new solves (none at all when the solver holds it densely). Memory: the
    (M, M) result and blocks; no (n, M) or further (M, M) temporaries.
    """
    import scipy.sparse as sp

    data = design.data
    n, F = lay.n, lay.F
    M = len(design.model_labels)
    P = data.sizes[0]
    counts = np.bincount(design.person_model, minlength=M).astype(float)
    weight = 1.0 / counts[design.person_model]  # person p -> model person_model[p]
    ext_p = placed[:P]
    fit_p = np.flatnonzero(~ext_p)  # extreme persons are placed after the fit: independent
    pos = -np.ones(n, dtype=np.int64)
    pos[F] = np.arange(len(F))
    # L as a sparse (n x M) matrix: dense it is n x M float64 (4.5 GB at 11,785 models)
    L_fit = sp.csr_matrix((weight[fit_p], (fit_p, design.person_model[fit_p])), shape=(n, M))
    model_mode = np.array_equal(design.person_model, np.arange(P))
    if model_mode:
        # the solver's last use: its dense S^-1, when that is the block, becomes the result
        block = solver.inverse_block(pos[fit_p], None, consume=True)
        if len(fit_p) == M:
            LGL = block if block.flags.writeable else np.array(block)
        else:
            LGL = np.zeros((M, M))
            LGL[np.ix_(fit_p, fit_p)] = block
        del block
    else:
        Lp = L_fit[fit_p].toarray()
        LGL = Lp.T @ solver.inverse_block(pos[fit_p], Lp)
    T = np.asarray((L_fit.T @ V).T)  # (constraints, M) = V^T L
    YL = np.asarray((L_fit.T @ Y).T)  # = C G L
    CGC = Cm @ Y  # = C G C^T
    CZ = YL - CGC @ T  # C G P^T L
    LV = np.asarray(L_fit.T @ V)
    # model_cov = L^T G L - (YL^T T) - (L^T V) CZ, in place, a block of rows at a time
    step = max(1, (1 << 22) // max(M, 1))
    for s in range(0, M, step):
        LGL[s : s + step] -= YL[:, s : s + step].T @ T + LV[s : s + step] @ CZ
    model_cov = LGL
    if ext_p.any():
        ext = np.flatnonzero(ext_p)
        np.add.at(model_cov, (design.person_model[ext], design.person_model[ext]),
                  weight[ext] ** 2 * se[ext] ** 2)
    model_measure = np.bincount(design.person_model, weights=weight * params[:P], minlength=M)
    return model_measure, _symmetrize(model_cov)


def _symmetrize(A: np.ndarray, cells: int = 1 << 16) -> np.ndarray:
    """``(A + A^T) / 2`` in place, a tile at a time (no temporary of A's size; tiles of 256 x 256
    keep the transposed reads in cache: 309 -> 99 ms at 6,000 models)."""
    m = A.shape[0]
    bs = max(1, int(math.sqrt(cells)))
    for i in range(0, m, bs):
        for j in range(i, m, bs):
            avg = 0.5 * (A[i : i + bs, j : j + bs] + A[j : j + bs, i : i + bs].T)
            A[i : i + bs, j : j + bs] = avg
            A[j : j + bs, i : i + bs] = avg.T
    return A


def _identification(design: DimensionDesign, lam: float, n_ext: int) -> str:
    K, pcm = design.data.K, design.data.pcm
    parts = [
        f"{design.person_facet} floats; "
        + ", ".join(design.facet_names)
        + (" each" if len(design.facet_names) > 1 else "")
        + " centred (sum of measures = 0"
        + (" over non-extreme elements" if n_ext else "")
        + ")"
    ]
    if K > 1 and pcm is None:
        parts.append("thresholds sum to 0")
    if pcm is not None:
        parts.append("thresholds of each element of the partial-credit facet sum to 0")
    if lam:
        parts.append(f"ridge penalty {lam:g} on all parameters of the over-parametrised model")
    else:
        parts.append("exact MLE (no penalty)")
    return "; ".join(parts)


# ---------------------------------------------------------------------- helpers
def _speye(n):
    import scipy.sparse as sp

    return sp.identity(n, format="csr")


def _parse_se_facets(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise IrtpeerError(
            f"se_facets must be facet names (e.g. 'model' or 'model,judge'), got {value!r}"
        )
    return list(value)


def _facets_without_se(design: DimensionDesign, lay: _Layout, se) -> list[str]:
    off = design.data.offsets
    names = [design.person_facet, *design.facet_names]
    out = []
    for a, name in enumerate(names):
        sl = slice(off[a], off[a + 1])
        if np.any(lay.active[sl] & np.isnan(se[sl])):
            out.append(name)
    return out


def _choose_solver(Hs, dense, blocks) -> str:
    """Direct when the first elimination is cheap (sum over the eliminated elements of their
    neighbours squared), iterative when it is not or when facets are crossed densely."""
    k = int(np.argmax([len(b) for b in blocks]))
    be = np.asarray(blocks[k], dtype=np.int64)
    row_nnz = np.diff(Hs[be].indptr).astype(float) - 1.0
    inside = np.zeros(Hs.shape[0], dtype=bool)
    inside[be] = True
    for rows, cols, _B in dense:  # a dense pair adds its other side to each eliminated row
        for mine, other in ((rows, cols), (cols, rows)):
            sel = mine[mine >= 0]
            if len(sel) and inside[sel].all():
                row_nnz += float((other >= 0).sum())
    return "direct" if float(np.sum(row_nnz**2)) <= DIRECT_MAX_FLOPS else "iterative"


def _restrict(H, F: np.ndarray, lay: _Layout):
    """``H[F][:, F]``. The engines give every Hessian the same pattern arrays, so where the
    full matrix's data sits in the restricted one is found once (by restricting a matrix whose
    data are positions) and each Newton iteration only gathers."""
    import scipy.sparse as sp

    c = lay.restrict
    if (c is None or c[0] is not H.indptr or len(c[1]) != len(H.indices)
            or not np.may_share_memory(c[1], H.indices)):
        probe = sp.csr_matrix((np.arange(1, H.nnz + 1, dtype=np.float64), H.indices, H.indptr),
                              shape=H.shape)
        sub = probe[F][:, F]
        c = lay.restrict = (H.indptr, H.indices, sub.indices, sub.indptr,
                            sub.data.astype(np.int64) - 1, sub.shape)
    return sp.csr_matrix((H.data[c[4]], c[2], c[3]), shape=c[5])


def _not_identified(exc, F, n, design, names, off):
    vec = np.zeros(n)
    if exc.null_vector is not None:
        vec[F] = exc.null_vector
    top = np.argsort(-np.abs(vec))[:6]
    involved = []
    for t in top:
        if abs(vec[t]) < 1e-8:
            continue
        a = int(np.searchsorted(off, t, side="right") - 1)
        if a < len(names):
            lab = design.person_labels if a == 0 else design.facet_labels[a - 1]
            involved.append(f"{names[a]}={lab[t - off[a]]}")
        else:
            involved.append("thresholds")
    return DesignError(
        f"the design of dimension {design.dimension!r} does not identify every measure: "
        f"some facets are confounded (e.g. each judge rates a single item, or a facet is "
        f"nested in another). Elements involved: {', '.join(involved) or 'unknown'}. Drop or "
        f"merge one of the confounded facets, or add a small --penalty."
    )


@dataclass
class _ElementSums:
    """Per facet: observation count and total score of every element, unweighted (``cnt``,
    ``tot``) and weighted (``wcnt``, ``wtot``; the same arrays when there are no weights)."""

    cnt: list[np.ndarray]
    tot: list[np.ndarray]
    wcnt: list[np.ndarray]
    wtot: list[np.ndarray]


def _engine_and_sums(data: FacetData, device, chunk: int):
    """The grid engine of all the observations and the element sums counted on its grid, where
    the design suits it (15 M ratings: 0.25 -> 0.03 s); otherwise no engine yet and the sums
    from the codes."""
    if GridLikelihoodEngine.suitable(data):
        try:
            engine = GridLikelihoodEngine(data, device=device, chunk=chunk)
        except ValueError:  # a cell observed more than once
            engine = None
        if engine is not None:
            cnt, tot = engine.element_sums()
            return engine, _ElementSums(cnt, tot, cnt, tot)
    return None, _element_sums(data)


def _element_sums(data: FacetData, scores: np.ndarray | None = None,
                  step: int = 1 << 22) -> _ElementSums:
    """Counts and totals of every facet's elements in one chunked pass (``index_add_`` on the
    codes as they are: no int64 or float64 copy of a whole column; the facets side by side in
    threads when torch may use several)."""
    from concurrent.futures import ThreadPoolExecutor

    scores = data.x if scores is None else scores
    A, w = len(data.sizes), data.w
    acc = [torch.zeros(4 if w is not None else 2, s, dtype=torch.float64) for s in data.sizes]

    def add(a, s, src):
        ix = _as_index(_read_only(np.ascontiguousarray(data.idx[a][s : s + step]), None, "cpu"))
        for j, v in enumerate(src):  # one 1-D index_add_ per sum: 8x faster than 2-D rows
            acc[a][j].index_add_(0, ix, v)

    with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), A))) as pool:
        for s in range(0, len(scores), step):
            # views of read-only columns (pandas copy-on-write): only read, so no copy
            x = _read_only(scores[s : s + step], torch.float64, "cpu")
            src = [torch.ones_like(x), x]
            if w is not None:
                wc = _read_only(w[s : s + step], torch.float64, "cpu")
                src += [wc, wc * x]
            list(pool.map(lambda a, s=s, src=src: add(a, s, src), range(A)))
    out = [a.numpy() for a in acc]
    cnt, tot = [o[0] for o in out], [o[1] for o in out]
    if w is None:
        return _ElementSums(cnt, tot, cnt, tot)
    return _ElementSums(cnt, tot, [o[2] for o in out], [o[3] for o in out])


def _find_extremes(data: FacetData, iterate: bool = True, sums: _ElementSums | None = None):
    """Iteratively flag elements whose remaining scores are all minimum (-1) or all maximum (+1)
    (``sums``: the element counts and totals of all of ``data``, when already known)."""
    A = len(data.sizes)
    keep = np.ones(len(data.x), dtype=bool)
    extreme = [np.zeros(s, dtype=np.int8) for s in data.sizes]
    K = data.K
    while True:
        new = False
        every = bool(keep.all())  # no copies of the observations while nothing is set aside
        xs = data.x if every else data.x[keep]
        if not every or sums is None:
            sub = data if every else FacetData([ix[keep] for ix in data.idx], data.sizes, xs, K)
            sums = _element_sums(sub)
        for a in range(A):
            cnt, tot = sums.cnt[a], sums.tot[a]  # 0 <= x <= K
            is_max = (cnt > 0) & (tot == K * cnt) & (extreme[a] == 0)
            is_min = (cnt > 0) & (tot == 0) & (extreme[a] == 0)
            if is_max.any() or is_min.any():
                extreme[a][is_max] = 1
                extreme[a][is_min] = -1
                new = True
        if not new:
            break
        drop = np.zeros(len(data.x), dtype=bool)
        for a in range(A):
            drop |= extreme[a][data.idx[a]] != 0
        keep = ~drop
        if not iterate or not keep.any():
            break
    return extreme, keep


def _start_values(data: FacetData, active: np.ndarray, sums: _ElementSums,
                  expand: bool = True) -> np.ndarray:
    """PROX start: logits of each element's mean score, expanded for the spread of the other
    facets (:func:`_prox_expand`; not with a penalty, whose optimum is shrunk towards 0: in
    response mode, 12 judgments per response, expanding took 7 Newton iterations instead of 5);
    thresholds from category counts."""
    A = len(data.sizes)
    K = max(data.K, 1)
    off = data.offsets
    x = np.zeros(data.n_params)
    w = data.w
    for a in range(A):
        cnt, tot = sums.wcnt[a], sums.wtot[a]
        with np.errstate(invalid="ignore", divide="ignore"):
            pbar = np.clip((tot + 0.5) / (cnt * K + 1.0), 0.02, 0.98)
        lg = np.log(pbar / (1 - pbar))
        lg = np.where(cnt > 0, lg, 0.0)
        if a == 0:
            x[off[0] : off[1]] = lg
        else:
            act = active[off[a] : off[a + 1]] & (cnt > 0)
            val = -(lg - (lg[act].mean() if act.any() else 0.0))
            x[off[a] : off[a + 1]] = np.where(act, val, 0.0)
    if expand:
        _prox_expand(x, off, [sums.wcnt[a] * active[off[a] : off[a + 1]] for a in range(A)])
    if data.K > 1:
        nk = np.bincount(data.x, weights=w, minlength=data.K + 1) + 0.5
        tau = np.log(nk[:-1] / nk[1:])
        tau -= tau.mean()
        if data.pcm is None:
            x[off[A] :] = tau
        else:
            x[off[A] :] = np.tile(tau, data.sizes[data.pcm])
    return x


def _prox_expand(x: np.ndarray, off, weights, sweeps: int = 3, cap: float = 2.0) -> None:
    """Widen each facet's logits in place by PROX's expansion factor
    ``sqrt(1 + (sum of the other facets' variances) / 2.89)``: an element's mean score is
    averaged over the other facets' spread, which pulls its logit towards 0 (Linacre's PROX;
    the variances are themselves expanded, a few sweeps). Measured at 15 M binary ratings: the
    first Newton step 0.78 -> 0.25 logits, one Newton iteration fewer."""
    A = len(weights)
    var0 = np.zeros(A)
    for a, wt in enumerate(weights):
        v = x[off[a] : off[a + 1]]
        if wt.sum() > 0:
            m = np.average(v, weights=wt)
            var0[a] = np.average((v - m) ** 2, weights=wt)
    var = var0.copy()
    for _ in range(sweeps):
        X = np.minimum(np.sqrt(1.0 + (var.sum() - var) / 2.89), cap)
        var = X**2 * var0
    X = np.minimum(np.sqrt(1.0 + (var.sum() - var) / 2.89), cap)
    for a in range(A):
        x[off[a] : off[a + 1]] *= X[a]


def _anchored_start(lay: _Layout, x: np.ndarray) -> np.ndarray:
    """Start values moved along the likelihood's null directions until every anchored
    parameter (held at 0 while fitting without a penalty) is 0. Zeroing them instead would
    shift each centred facet by its anchored element's start value and leave the persons to make
    up the sum: measured at 15 M ratings, a first Newton step of 1.9 logits instead of 0.4, and one
    Newton iteration (two passes over the data) more."""
    data = lay.design.data
    anchored = lay.active & ~lay.free
    if anchored.any():
        V, _ = _null_space(data, lay.active, data.offsets, data.K)
        alpha = np.linalg.lstsq(V[anchored], -x[anchored], rcond=None)[0]
        x = x + V @ alpha
    x[~lay.free] = 0.0
    return x


def _null_space(data: FacetData, active: np.ndarray, off: list[int], K: int):
    """Null directions V of the likelihood and the oblique projector pieces C = (A V)^-1 A.

    ``x - V C x`` moves ``x`` along the null directions onto the constraints (non-person facets
    and thresholds sum to zero) without changing any fitted probability.
    """
    n = data.n_params
    A = len(data.sizes)
    vs, as_ = [], []
    pers = np.zeros(n)
    pers[off[0] : off[1]] = active[off[0] : off[1]]
    for a in range(1, A):
        v = pers.copy()
        sel = np.zeros(n)
        sel[off[a] : off[a + 1]] = active[off[a] : off[a + 1]]
        v += sel
        vs.append(v)
        as_.append(sel)
    if K > 1 and data.pcm is None:
        v = pers.copy()
        sel = np.zeros(n)
        sel[off[A] :] = 1.0
        vs.append(v + sel)
        as_.append(sel)
    elif K > 1:
        r = data.pcm
        for e in range(data.sizes[r]):
            if not active[off[r] + e]:
                continue
            v = np.zeros(n)
            sel = np.zeros(n)
            sel[off[A] + e * K : off[A] + (e + 1) * K] = 1.0
            v += sel
            v[off[r] + e] = -1.0
            vs.append(v)
            as_.append(sel)
    if not vs:
        return np.zeros((n, 0)), np.zeros((0, n))
    V = np.array(vs).T
    Am = np.array(as_)
    Cm = np.linalg.solve(Am @ V, Am)
    return V, Cm


def _place_extremes(data, extreme, orphan, params, off, adj, device):
    """Measures for extreme elements: expected score = observed score moved ``adj`` inward."""
    A, K = len(data.sizes), data.K
    w = np.ones(len(data.x)) if data.w is None else data.w
    flag = [(extreme[a] != 0) | orphan[off[a] : off[a + 1]] for a in range(A)]
    n_flag_obs, groups = _flagged_groups(data, flag)
    se = np.full(data.n_params, np.nan)
    expected = _score_moments(data, params, off)
    # first from the observations each flagged element shares with no other flagged one, then
    # (those still without a measure) from all of its observations
    for sweep in range(2):
        for a in range(A):
            obs_a, bounds = groups[a]
            for e in np.flatnonzero(flag[a]):
                obs_all = obs_a[bounds[e] : bounds[e + 1]]
                obs = obs_all[n_flag_obs[obs_all] == 1] if sweep == 0 else obs_all
                if sweep == 0 and len(obs) == 0:
                    continue
                if sweep == 1 and np.isfinite(se[off[a] + e]) and (n_flag_obs[obs_all] == 1).any():
                    continue
                base = np.zeros(len(obs))
                for b in range(A):
                    if b != a:  # parameter positions in int64 (codes may come in a narrow type)
                        vals = params[off[b] + data.idx[b][obs].astype(np.int64)]
                        base += vals if b == 0 else -vals
                ww = w[obs]
                target = _extreme_target(float(np.sum(ww * data.x[obs])), float(np.sum(ww)), K,
                                         adj, extreme[a][e])
                params[off[a] + e], se[off[a] + e] = _solve_extreme(
                    expected, base, 1.0 if a == 0 else -1.0, ww, obs, target)
    return params, se


def _flagged_groups(data, flag):
    """How many flagged elements each observation touches, and per facet the observations
    touching a flagged element grouped by element (sorted once): ``(obs, bounds)``."""
    n_flag_obs = np.zeros(len(data.x), dtype=np.int64)
    for a, f in enumerate(flag):
        n_flag_obs += f[data.idx[a]]
    touched = np.flatnonzero(n_flag_obs > 0)
    groups = []
    for a, f in enumerate(flag):
        el = data.idx[a][touched]
        sel = f[el]
        order = np.argsort(el[sel], kind="stable")
        bounds = np.searchsorted(el[sel][order], np.arange(data.sizes[a] + 1))
        groups.append((touched[sel][order], bounds))
    return n_flag_obs, groups


def _score_moments(data, params, off):
    """``expected(eta, obs)``: each observation's expected score and its variance."""
    K, A = data.K, len(data.sizes)
    cum = None
    if K > 1:
        T = params[off[A] :].reshape(-1, K)
        cum = np.concatenate([np.zeros((T.shape[0], 1)), np.cumsum(T, axis=1)], axis=1)

    def expected(eta, obs):
        if K <= 1:
            p = 1.0 / (1.0 + np.exp(-eta))
            return p, p * (1 - p)
        c = cum[0] if data.pcm is None else cum[data.idx[data.pcm][obs]]
        kv = np.arange(K + 1)
        psi = eta[:, None] * kv - c
        psi -= psi.max(1, keepdims=True)
        P = np.exp(psi)
        P /= P.sum(1, keepdims=True)
        E = P @ kv
        return E, P @ (kv * kv) - E * E

    return expected


def _extreme_target(total: float, cnt: float, K: int, adj: float, direction) -> float:
    """The score an extreme element is fitted to: its observed score moved ``adj`` inward."""
    target = total - adj if direction > 0 else total + adj if direction < 0 else total
    return min(max(target, adj), K * cnt - adj) if cnt * K > 2 * adj else K * cnt / 2


def _solve_extreme(expected, base, sign: float, ww, obs, target: float):
    """The element's measure whose expected score is ``target`` (Newton, steps capped at 1
    logit), and its standard error."""
    beta = 0.0
    for _ in range(100):
        E, Vv = expected(base + sign * beta, obs)
        stepv = -(float(np.sum(ww * E)) - target) / (sign * float(np.sum(ww * Vv)))
        stepv = max(min(stepv, 1.0), -1.0)
        beta += stepv
        if abs(stepv) < 1e-12:
            break
    E, Vv = expected(base + sign * beta, obs)
    return beta, 1.0 / math.sqrt(float(np.sum(ww * Vv)))


def _measures_table(design: DimensionDesign, params, se, se_model, status,
                    sums: _ElementSums) -> pd.DataFrame:
    data = design.data
    A = len(data.sizes)
    off = data.offsets
    K = data.K
    w = data.w
    cats = np.asarray(design.categories)
    shift = None  # raw = x + shift when the categories are consecutive integers
    if np.issubdtype(cats.dtype, np.number) and np.array_equal(cats - cats[0], np.arange(len(cats))):
        shift = float(cats[0])
    raw_sums = None if shift is not None else _element_sums(data, scores=design.raw_scores)
    frames = []
    names = [design.person_facet, *design.facet_names]
    labels = [design.person_labels, *design.facet_labels]
    for a in range(A):
        cnt = sums.wcnt[a]
        tot = sums.wtot[a] + shift * cnt if raw_sums is None else raw_sums.wtot[a]
        sl = slice(off[a], off[a + 1])
        frames.append(
            pd.DataFrame(
                {
                    "dimension": design.dimension,
                    "facet": names[a],
                    "element": labels[a],
                    "measure": params[sl],
                    "se": se[sl],
                    "se_model": se_model[sl],
                    "count": cnt,
                    "total": tot,
                    "observed_average": tot / cnt,
                    "status": status[sl],
                }
            )
        )
    if K > 1:
        cats = design.categories
        counts = np.bincount(data.x, weights=w, minlength=K + 1)
        if data.pcm is None:
            elements = [str(c) for c in cats[1:]]
            cnt = counts[1:]
        else:
            r = data.pcm
            labs = labels[r]
            elements = [f"{labs[e]}:{c}" for e in range(data.sizes[r]) for c in cats[1:]]
            cells = data.idx[r].astype(np.int64) * (K + 1) + data.x  # (no narrow-type wrap)
            cnt = np.bincount(cells, weights=w, minlength=data.sizes[r] * (K + 1))
            cnt = cnt.reshape(data.sizes[r], K + 1)[:, 1:].ravel()
        sl = slice(off[A], off[A] + data.n_tau)
        frames.append(
            pd.DataFrame(
                {
                    "dimension": design.dimension,
                    "facet": "threshold",
                    "element": elements,
                    "measure": params[sl],
                    "se": se[sl],
                    "se_model": se_model[sl],
                    "count": cnt,
                    "total": np.nan,
                    "observed_average": np.nan,
                    "status": "",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _convergence_row(design, lay, engine, ev, fval, gmax, it, last_step, matvecs) -> dict:
    """The dimension's row of ``convergence.csv`` (its ``seconds`` filled in by the caller)."""
    off_tau = design.data.offsets[-1]
    scored = lay.active & (np.arange(lay.n) < off_tau)
    return {
        "dimension": design.dimension,
        "converged": True,
        "iterations": it,
        "max_gradient": gmax,
        "max_score_residual": float(np.max(np.abs(ev.g[scored]))) if scored.any() else 0.0,
        "last_step": last_step,
        "objective": fval,
        "log_likelihood": -ev.f,
        "n_obs": len(lay.core.x),
        "n_params": len(lay.F),
        "solver": lay.solver_kind,
        "cg_products": matvecs,
        "passes": engine.passes,  # passes over the observations (likelihood evaluations)
        "device_bytes_per_obs": engine.memory()["bytes_per_obs"],
        "seconds": 0.0,
    }

"""The Bayesian estimator: the many-facet Rasch model in PyMC, sampled with nutpie.

Per dimension: identical observations are merged into cells (:mod:`._bayes_model`), the model is
built once and sampled with nutpie when it is installed (PyMC's own NUTS otherwise); ADVI (and
Pathfinder, with ``pymc-extras``) are offered for data too large to sample and are labelled
approximate everywhere. The draws are turned into the estimator-neutral
:class:`~irtpeer._fitrecord.DimensionFit` (:mod:`._bayes_summary`), with posterior means as
``measure``, posterior SDs as ``se`` and highest-density intervals; the ArviZ ``InferenceData``
(reported quantities, sampler statistics, the predictive check, optionally the pointwise
log-likelihood) is kept as ``Calibration.idata``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings

import numpy as np

from .._design import DimensionDesign, build_designs
from .._errors import DesignError, IrtpeerError, MissingDependencyError, require
from .._fitrecord import DimensionFit
from ..ratings import Ratings
from ..spec import ModelSpec
from ._bayes_model import build_cells, build_model, free_facet, resolve_priors
from ._bayes_summary import measures_table, ppc_table, reported_draws

# PyTensor says on every compile that it found no BLAS library and uses NumPy's: a fact about the
# machine, not the fit (nutpie compiles with numba), so it is not repeated to the user.
logging.getLogger("pytensor.tensor.blas").setLevel(logging.ERROR)

__all__ = ["BayesMFRM"]

_METHODS = ("nuts", "advi", "pathfinder")
_SAMPLERS = ("auto", "nutpie", "pymc")


class BayesMFRM:
    """Bayesian calibration of a many-facet Rasch model with PyMC.

    Parameters
    ----------
    spec
        The :class:`~irtpeer.ModelSpec`; person modes ``model``, ``response`` and
        ``hierarchical`` (theta_mq = theta_m + u_mq, u_mq ~ N(0, sigma_u), non-centred).
    person_prior
        ``"normal"`` (theta ~ N(mu, sigma_theta), sigma_theta estimated: the random-person Rasch
        model; the default) or ``"flat"`` (a wide normal, ``priors["flat_sigma"]``).
    draws, tune, chains, seed
        Posterior draws and tuning steps per chain, number of chains, random seed (``None``: one
        is drawn and recorded in ``options`` so the run can be repeated). ``tune=None`` (the
        default) is 500 with nutpie and 1000 with PyMC's sampler: nutpie adapts its mass matrix
        from the gradients as well as the draws and needs less tuning (its own default is 300;
        on the paper-scale benchmark tune 300, 500 and 1000 gave the same max R-hat, 1.008-1.009,
        and bulk ESS >= 940), while PyMC's windowed adaptation is made for 1000.
    method
        ``"nuts"`` (default), ``"advi"`` or ``"pathfinder"`` (approximate; labelled so).
    sampler
        ``"auto"`` (nutpie when installed, else PyMC), ``"nutpie"`` or ``"pymc"``.
    priors
        Prior scales in logits, see :data:`~irtpeer.estimators._bayes_model.DEFAULT_PRIORS`.
    question_effects
        ``"fixed"`` (centred facet, the default) or ``"random"`` (N(0, sigma_q), reported centred)
        for the facet ``spec.response_facet``.
    log_likelihood
        Store the pointwise log-likelihood of every cell in ``idata`` (for LOO; memory grows with
        cells x draws).
    hdi_prob
        Probability of the highest-density intervals in the measures table.
    """

    name = "bayes"
    #: keyword options a user may set from the command line
    OPTIONS = ("person_prior", "draws", "tune", "chains", "seed", "method", "sampler", "priors",
               "question_effects", "log_likelihood", "hdi_prob")

    def __init__(
        self,
        spec: ModelSpec | None = None,
        *,
        person_prior: str = "normal",
        draws: int = 1000,
        tune: int | None = None,
        chains: int = 4,
        seed: int | None = None,
        method: str = "nuts",
        sampler: str = "auto",
        priors: dict | None = None,
        question_effects: str = "fixed",
        log_likelihood: bool = False,
        hdi_prob: float = 0.95,
        advi_iterations: int = 30_000,
        progress: bool = False,
    ):
        self.spec = spec if spec is not None else ModelSpec()
        self.person_prior = person_prior
        self.draws = draws
        self.tune = tune
        self.chains = chains
        self.seed = seed
        self.method = method
        self.sampler = sampler
        self.priors = priors
        self.question_effects = question_effects
        self.log_likelihood = log_likelihood
        self.hdi_prob = hdi_prob
        self.advi_iterations = advi_iterations
        self.progress = progress

    # ------------------------------------------------------------------ public
    def fit(self, ratings: Ratings) -> BayesMFRM:
        from .._calibration import Calibration
        from ._bayes_diagnostics import merge_idata

        if not isinstance(ratings, Ratings):
            raise IrtpeerError("fit() takes the Ratings returned by irtpeer.load_ratings()")
        require("pymc", "bayes")
        require("arviz", "bayes")
        self._validate()
        t0 = time.perf_counter()
        designs = build_designs(ratings, self.spec)
        seeds = np.random.SeedSequence(self.seed_).spawn(len(designs))
        fits, parts = [], []
        for design, ss in zip(designs, seeds):
            fit, part = self._fit_dimension(design, int(ss.generate_state(1)[0]))
            fits.append(fit)
            parts.append(part)
        self.calibration_ = Calibration._from_fits(
            ratings=ratings, spec=self.spec, fits=fits, estimator=self.name,
            options=self.options_, notes=self._notes(), seconds=time.perf_counter() - t0,
            idata=merge_idata(parts),
        )
        return self

    # -------------------------------------------------------------- validation
    def _validate(self):
        def choice(name, value, allowed):
            if value not in allowed:
                raise IrtpeerError(f"{name} {value!r} is not one of {', '.join(allowed)}")

        choice("person_prior", self.person_prior, ("normal", "flat"))
        choice("method", self.method, _METHODS)
        choice("sampler", self.sampler, _SAMPLERS)
        choice("question_effects", self.question_effects, ("fixed", "random"))
        for name, lo in (("draws", 1), ("tune", 0), ("chains", 1)):
            v = getattr(self, name)
            if name == "tune" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise IrtpeerError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or
                                      not isinstance(self.seed, (int, np.integer)) or self.seed < 0):
            raise IrtpeerError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.hdi_prob, (int, float)) and 0 < self.hdi_prob < 1):
            raise IrtpeerError(f"hdi_prob must be a number between 0 and 1, got {self.hdi_prob!r}")
        if self.spec.person_mode == "response" and self.person_prior == "flat":
            raise DesignError(
                "person mode 'response' with a flat person prior is not identified: a response's "
                "measure and its question's difficulty trade off freely. Use --person-prior normal "
                "(the default) or person mode 'hierarchical'"
            )
        self.priors_ = resolve_priors(self.priors)
        self.seed_ = int(self.seed) if self.seed is not None else int(
            np.random.SeedSequence().generate_state(1)[0] % (2**31))
        self.sampler_ = self._resolve_sampler()
        self.tune_ = int(self.tune) if self.tune is not None else (
            500 if self.sampler_ == "nutpie" else 1000)
        self.options_ = {
            "person_prior": self.person_prior, "method": self.method, "sampler": self.sampler_,
            "chains": int(self.chains), "draws": int(self.draws),
            "tune": self.tune_ if self.method == "nuts" else None,  # no tuning in ADVI/Pathfinder
            "seed": self.seed_, "question_effects": self.question_effects,
            "hdi_prob": float(self.hdi_prob), "priors": dict(self.priors_),
            "approximate": self.method != "nuts",
        }

    def _resolve_sampler(self) -> str:
        if self.method == "pathfinder":
            try:
                import pymc_extras  # noqa: F401
            except ImportError:
                raise MissingDependencyError(
                    "method 'pathfinder' needs the package 'pymc-extras': install it with "
                    "`pip install 'irtpeer[bayes]'`, or use method 'advi' or 'nuts'"
                ) from None
        if self.method != "nuts":
            return self.method
        if self.sampler in ("auto", "nutpie"):
            try:
                import nutpie  # noqa: F401
                return "nutpie"
            except ImportError:
                if self.sampler == "nutpie":
                    raise MissingDependencyError(
                        "sampler 'nutpie' is not installed: install it with "
                        "`pip install 'irtpeer[bayes]'` or use sampler 'pymc'"
                    ) from None
        return "pymc"

    def _notes(self) -> list[str]:
        notes = []
        if self.method != "nuts":
            notes.append(
                f"method {self.method!r} is an APPROXIMATE posterior (variational): means are "
                f"usually close, SDs and intervals are often too narrow; sample with NUTS to confirm"
            )
        if self.spec.person_mode == "hierarchical":
            notes.append(
                "person mode 'hierarchical': theta_mq = theta_m + u_mq with u_mq ~ N(0, sigma_u); "
                "a model's measure is theta_m and its SE includes the sampling of questions"
            )
        return notes

    # ---------------------------------------------------------------- per dimension
    def _log(self, msg: str):
        if self.progress:
            import sys

            print(f"[irtpeer] {msg}", file=sys.stderr, flush=True)

    def _fit_dimension(self, design: DimensionDesign, seed: int):
        from ._bayes_diagnostics import diagnostics_row, dimension_idata, model_scores

        t0 = time.perf_counter()
        cells = build_cells(design, self.spec.person_mode, self.spec.response_facet,
                            self.question_effects)
        self._log(f"{design.dimension}: {len(design.data.x)} ratings in {cells.n_cells} cells; "
                  f"sampling with {self.sampler_}")
        model = build_model(cells, self.priors_, self.person_prior, self.spec.person_mode)
        raw, stats, extra = self._sample(model, seed, _model_key(cells, self))
        rep = reported_draws(design, cells, raw, free_facet(cells, self.person_prior))
        measures = measures_table(design, cells, rep, self.hdi_prob)
        mdraws = model_scores(design, rep)
        ppc = ppc_table(design, cells, rep, seed)
        diag = diagnostics_row(design, cells, rep, stats, self.options_, extra)
        diag.update({k: v for k, v in extra.items() if k.endswith(("_s", "_steps"))})
        diag["seconds"] = time.perf_counter() - t0
        part = dimension_idata(design, cells, rep, stats, ppc, mdraws, self.log_likelihood)
        mflat = mdraws.reshape(-1, mdraws.shape[-1])
        fit = DimensionFit(
            design=design, measures=measures, model_measure=mflat.mean(0),
            model_cov=np.atleast_2d(np.cov(mflat, rowvar=False)), diagnostics=diag,
            identification=_identification(design, cells, self.person_prior, self.method),
            notes=list(design.notes), model_draws=mflat,
        )
        return fit, part

    def _sample(self, model, seed: int, key: str = ""):
        """Raw draws {name: (chain, draw, ...)}, sampler stats and extra diagnostics."""
        if self.sampler_ == "nutpie":
            import nutpie

            t0 = time.perf_counter()
            compiled = _compiled(model, key)
            t1 = time.perf_counter()
            idata = nutpie.sample(compiled, draws=self.draws, tune=self.tune_, chains=self.chains,
                                  seed=seed, progress_bar=self.progress)
            return _raw(idata), _stats(idata), {"compile_s": t1 - t0,
                                                "sample_s": time.perf_counter() - t1,
                                                "leapfrog_steps": _leapfrog_steps(idata)}
        import pymc as pm

        with model, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if self.sampler_ == "pymc":
                idata = pm.sample(draws=self.draws, tune=self.tune_, chains=self.chains,
                                  cores=min(self.chains, 2), random_seed=seed,
                                  progressbar=self.progress, compute_convergence_checks=False)
                return _raw(idata), _stats(idata), {}
            return self._approximate(pm, seed)

    def _approximate(self, pm, seed: int):
        n = self.draws * self.chains
        if self.method == "pathfinder":
            import pymc_extras as pmx

            # paths run one after the other in this process (no worker processes to start, the
            # same draws for the same seed); pymc-extras' own summary table is not printed
            idata = pmx.fit(method="pathfinder", num_paths=self.chains, num_draws=n,
                            num_draws_per_path=self.draws, concurrent=None,
                            random_seed=seed, progressbar=self.progress, display_summary=False)
            return _raw(idata, self.chains), {}, {"elbo_change": float("nan")}
        approx = pm.fit(n=self.advi_iterations, method="advi", random_seed=seed,
                        progressbar=self.progress)
        hist = np.asarray(approx.hist)
        tail = hist[-max(len(hist) // 10, 1):]
        change = float(abs(tail.mean() - hist[-2 * len(tail):-len(tail)].mean()) /
                       max(abs(tail.mean()), 1.0)) if len(hist) >= 2 * len(tail) else math.nan
        idata = approx.sample(n, random_seed=seed)
        return _raw(idata, self.chains), {}, {"elbo_change": change}


#: nutpie models compiled in this process, by the hash of their data and settings: compiling
#: (numba) takes most of a small fit, and refitting the same data (another seed, more draws)
#: needs no new compilation.
_COMPILED: dict[str, object] = {}


def _model_key(cells, est: BayesMFRM) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in [*cells.idx, cells.counts, cells.resp if cells.resp is not None else np.zeros(0)]:
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"|")
    h.update(repr((cells.sizes, cells.K, cells.pcm, cells.random_facet, est.person_prior,
                   est.spec.person_mode, sorted(est.priors_.items()))).encode())
    return h.hexdigest()


def _compiled(model, key: str):
    import nutpie

    if key not in _COMPILED:
        if len(_COMPILED) >= 4:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = nutpie.compile_pymc_model(model)
    return _COMPILED[key]


def _raw(idata, chains: int | None = None) -> dict:
    post = idata.posterior
    out = {}
    for name in post.data_vars:
        v = post[name].values
        if chains is not None:  # one approximate "chain" split for the table layout
            flat = v.reshape(-1, *v.shape[2:])
            v = flat.reshape(chains, -1, *v.shape[2:])
        out[name] = v
    return out


def _leapfrog_steps(idata) -> int:
    """Gradient evaluations of the whole run, tuning included: the sampling cost without the
    machine's speed or load in it."""
    return int(sum(int(g["n_steps"].values.sum()) for g in
                   (getattr(idata, "warmup_sample_stats", None), idata.sample_stats)
                   if g is not None and "n_steps" in g))


def _stats(idata) -> dict:
    ss = getattr(idata, "sample_stats", None)
    if ss is None:
        return {}
    out = {}
    for src, dst in (("diverging", "diverging"), ("tree_depth", "tree_depth"),
                     ("depth", "tree_depth"), ("n_steps", "n_steps"), ("step_size", "step_size")):
        if src in ss and dst not in out:
            out[dst] = ss[src].values
    return out


def _identification(design: DimensionDesign, cells, person_prior: str, method: str) -> str:
    facets = ", ".join(design.facet_names)
    parts = [f"{design.person_facet} floats"
             + (f"; {facets} centred (sum of measures = 0 in every draw)" if facets else "")]
    if cells.K > 1:
        parts.append("thresholds sum to 0" if cells.pcm is None else
                     "thresholds of each element of the partial-credit facet sum to 0")
    parts.append("person prior normal(mu, sigma_theta), sigma_theta estimated"
                 if person_prior == "normal" else "flat (wide normal) person prior")
    if cells.resp is not None:
        parts.append("responses theta_m + u_mq, u ~ N(0, sigma_u)")
    parts.append("posterior means; se = posterior SD" + (" (APPROXIMATE: " + method + ")"
                                                          if method != "nuts" else ""))
    return "; ".join(parts)

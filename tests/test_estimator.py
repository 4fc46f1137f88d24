"""Behaviour of the torch estimator beyond the R references: partial credit, penalties, response
mode, extreme elements, weights, design errors and parameter recovery."""

import numpy as np
import pandas as pd
import pytest
import scipy.optimize as so
import torch

import irtpeer
from irtpeer import ConvergenceError, DesignError, ModelSpec, TorchMFRM


def fit(df, spec=None, **kw):
    return TorchMFRM(spec, device="cpu", **kw).fit(irtpeer.load_ratings(df)).calibration_


# ----------------------------------------------------------------------- partial credit
def _pcm_negll(free, P, Q, R, K, p, q, r, x):
    theta = free[:P]
    beta = np.append(free[P : P + Q - 1], -free[P : P + Q - 1].sum())
    delta = np.append(free[P + Q - 1 : P + Q + R - 2], -free[P + Q - 1 : P + Q + R - 2].sum())
    t = free[P + Q + R - 2 :].reshape(R, K - 1)
    tau = np.concatenate([t, -t.sum(1, keepdims=True)], 1)  # each item's thresholds sum to 0
    eta = theta[p] - beta[q] - delta[r]
    cum = np.concatenate([np.zeros((R, 1)), np.cumsum(tau, 1)], 1)
    psi = eta[:, None] * np.arange(K + 1) - cum[r]
    mx = psi.max(1, keepdims=True)
    logz = (mx + np.log(np.exp(psi - mx).sum(1, keepdims=True))).ravel()
    return -(psi[np.arange(len(x)), x] - logz).sum()


def test_partial_credit_matches_independent_optimiser():
    # Reference: a direct numpy likelihood in a sum-to-zero free parametrisation, maximised by
    # scipy's BFGS; SEs from a finite-difference Hessian of that likelihood.
    sim = irtpeer.simulate(models=5, questions=12, judges=1, dimensions="X", items_per_dimension=3,
                           categories=4, missing=0.0, seed=11)
    df = sim.ratings.drop(columns=["judge"])
    cal = fit(df, ModelSpec(scale="pcm:item"))
    assert cal.meta["scales"]["X"] == "pcm"
    P, Q, R, K = 5, 12, 3, 3
    codes = {c: pd.Categorical(df[c]).codes for c in ["model", "question", "item"]}
    x = df["score"].astype(int).to_numpy()
    args = (P, Q, R, K, codes["model"], codes["question"], codes["item"], x)
    n_free = P + Q - 1 + R - 1 + R * (K - 1)
    res = so.minimize(_pcm_negll, np.zeros(n_free), args=args, method="BFGS",
                      options={"gtol": 1e-10, "maxiter": 10000})
    assert cal.convergence["log_likelihood"].iloc[0] == pytest.approx(-res.fun, abs=1e-6)
    # compare thresholds of each item
    z = res.x
    t = z[P + Q + R - 2 :].reshape(R, K - 1)
    tau = np.concatenate([t, -t.sum(1, keepdims=True)], 1)
    items = sorted(df["item"].unique())
    ours = cal.facet("threshold").set_index("element")["measure"]
    for i, it in enumerate(items):
        for k in range(K):
            assert ours[f"{it}:{k + 1}"] == pytest.approx(tau[i, k], abs=1e-4)
    # SEs of persons from the finite-difference Hessian (constrained parametrisation)
    h = 1e-4
    f0 = lambda v: _pcm_negll(v, *args)
    Hm = np.zeros((n_free, n_free))
    E = np.eye(n_free) * h
    for a in range(n_free):
        for b in range(a, n_free):
            Hm[a, b] = Hm[b, a] = (f0(z + E[a] + E[b]) - f0(z + E[a] - E[b]) - f0(z - E[a] + E[b]) + f0(z - E[a] - E[b])) / (4 * h * h)
    se_ref = np.sqrt(np.diag(np.linalg.inv(Hm)))[:P]
    ours_p = cal.facet("model").set_index("element").loc[sorted(df["model"].unique())]
    np.testing.assert_allclose(ours_p["measure"], z[:P], atol=1e-4)
    np.testing.assert_allclose(ours_p["se"], se_ref, rtol=1e-3)
    # PCM nests RSM: its likelihood is at least as high
    cal_rsm = fit(df, ModelSpec(scale="rsm"))
    assert cal.convergence["log_likelihood"].iloc[0] >= cal_rsm.convergence["log_likelihood"].iloc[0]


# ------------------------------------------------------------------ penalty, response mode
def _onehot_design(df, person_col):
    cols = [person_col, "question", "judge", "item"]
    mats, names = [], []
    for c in cols:
        codes, uniq = pd.factorize(df[c], sort=True)
        m = np.zeros((len(df), len(uniq)))
        m[np.arange(len(df)), codes] = 1.0 if c == person_col else -1.0
        mats.append(m)
        names.append((c, uniq))
    return np.hstack(mats), names


@pytest.mark.parametrize("mode", ["model", "response"])
def test_penalised_fit_equals_sklearn_ridge_logistic(mode):
    # irtpeer's penalty lambda/2*|params|^2 on the over-parametrised model is scikit-learn's
    # LogisticRegression(C=1/lambda, fit_intercept=False) on the full one-hot design.
    from sklearn.linear_model import LogisticRegression

    sim = irtpeer.simulate(models=4, questions=15, judges=3, dimensions="A", items_per_dimension=3,
                           missing=0.1, seed=5, response_sd=0.5)
    df = sim.ratings.dropna(subset=["score"]).reset_index(drop=True)
    lam = 0.7
    cal = fit(df, ModelSpec(person_mode=mode), penalty=lam)
    df = df.assign(response=df["model"] + "|" + df["question"])
    person = "model" if mode == "model" else "response"
    X, _ = _onehot_design(df, person)
    y = df["score"].astype(int).to_numpy()
    lr = LogisticRegression(C=1 / lam, fit_intercept=False, tol=1e-12, max_iter=100000).fit(X, y)
    eta_sk = X @ lr.coef_.ravel()
    m = cal.measures.set_index(["facet", "element"])["measure"]
    pf = "model" if mode == "model" else "response"
    eta = (m.loc[pf].reindex(df[person]).to_numpy()
           - sum(m.loc[f].reindex(df[f]).to_numpy() for f in ["question", "judge", "item"]))
    np.testing.assert_allclose(eta, eta_sk, atol=2e-5)
    obj_sk = -(y * eta_sk - np.logaddexp(0, eta_sk)).sum() + 0.5 * lam * (lr.coef_ ** 2).sum()
    assert cal.convergence["objective"].iloc[0] == pytest.approx(obj_sk, abs=1e-6)
    for f in ["question", "judge", "item"]:
        assert abs(cal.facet(f)["measure"].sum()) < 1e-9  # centred whatever the penalty
    if mode == "response":
        assert any("ridge penalty" in n for n in cal.notes)
        resp = cal.facet("response")
        resp_model = resp["element"].str.split("|").str[0]
        means = resp.groupby(resp_model)["measure"].mean()
        np.testing.assert_allclose(cal.scores.set_index("model")["A"], means.loc[cal.scores["model"]], atol=1e-12)


def test_response_mode_needs_penalty():
    sim = irtpeer.simulate(models=3, questions=5, judges=2, dimensions="A", seed=1)
    with pytest.raises(DesignError, match="penalty"):
        fit(sim.ratings, ModelSpec(person_mode="response"), penalty=0.0)


def test_score_covariance_equals_dense_constrained_inverse():
    # cov of model scores = rows of Z (Z^T H Z)^-1 Z^T, Z a basis of the sum-to-zero constraints,
    # with H the dense Fisher information built independently here.
    sim = irtpeer.simulate(models=4, questions=10, judges=3, dimensions="A", items_per_dimension=2,
                           missing=0.0, seed=2)
    df = sim.ratings
    cal = fit(df)
    m = cal.measures.set_index(["facet", "element"])["measure"]
    cols = ["model", "question", "judge", "item"]
    levels = [sorted(df[c].unique()) for c in cols]
    X = np.hstack([
        (pd.get_dummies(pd.Categorical(df[c], categories=lev)).to_numpy(float)) * (1 if c == "model" else -1)
        for c, lev in zip(cols, levels)
    ])
    eta = X @ np.concatenate([m.loc[c].loc[lev].to_numpy() for c, lev in zip(cols, levels)])
    p = 1 / (1 + np.exp(-eta))
    H = X.T @ (X * (p * (1 - p))[:, None])
    blocks = [len(lev) for lev in levels]
    Zs = [np.eye(blocks[0])]
    for L in blocks[1:]:
        Zs.append(np.vstack([np.eye(L - 1), -np.ones((1, L - 1))]))
    from scipy.linalg import block_diag

    Z = block_diag(*Zs)
    cov = Z @ np.linalg.inv(Z.T @ H @ Z) @ Z.T
    np.testing.assert_allclose(cal.cov["A"].to_numpy(), cov[:4, :4], rtol=1e-8)
    se_all = np.sqrt(np.diag(cov))
    ours = np.concatenate([cal.facet(c).set_index("element").loc[lev, "se"].to_numpy() for c, lev in zip(cols, levels)])
    np.testing.assert_allclose(ours, se_all, rtol=1e-8)
    # FACETS' model SE ignores the covariances: 1/sqrt(own information)
    own = 1 / np.sqrt(np.diag(H))
    ours_model = np.concatenate([cal.facet(c).set_index("element").loc[lev, "se_model"].to_numpy() for c, lev in zip(cols, levels)])
    np.testing.assert_allclose(ours_model, own, rtol=1e-10)


# ----------------------------------------------------------------------------- extremes
def test_extreme_model_is_flagged_and_placed_with_facets_adjustment():
    sim = irtpeer.simulate(models=5, questions=30, judges=3, dimensions="A", items_per_dimension=3,
                           missing=0.0, seed=4)
    df = sim.ratings.copy()
    df.loc[df["model"] == "model-2", "score"] = 1  # a model that passes every item
    cal = fit(df)
    row = cal.facet("model").set_index("element").loc["model-2"]
    assert row["status"] == "extreme_max"
    assert np.isfinite(row["measure"]) and np.isfinite(row["se"])
    # its expected score at the placed measure = observed - 0.3 (others at their estimates)
    m = cal.measures.set_index(["facet", "element"])["measure"]
    sub = df[df["model"] == "model-2"]
    eta = row["measure"] - sum(m.loc[f].reindex(sub[f]).to_numpy() for f in ["question", "judge", "item"])
    expected = (1 / (1 + np.exp(-eta))).sum()
    assert expected == pytest.approx(len(sub) - 0.3, abs=1e-8)
    others = cal.facet("model").query("element != 'model-2'")
    assert (others["status"] == "").all() and row["measure"] > others["measure"].max()
    assert any("extreme" in n for n in cal.notes)
    # the rest equals a fit without that model (its observations carry no information)
    cal2 = fit(df[df["model"] != "model-2"])
    a = cal.facet("judge").set_index("element")["measure"]
    b = cal2.facet("judge").set_index("element")["measure"]
    np.testing.assert_allclose(a, b.loc[a.index], atol=1e-9)


def test_extreme_with_penalty_is_finite_and_flagged():
    sim = irtpeer.simulate(models=4, questions=20, judges=2, dimensions="A", seed=4)
    df = sim.ratings.copy()
    df.loc[df["question"] == "q0003", "score"] = 0
    cal = fit(df, penalty=0.5)
    row = cal.facet("question").set_index("element").loc["q0003"]
    assert row["status"] == "extreme_min" and np.isfinite(row["measure"])


# ------------------------------------------------------------------ weights and duplicates
def test_duplicates_mean_and_keep_are_exact_weightings():
    sim = irtpeer.simulate(models=4, questions=20, judges=3, dimensions="A", missing=0.0, seed=9)
    base = fit(sim.ratings)
    doubled = pd.concat([sim.ratings, sim.ratings], ignore_index=True)
    with pytest.raises(irtpeer.RatingsError, match="duplicated judgments"):
        irtpeer.load_ratings(doubled)
    mean = TorchMFRM(device="cpu").fit(irtpeer.load_ratings(doubled, duplicates="mean")).calibration_
    keep = TorchMFRM(device="cpu").fit(irtpeer.load_ratings(doubled, duplicates="keep")).calibration_
    np.testing.assert_allclose(mean.measures["measure"], base.measures["measure"], atol=1e-9)
    np.testing.assert_allclose(mean.measures["se"], base.measures["se"], rtol=1e-7)
    np.testing.assert_allclose(keep.measures["measure"], base.measures["measure"], atol=1e-9)
    np.testing.assert_allclose(keep.measures["se"], base.measures["se"] / np.sqrt(2), rtol=1e-7)


# ------------------------------------------------------------------------ design errors
def test_disconnected_design_names_the_subsets():
    rows = []
    for block, (models, judges, qs) in enumerate([(["m1", "m2"], ["j1", "j2"], range(10)),
                                                  (["m3", "m4"], ["j3", "j4"], range(10, 20))]):
        rng = np.random.default_rng(block)
        for m in models:
            for j in judges:
                for q in qs:
                    rows.append((m, f"q{q}", j, int(rng.random() < 0.5)))
    df = pd.DataFrame(rows, columns=["model", "question", "judge", "score"])
    with pytest.raises(DesignError) as err:
        fit(df)
    msg = str(err.value)
    assert "disconnected" in msg and "2 subsets" in msg
    assert "model: m1, m2" in msg and "judge: j3, j4" in msg


def test_confounded_facets_are_reported():
    # each judge rates exactly one item: judge severity and item difficulty cannot be separated
    sim = irtpeer.simulate(models=4, questions=15, judges=2, dimensions="A", items_per_dimension=2,
                           missing=0.0, seed=3)
    df = sim.ratings
    df = df[(df["judge"] == "judge-1") == (df["item"] == "A1")]
    with pytest.raises(DesignError, match="confounded"):
        fit(df)


def test_single_element_facet_is_left_out_with_a_note():
    sim = irtpeer.simulate(models=4, questions=15, judges=1, dimensions="A", seed=3)
    cal = fit(sim.ratings)
    assert "judge" not in set(cal.measures["facet"])
    assert any("facet 'judge' has a single element" in n for n in cal.notes)


def test_non_convergence_raises_with_report():
    sim = irtpeer.simulate(models=4, questions=15, judges=2, dimensions="A", seed=3)
    with pytest.raises(ConvergenceError, match="did not converge in 1 Newton"):
        TorchMFRM(max_iter=1).fit(irtpeer.load_ratings(sim.ratings))


# ---------------------------------------------------------------------------- recovery
def test_recovery_and_interval_coverage_over_repeated_simulations():
    # 40 simulated data sets (seeds 0..39), 8 models x 60 questions x 4 judges x 4 items:
    # estimates track the truth and 95% intervals from `se` cover it 93-97% of the time.
    inside, total, corrs = 0, 0, []
    for seed in range(40):
        sim = irtpeer.simulate(models=8, questions=60, judges=4, dimensions="A", items_per_dimension=4,
                               missing=0.05, seed=seed, question_sd=0.6)
        cal = fit(sim.ratings)
        m = cal.measures.merge(sim.truth, on=["dimension", "facet", "element"], suffixes=("", "_true"))
        m = m[m["status"] == ""]
        inside += int((np.abs(m["measure"] - m["measure_true"]) < 1.959964 * m["se"]).sum())
        total += len(m)
        mod = m[m["facet"] == "model"]
        corrs.append(np.corrcoef(mod["measure"], mod["measure_true"])[0, 1])
    coverage = inside / total
    assert 0.93 <= coverage <= 0.97, coverage
    assert np.mean(corrs) > 0.95


def test_rating_scale_recovery_of_thresholds():
    # Joint ML inflates threshold spread when elements have few observations (the JMLE
    # incidental-parameter bias, about 10% at 54 per question); at 240 per question it is small.
    sim = irtpeer.simulate(models=12, questions=80, judges=5, dimensions="A", items_per_dimension=4,
                           categories=5, seed=8)
    cal = fit(sim.ratings)
    thr = cal.facet("threshold").set_index("element")["measure"]
    truth = sim.truth.query("facet == 'threshold'").set_index("element")["measure"]
    np.testing.assert_allclose(thr.loc[truth.index], truth, atol=0.1)
    assert list(thr.loc[truth.index]) == sorted(thr)  # ordered like the truth


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
def test_cuda_fit_equals_cpu_fit():
    sim = irtpeer.simulate(models=6, questions=100, judges=3, seed=1, categories=4)
    r = irtpeer.load_ratings(sim.ratings)
    cpu = TorchMFRM(device="cpu").fit(r).calibration_
    gpu = TorchMFRM(device="cuda").fit(r).calibration_
    assert gpu.options["device"].startswith("cuda")
    np.testing.assert_allclose(gpu.measures["measure"], cpu.measures["measure"], atol=1e-9)
    np.testing.assert_allclose(gpu.measures["se"], cpu.measures["se"], rtol=1e-8)

"""The loss functions against values computed by hand and by autograd on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from lagdpo import losses as L


@pytest.fixture(autouse=True)
def _float64():
    """Hand values need float64; scoped to this module's tests so the tiny models elsewhere train
    in the float32 users run (setting it at import would change it for the whole session)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


@pytest.fixture
def batch():
    # B = 2 records, K = 4 dimensions; record 0 has A and E active, record 1 has A, T, C.
    chosen = torch.tensor([-3.0, -5.0])
    ref_chosen = torch.tensor([-3.5, -4.0])
    rejected = torch.tensor([[-6.0, 0.0, -4.0, 0.0], [-7.0, -5.5, 0.0, -4.5]])
    ref_rejected = torch.tensor([[-5.0, 0.0, -4.5, 0.0], [-6.0, -6.0, 0.0, -5.0]])
    mask = torch.tensor([[True, False, True, False], [True, True, False, True]])
    return chosen, rejected, ref_chosen, ref_rejected, mask


def test_pair_losses_match_hand_values(batch):
    chosen, rejected, ref_chosen, ref_rejected, mask = batch
    beta = 0.5
    pair = L.dimension_pair_losses(chosen, rejected, ref_chosen, ref_rejected, mask, beta)
    # record 0: chosen log-ratio 0.5; A: rejected log-ratio -1.0 → Δ = 1.5; E: 0.5 → Δ = 0.0
    assert pair[0, 0].item() == pytest.approx(-_logsig(0.75), abs=1e-12)
    assert pair[0, 2].item() == pytest.approx(math.log(2), abs=1e-12)
    # record 1: chosen log-ratio -1.0; A: -1.0 → Δ = 0; T: 0.5 → Δ = -1.5; C: 0.5 → Δ = -1.5
    assert pair[1, 0].item() == pytest.approx(math.log(2), abs=1e-12)
    assert pair[1, 1].item() == pytest.approx(-_logsig(-0.75), abs=1e-12)
    assert pair[1, 3].item() == pytest.approx(-_logsig(-0.75), abs=1e-12)
    # inactive entries are exactly zero
    assert pair[0, 1].item() == 0.0 and pair[0, 3].item() == 0.0 and pair[1, 2].item() == 0.0


def test_dimension_means_only_over_active_records(batch):
    chosen, rejected, ref_chosen, ref_rejected, mask = batch
    pair = L.dimension_pair_losses(chosen, rejected, ref_chosen, ref_rejected, mask, 0.5)
    sums, counts = L.dimension_loss_sums(pair, mask)
    assert counts.tolist() == [2, 1, 1, 1]
    dim_losses, present = L.reduce_dimension_losses(sums, counts)
    assert dim_losses[0].item() == pytest.approx((-_logsig(0.75) + math.log(2)) / 2, abs=1e-12)
    assert dim_losses[1].item() == pytest.approx(-_logsig(-0.75), abs=1e-12)
    assert present.all()
    # a dimension with no active record is absent and reported as 0
    dl, pr = L.reduce_dimension_losses(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]))
    assert dl.tolist() == [0.5, 0.0] and pr.tolist() == [True, False]


def test_multineg_is_mean_over_present_dimensions():
    dim_losses = torch.tensor([0.2, 0.4, 0.9, 0.0])
    present = torch.tensor([True, True, True, False])
    assert L.multineg_dpo_loss(dim_losses, present).item() == pytest.approx(0.5)
    w = torch.tensor([1.0, 1.0, 2.0, 5.0])  # weight of an absent dimension does not count
    assert L.multineg_dpo_loss(dim_losses, present, w).item() == pytest.approx(
        (0.2 + 0.4 + 1.8) / 4
    )


def test_lagrangian_value_and_gradient_by_autograd():
    dim_losses = torch.tensor([0.7, 0.3, 0.6, 0.2], requires_grad=True)
    lambdas = torch.tensor([0.5, 0.0, 2.0, 1.0])
    present = torch.tensor([True, True, True, True])
    eps = 0.4
    value = L.lagrangian_loss(dim_losses, lambdas, eps, present)
    hand = (0.7 + 0.3 + 0.6 + 0.2) / 4 + 0.5 * 0.3 + 0 + 2.0 * 0.2 + 1.0 * (-0.2)
    assert value.item() == pytest.approx(hand, abs=1e-12)
    value.backward()
    coef = L.lagrangian_coefficients(lambdas, present)
    assert torch.allclose(dim_losses.grad, coef, atol=1e-12)
    assert torch.allclose(coef, torch.tensor([0.75, 0.25, 2.25, 1.25]))


def test_lagrangian_with_zero_multipliers_equals_multineg():
    dim_losses = torch.tensor([0.7, 0.3, 0.6, 0.2])
    present = torch.tensor([True, False, True, True])
    assert L.lagrangian_loss(dim_losses, torch.zeros(4), 100.0, present).item() == pytest.approx(
        L.multineg_dpo_loss(dim_losses, present).item()
    )


def test_dual_update_projects_and_skips_absent():
    lambdas = torch.tensor([0.1, 0.5, 9.9, 0.3])
    dim_losses = torch.tensor([0.3, 0.9, 0.9, 0.9])
    present = torch.tensor([True, True, True, False])
    new = L.dual_update(lambdas, dim_losses, 0.5, 1.0, present=present, lambda_max=10.0)
    # A: 0.1 + (0.3 - 0.5) = -0.1 → 0; T: 0.5 + 0.4 = 0.9; E: 9.9 + 0.4 → clipped 10; C absent → unchanged
    assert torch.allclose(new, torch.tensor([0.0, 0.9, 10.0, 0.3]))
    per_dim_eps = torch.tensor([0.2, 0.5, 0.5, 0.5])
    assert L.dual_update(lambdas, dim_losses, per_dim_eps, 1.0)[0].item() == pytest.approx(0.2)


def _tiny_task_losses(seed: int = 0):
    """A small float64 network with three task losses whose gradients conflict."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)
    ).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    out = net(x)
    t = torch.randn(5, generator=g, dtype=torch.float64)
    task_losses = [
        ((out[:, 0] - 3.0 - t) ** 2).mean(),  # pulls output 0 up ...
        ((out[:, 0] + 3.0 + t) ** 2).mean(),  # ... and down: conflicting by construction
        ((out[:, 2] - out[:, 1] - t) ** 2).mean() + 0.5 * out[:, 0].mean(),
    ]
    return net, task_losses


def _explicit_pcgrad(grads: list[torch.Tensor], orders: list[list[int]]) -> torch.Tensor:
    """PCGrad as in Yu et al. (2020), Algorithm 1, on explicit flattened gradients (sum of projected)."""
    projected = []
    for i, g_i in enumerate(grads):
        g = g_i.clone()
        for j in orders[i]:
            if j == i:
                continue
            dot = g @ grads[j]
            if dot < 0:
                g = g - dot / (grads[j] @ grads[j]) * grads[j]
        projected.append(g)
    return torch.stack(projected).sum(0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pcgrad_from_inner_products_equals_explicit_projection(seed):
    net, task_losses = _tiny_task_losses(seed)
    params = list(net.parameters())
    grads = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(l, params, retain_graph=True)])
        for l in task_losses
    ]
    gram = torch.stack(grads) @ torch.stack(grads).T
    assert (gram < 0).any(), "the test network must produce conflicting gradients"
    orders = [
        torch.randperm(3, generator=torch.Generator().manual_seed(seed * 10 + i)).tolist()
        for i in range(3)
    ]
    explicit = _explicit_pcgrad(grads, orders)

    weights = L.pcgrad_weights(gram, orders=orders, reduction="sum")
    net.zero_grad()
    sum(w * l for w, l in zip(weights, task_losses)).backward()  # one backward of the weighted sum
    via_weights = torch.cat([p.grad.reshape(-1) for p in params])
    assert torch.allclose(via_weights, explicit, atol=1e-10, rtol=0)
    # "mean" is the same direction divided by the number of tasks
    mean_w = L.pcgrad_weights(gram, orders=orders, reduction="mean")
    assert torch.allclose(mean_w * 3, weights, atol=1e-12)


def test_pcgrad_without_conflict_is_plain_mean_and_skips_absent():
    gram = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.1], [0.0, 0.1, 1.0]])
    assert torch.allclose(L.pcgrad_weights(gram), torch.full((3,), 1 / 3))
    gram_conflict = torch.tensor([[1.0, -0.5, 0.0], [-0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    w = L.pcgrad_weights(gram_conflict, present=torch.tensor([True, False, True]))
    assert w[1].item() == 0.0 and torch.allclose(w, torch.tensor([0.5, 0.0, 0.5]))
    # two conflicting tasks: g1' = g1 + 0.5 g2, g2' = g2 + 0.5 g1 → weights (1.5, 1.5) summed
    assert torch.allclose(
        L.pcgrad_weights(gram_conflict[:2, :2], reduction="sum"), torch.tensor([1.5, 1.5])
    )


def test_safe_rlhf_objective_and_coefficients_by_autograd():
    dim_losses = torch.tensor([0.6, 0.4, 0.3, 0.5], requires_grad=True)  # A, T, E, C
    primary = torch.tensor([False, False, True, True])
    lam = 3.0
    peer = dim_losses[2:].mean()
    dignity = dim_losses[:2].mean()
    value = L.safe_rlhf_loss(peer, dignity, lam)
    assert value.item() == pytest.approx((0.4 + 3.0 * 0.5) / 4.0)
    value.backward()
    coef = L.safe_rlhf_coefficients(torch.ones(4, dtype=torch.bool), primary, lam)
    assert torch.allclose(dim_losses.grad, coef.to(dim_losses.grad), atol=1e-12)


def test_safe_rlhf_lambda_update_log_and_projected():
    lam = torch.tensor(2.0)
    # log λ ← log λ + lr (cost − d) λ : log 2 + 0.1 * 0.3 * 2
    new = L.safe_rlhf_lambda_update(lam, 0.8, 0.5, 0.1, log_parametrised=True)
    assert new.item() == pytest.approx(2.0 * math.exp(0.06), rel=1e-12)
    # the log step equals one SGD step on −(cost − d)·exp(log λ) w.r.t. log λ
    log_lam = torch.tensor(math.log(2.0), requires_grad=True)
    (-(0.8 - 0.5) * torch.exp(log_lam)).backward()
    assert math.exp(math.log(2.0) - 0.1 * log_lam.grad.item()) == pytest.approx(
        new.item(), rel=1e-12
    )
    assert L.safe_rlhf_lambda_update(lam, 0.1, 0.5, 10.0, log_parametrised=False).item() == 0.0
    assert L.safe_rlhf_lambda_update(lam, 0.1, 0.5, 0.1, log_parametrised=True).item() > 0


def test_modpo_margins_and_loss_by_hand(batch):
    chosen, rejected, ref_chosen, ref_rejected, mask = batch
    chosen_r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    rejected_r = torch.zeros(2, 4, 4)
    rejected_r[0, 0] = torch.tensor(
        [0.0, 1.0, 1.0, 1.0]
    )  # rewards of rejection A under models A..C
    w = torch.full((4,), 0.25)
    margins = L.modpo_combined_margins(chosen_r, rejected_r, w)
    # record 0, slot A: Σ_{j≠A} 0.25 (r_j(y_w) − r_j(y_A)) = 0.25 (1 + 2 + 3)
    assert margins[0, 0].item() == pytest.approx(1.5)
    assert margins[1].abs().sum().item() == 0.0
    pair = L.modpo_pair_losses(chosen, rejected, ref_chosen, ref_rejected, mask, 0.5, margins, w)
    # Δ_0A = 1.5, β = 0.5: −log σ((0.75 − 1.5) / 0.25)
    assert pair[0, 0].item() == pytest.approx(-_logsig(-3.0), abs=1e-12)
    # zero margins and w = 1 reduce MODPO to DPO
    plain = L.modpo_pair_losses(
        chosen, rejected, ref_chosen, ref_rejected, mask, 0.5, torch.zeros(2, 4), torch.ones(4)
    )
    assert torch.allclose(
        plain, L.dimension_pair_losses(chosen, rejected, ref_chosen, ref_rejected, mask, 0.5)
    )


def test_pair_loss_gradient_matches_autograd_of_dpo_formula():
    chosen = torch.tensor([-2.0, -1.0], requires_grad=True)
    rejected = torch.tensor([[-3.0, -1.5, 0.0, 0.0], [-2.0, 0.0, -0.5, 0.0]], requires_grad=True)
    ref_c = torch.tensor([-2.2, -1.1])
    ref_r = torch.tensor([[-2.9, -1.2, 0.0, 0.0], [-2.1, 0.0, -0.7, 0.0]])
    mask = torch.tensor([[True, True, False, False], [True, False, True, False]])
    beta = 0.3
    pair = L.dimension_pair_losses(chosen, rejected, ref_c, ref_r, mask, beta)
    sums, counts = L.dimension_loss_sums(pair, mask)
    dim_losses, present = L.reduce_dimension_losses(sums, counts)
    L.multineg_dpo_loss(dim_losses, present).backward()
    # d/d chosen_b of −log σ(βΔ) = −β σ(−βΔ), averaged over the dimensions' records
    delta = (chosen.detach() - ref_c).unsqueeze(1) - (rejected.detach() - ref_r)
    g = -beta * torch.sigmoid(-beta * delta) * mask / counts.clamp(min=1) / present.sum()
    assert torch.allclose(chosen.grad, g.sum(1), atol=1e-12)
    assert torch.allclose(rejected.grad, -g, atol=1e-12)

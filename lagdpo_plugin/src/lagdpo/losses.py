"""The objectives of Lag-DPO and its baselines, as pure torch functions.

Nothing here knows about models, tokenizers or trainers: every function takes log-probabilities
(or per-dimension losses) as tensors and returns tensors, so each one is tested on small hand-made
inputs. Shapes use B for records in a batch and K for persona dimensions (K = 4: A, T, E, C).

Notation (DESIGN.md §6). For record b and dimension k, with chosen completion y_w and the
rejection y_k that fails exactly dimension k,

    Δ_bk = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_k|x) − log π_ref(y_k|x)]
    ℓ_bk = −log σ(β Δ_bk)
    L_k  = mean of ℓ_bk over the records where k is active.

A dimension with no active record in the batch has no L_k; ``present`` marks the dimensions that
have one, and every reduction below skips the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "dimension_loss_sums",
    "dimension_pair_losses",
    "dual_update",
    "lagrangian_coefficients",
    "lagrangian_loss",
    "modpo_combined_margins",
    "modpo_pair_losses",
    "multineg_dpo_loss",
    "pair_logratio_margins",
    "pcgrad_weights",
    "reduce_dimension_losses",
    "safe_rlhf_coefficients",
    "safe_rlhf_lambda_update",
    "safe_rlhf_loss",
]


def pair_logratio_margins(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """Δ_bk: chosen log-ratio minus the log-ratio of rejection k, shape (B, K).

    ``policy_chosen_logps`` and ``ref_chosen_logps`` have shape (B,), the rejected ones (B, K).
    """
    chosen = (policy_chosen_logps - ref_chosen_logps).unsqueeze(-1)
    rejected = policy_rejected_logps - ref_rejected_logps
    return chosen - rejected


def dimension_pair_losses(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-pair DPO losses ℓ_bk = −log σ(β Δ_bk), zero where ``mask`` (B, K) is False."""
    delta = pair_logratio_margins(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    losses = -F.logsigmoid(beta * delta)
    return torch.where(mask.bool(), losses, torch.zeros_like(losses))


def dimension_loss_sums(
    pair_losses: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the pair losses and number of active records per dimension, each of shape (K,).

    Sums and counts (rather than means) are what must be added up across micro-batches and
    processes to get the global L_k; see :func:`reduce_dimension_losses`.
    """
    mask = mask.bool()
    sums = torch.where(mask, pair_losses, torch.zeros_like(pair_losses)).sum(dim=0)
    counts = mask.sum(dim=0).to(pair_losses.dtype)
    return sums, counts


def reduce_dimension_losses(
    sums: torch.Tensor, counts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_k = sums_k / counts_k and the ``present`` mask (counts_k > 0); L_k is 0 where absent."""
    present = counts > 0
    losses = torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums))
    return losses, present


def _normalised_weights(
    present: torch.Tensor, weights: torch.Tensor | None, like: torch.Tensor
) -> torch.Tensor:
    """Dimension weights restricted to the present dimensions and summing to one."""
    w = torch.ones_like(like) if weights is None else weights.to(like)
    w = torch.where(present.bool(), w, torch.zeros_like(w))
    total = w.sum()
    if total <= 0:
        return torch.zeros_like(w)
    return w / total


def multineg_dpo_loss(
    dim_losses: torch.Tensor, present: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-Neg DPO: the (weighted) mean of L_k over the present dimensions."""
    return (_normalised_weights(present, weights, dim_losses) * dim_losses).sum()


def lagrangian_coefficients(
    lambdas: torch.Tensor, present: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """∂(Lagrangian)/∂L_k = w_k + λ_k for present k (w normalised to sum to one), else 0."""
    w = _normalised_weights(present, weights, lambdas)
    return torch.where(present.bool(), w + lambdas, torch.zeros_like(lambdas))


def lagrangian_loss(
    dim_losses: torch.Tensor,
    lambdas: torch.Tensor,
    epsilon: torch.Tensor | float,
    present: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lag-DPO: mean_k L_k + Σ_k λ_k (L_k − ε_k) over the present dimensions.

    λ is treated as a constant (no gradient flows into it); ε may be a scalar or per dimension.
    """
    lambdas = lambdas.detach().to(dim_losses)
    eps = torch.as_tensor(epsilon, dtype=dim_losses.dtype, device=dim_losses.device)
    penalty = torch.where(
        present.bool(), lambdas * (dim_losses - eps), torch.zeros_like(dim_losses)
    )
    return multineg_dpo_loss(dim_losses, present, weights) + penalty.sum()


def dual_update(
    lambdas: torch.Tensor,
    dim_losses: torch.Tensor,
    epsilon: torch.Tensor | float,
    dual_lr: float,
    present: torch.Tensor | None = None,
    lambda_max: float | None = None,
) -> torch.Tensor:
    """Projected dual ascent: λ_k ← clip(λ_k + η_λ (L_k − ε_k), 0, λ_max) for present k.

    Dimensions absent from the step keep their multiplier.
    """
    eps = torch.as_tensor(epsilon, dtype=lambdas.dtype, device=lambdas.device)
    stepped = (lambdas + dual_lr * (dim_losses.detach().to(lambdas) - eps)).clamp(min=0.0)
    if lambda_max is not None:
        stepped = stepped.clamp(max=lambda_max)
    if present is None:
        return stepped
    return torch.where(present.bool(), stepped, lambdas)


def pcgrad_weights(
    gram: torch.Tensor,
    present: torch.Tensor | None = None,
    orders: list[list[int]] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """PCGrad (Yu et al. 2020) expressed as weights on the task losses.

    PCGrad replaces each task gradient g_i by g_i^PC, obtained by visiting the other tasks j in
    some order and, whenever g_i^PC · g_j < 0, subtracting (g_i^PC · g_j / ‖g_j‖²) g_j; the update
    direction is the sum (or mean) of the g_i^PC. Every g_i^PC stays in the span of the original
    gradients, g_i^PC = Σ_m C_im g_m, and all the inner products it needs are C_i · G[:, j] with
    G the K×K Gram matrix G_ij = g_i · g_j. So the whole projection runs on G, and the update
    equals the gradient of Σ_m w_m L_m with w = Σ_i C_i (÷K for ``"mean"``): one backward pass of a
    weighted loss, which also works unchanged under data parallelism.

    Args:
        gram: (K, K) matrix of gradient inner products.
        present: (K,) bool; absent tasks are neither projected nor projected onto, and get weight 0.
        orders: for each task i, the order in which the other tasks are visited (PCGrad shuffles
            it at random each step; pass the same shuffled orders on every process). Default:
            ascending index order.
        reduction: "mean" (weights sum to 1 before projection, matching Multi-Neg DPO's mean) or
            "sum" (the original paper's sum).
    """
    k = gram.shape[0]
    if present is None:
        present = torch.ones(k, dtype=torch.bool, device=gram.device)
    active = [i for i in range(k) if bool(present[i])]
    coef = torch.eye(k, dtype=gram.dtype, device=gram.device)
    for i in active:
        order = orders[i] if orders is not None else list(range(k))
        for j in order:
            if j == i or j not in active:
                continue
            dot = coef[i] @ gram[:, j]
            norm_sq = gram[j, j]
            if dot < 0 and norm_sq > 0:
                coef[i, j] = coef[i, j] - dot / norm_sq
    weights = (
        coef[active].sum(dim=0) if active else torch.zeros(k, dtype=gram.dtype, device=gram.device)
    )
    if reduction == "mean" and active:
        weights = weights / len(active)
    elif reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return weights


def safe_rlhf_loss(
    primary_loss: torch.Tensor, cost_loss: torch.Tensor, lam: torch.Tensor | float
) -> torch.Tensor:
    """Safe-RLHF style objective (Dai et al. 2023): (L_primary + λ L_cost) / (1 + λ).

    Here the primary objective is Peer (mean of L_E, L_C) and the constraint is Dignity (mean of
    L_A, L_T) ≤ threshold; λ is a constant for the primal step.
    """
    lam = torch.as_tensor(lam, dtype=primary_loss.dtype, device=primary_loss.device).detach()
    return (primary_loss + lam * cost_loss) / (1.0 + lam)


def safe_rlhf_coefficients(
    present: torch.Tensor, primary: torch.Tensor, lam: torch.Tensor | float
) -> torch.Tensor:
    """∂(safe_rlhf_loss)/∂L_k for primary dims {E, C} and constrained dims {A, T} (mean within each group).

    ``primary`` is a (K,) bool mask of the primary dimensions; a group with no present dimension
    drops out (its loss is taken as 0).
    """
    lam = torch.as_tensor(lam, dtype=torch.float64).item()
    present = present.bool()
    primary = primary.bool().to(present.device)
    coef = torch.zeros(present.shape, dtype=torch.float64, device=present.device)
    p = present & primary
    c = present & ~primary
    if p.any():
        coef = torch.where(p, coef + 1.0 / p.sum() / (1.0 + lam), coef)
    if c.any():
        coef = torch.where(c, coef + lam / c.sum() / (1.0 + lam), coef)
    return coef


def safe_rlhf_lambda_update(
    lam: torch.Tensor,
    cost: torch.Tensor | float,
    threshold: float,
    lr: float,
    log_parametrised: bool = True,
    lambda_max: float | None = None,
) -> torch.Tensor:
    """One multiplier step for the Dignity constraint cost ≤ threshold.

    Log-parametrised (Safe-RLHF): store log λ and take an SGD step on −(cost − threshold)·exp(log λ),
    i.e. log λ ← log λ + lr (cost − threshold) λ; λ stays positive. Otherwise projected ascent
    λ ← max(0, λ + lr (cost − threshold)). ``lam`` is λ itself in both cases; ``cost`` is usually
    a moving average of the constraint loss.
    """
    cost = torch.as_tensor(cost, dtype=lam.dtype, device=lam.device)
    violation = cost - threshold
    if log_parametrised:
        log_lam = torch.log(lam.clamp(min=1e-12)) + lr * violation * lam
        new = torch.exp(log_lam)
    else:
        new = (lam + lr * violation).clamp(min=0.0)
    if lambda_max is not None:
        new = new.clamp(max=lambda_max)
    return new


def modpo_combined_margins(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """MODPO margin of each pair from the *other* objectives' reward models.

    ``chosen_rewards`` (B, K): r_j(y_w) for reward model j; ``rejected_rewards`` (B, K, K):
    [b, k, j] = r_j(y_k), the reward of rejection k under reward model j; ``weights`` (K,) the
    objective weights w_j. Returns (B, K): M_bk = Σ_{j≠k} w_j (r_j(y_w) − r_j(y_k)).
    """
    k = chosen_rewards.shape[-1]
    diff = chosen_rewards.unsqueeze(1) - rejected_rewards  # (B, K_slot, K_model)
    off_diag = 1.0 - torch.eye(k, dtype=diff.dtype, device=diff.device)
    return (diff * off_diag * weights.to(diff).unsqueeze(0)).sum(dim=-1)


def modpo_pair_losses(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    margins: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """MODPO (Zhou et al. 2024) per-pair loss, zero where ``mask`` is False.

    ℓ_bk = −log σ((1/w_k) [β Δ_bk − M_bk]): the pair (y_w, y_k) carries the preference of
    dimension k, whose weight w_k plays MODPO's w₀, and M_bk (see :func:`modpo_combined_margins`)
    carries the other objectives.
    """
    delta = pair_logratio_margins(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    w0 = weights.to(delta).unsqueeze(0)
    losses = -F.logsigmoid((beta * delta - margins.to(delta)) / w0)
    return torch.where(mask.bool(), losses, torch.zeros_like(losses))

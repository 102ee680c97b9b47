"""Hidden-state divergence between free running and teacher forcing, and the local amplification of the step map.

Per target position t, D_t = ||h_FR(t) - h_TF(t)||_2: the decoder's hidden state along its own greedy path against
along the gold path, on the same source. A fit of the drift model D_t = a * D_(t-1) + b (`theory`) reads `a` as
the amplification of a perturbation from one step to the next and `b` as the divergence injected per step (from
fed tokens that differ); with a < 1 the divergence settles at b / (1 - a), with a > 1 it grows geometrically.
`jacobian_amplification` estimates `a` locally, as the largest singular value of d state_(t+1) / d state_t.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.rollout import Gold, Greedy, rollout
from unforced.tasks.base import Task
from unforced.theory import fit_linear_divergence


@torch.no_grad()
def hidden_divergence(model, task: Task, split: str = "test", limit: int | None = None,
                      limits: dict | None = None, batch_size: int = 64, tail: int | None = None) -> dict:
    """Per-position L2 distance between free-running and teacher-forced decoder hidden states, and its drift fit.

    Both rollouts run the full gold width (stop_at_eos=False) on the same batch; positions outside the gold mask
    are left out. Returns:
        positions, mean, std, count: per target position, over sequences that reach it;
        fit: {"a", "b", "plateau_predicted" (b / (1 - a) when a < 1), "growth_rate" (a when a > 1)}
            from `theory.fit_linear_divergence` over every sequence's curve, or None when the curves are
            constant (a model whose greedy path is the gold path has D = 0 everywhere);
        plateau_measured: mean of `mean` over the last `tail` positions (default a quarter, at least one).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    limits = limits or {}
    curves: list[np.ndarray] = []  # one (time,) curve per sequence, NaN outside the gold mask
    width = 0
    try:
        for batch in task.batches(split, batch_size, limit=limit, **limits):
            batch = batch.to(device)
            memory = model.encode(batch.source, batch.source_mask)
            forced = rollout(model, memory, Gold(), gold=batch.gold, stop_at_eos=False)
            free = rollout(model, memory, Greedy(), gold=batch.gold, stop_at_eos=False)
            distance = (free.hidden.float() - forced.hidden.float()).norm(dim=-1)  # (batch, time)
            distance = distance.masked_fill(~batch.gold_mask, float("nan"))
            curves += list(distance.cpu().double().numpy())
            width = max(width, distance.shape[1])
    finally:
        model.train(was_training)
    if not curves:
        raise UnforcedError(f"split {split!r} holds no sequences")
    table = np.full((len(curves), width), np.nan)  # (sequences, time)
    for row, curve in enumerate(curves):
        table[row, : curve.size] = curve
    count = np.isfinite(table).sum(0)
    keep = count > 0
    table = table[:, keep]
    mean = np.nanmean(table, axis=0)
    std = np.nanstd(table, axis=0)
    try:
        fitted = fit_linear_divergence(table)
        fit = {"a": fitted.a, "b": fitted.b, "plateau_predicted": fitted.plateau_predicted,
               "growth_rate": fitted.growth_rate}
    except UnforcedError:
        fit = None
    tail = tail or max(1, mean.size // 4)
    return {
        "positions": np.flatnonzero(keep).tolist(),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "count": count[keep].astype(int).tolist(),
        "fit": fit,
        "plateau_measured": float(mean[-tail:].mean()),
    }


def jacobian_amplification(model, memory, state, token: Tensor, iterations: int = 20, seed: int = 0) -> float | None:
    """Largest singular value of J = d state_(t+1) / d state_t of the step map at (`state`, `token`).

    Power iteration on J^T J with autograd (`torch.autograd.functional.jvp` then `vjp`), from a seeded random
    start: v <- J^T J v / ||J^T J v||, sigma = ||J v||. For a batch the map is block-diagonal over rows, so this
    is the largest over rows. > 1 means a small state perturbation grows in one step (locally), < 1 that it
    shrinks. Only for models whose state is one fixed-size tensor (the RNNs here: (batch, layers, hidden), LSTM h
    and c side by side); a Transformer's state is a KV cache that grows by one entry each step, so it has no
    fixed-size step map, and this returns None. Dropout is switched off for the estimate.
    """
    if not isinstance(state, Tensor):
        return None
    if iterations < 1:
        raise UnforcedError(f"iterations must be at least 1, got {iterations}")
    was_training = model.training
    model.eval()
    state = state.detach().float()

    def step_map(current: Tensor) -> Tensor:
        return model.step(memory, current, token)[2]

    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(state.shape, generator=generator, dtype=state.dtype).to(state.device)
    direction = direction / direction.norm()
    sigma = 0.0
    try:
        with torch.enable_grad():
            for _ in range(iterations):
                _, pushed = torch.autograd.functional.jvp(step_map, state, direction)  # J v
                _, pulled = torch.autograd.functional.vjp(step_map, state, pushed)  # J^T J v
                norm = pulled.norm()
                if float(norm) == 0.0:
                    return 0.0
                direction = pulled / norm
            _, pushed = torch.autograd.functional.jvp(step_map, state, direction)
            sigma = float(pushed.norm())
    finally:
        model.train(was_training)
    return sigma

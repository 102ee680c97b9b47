"""Loss at several teacher-forcing ratios: the curve between teacher forcing (ratio 1) and free running (ratio 0).

At ratio r every decoder input after <bos> is the gold token with probability r, else the model's own greedy
token (one coin per token, `Mix(r, Greedy(), per="token")`); every gold token is scored along that mixed path.
Ratio 1 gives the teacher-forced NLL and ratio 0 the free-running NLL of `diagnostics.gap.evaluate`.
"""

from __future__ import annotations

import torch

from unforced.errors import UnforcedError
from unforced.rollout import Greedy, Mix, rollout
from unforced.tasks.base import Task


@torch.no_grad()
def ratio_sweep(model, task: Task, split: str = "test", ratios=(0.0, 0.25, 0.5, 0.75, 1.0),
                limit: int | None = None, limits: dict | None = None, seed: int = 0,
                batch_size: int = 64) -> dict:
    """Mean gold-token NLL and token accuracy of `model` on `split` at each teacher-forcing ratio.

    The ratio is the probability of feeding the gold token. NLL = -sum log p(y_t | mixed prefix) / #tokens over
    the gold mask (<eos> included); token accuracy = share of gold positions where the argmax equals y_t. Every
    ratio draws its coins from a generator seeded with `seed` (common random numbers across ratios).
    Returns {"ratios": [...], "nll": [...], "token_acc": [...]}.
    """
    ratios = [float(r) for r in ratios]
    if not ratios:
        raise UnforcedError("ratio_sweep needs at least one ratio")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    limits = limits or {}
    nll_out, accuracy_out = [], []
    try:
        for ratio in ratios:
            feed = Mix(ratio, Greedy(), per="token")
            generator = torch.Generator(device=device).manual_seed(seed)
            nll_sum, correct, count = 0.0, 0.0, 0.0
            for batch in task.batches(split, batch_size, limit=limit, **limits):
                batch = batch.to(device)
                memory = model.encode(batch.source, batch.source_mask)
                mixed = rollout(model, memory, feed, gold=batch.gold, generator=generator, stop_at_eos=False,
                                keep_hidden=False)
                mask = batch.gold_mask.float()  # (batch, time)
                nll = -mixed.logits.float().log_softmax(-1).gather(2, batch.gold.unsqueeze(-1)).squeeze(-1)
                nll_sum += float((nll * mask).sum())
                correct += float(((mixed.tokens == batch.gold).float() * mask).sum())
                count += float(mask.sum())
            if count == 0:
                raise UnforcedError(f"split {split!r} holds no target tokens")
            nll_out.append(nll_sum / count)
            accuracy_out.append(correct / count)
    finally:
        model.train(was_training)
    return {"ratios": ratios, "nll": nll_out, "token_acc": accuracy_out}

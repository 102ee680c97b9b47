"""What the task benchmarks (captioning, speech) share: cross-entropy until validation stalls, then branches of
equal steps from that model, each trained by the same loop over the same batches; and the spread over seeds."""

from __future__ import annotations

import statistics
import time

import torch

from unforced.diagnostics import evaluate
from unforced.switch import Patience
from unforced.tasks.base import Task


class RewardClock:
    """The reward, timed: seconds spent inside it."""

    def __init__(self, reward):
        self.reward, self.seconds = reward, 0.0

    def __call__(self, hypotheses, references):
        start = time.perf_counter()
        try:
            return self.reward(hypotheses, references)
        finally:
            self.seconds += time.perf_counter() - start


def train(model, strategy, task: Task, steps: int, batch: int, lr: float, seed: int, start: int = 0,
          patience: Patience | None = None, eval_every: int = 0, valid_limit: int | None = None) -> dict:
    """Up to `steps` optimiser steps (Adam) of `strategy` over seeded shuffles of the training split; with
    `patience`, validated every `eval_every` steps, stopping on a stall with the best weights loaded. Returns the
    seconds taken (validation included) and the steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    began, done, epoch = time.perf_counter(), 0, start
    stalled = False
    while done < steps and not stalled:
        for rows in task.batches("train", batch, shuffle=True, seed=seed * 1000 + epoch):
            if done == steps or stalled:
                break
            output = strategy.loss(model, rows, start + done)
            optimizer.zero_grad()
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            done += 1
            if patience is not None and (done % eval_every == 0 or done == steps):
                stalled = patience.update(evaluate(model, task, "valid", limit=valid_limit), done, model)
                model.train()
        epoch += 1
    best = patience.best_weights() if patience is not None else None
    if best is not None:  # read once: the file holds the whole model
        model.load_state_dict(best)
    model.eval()
    return {"seconds": time.perf_counter() - began, "steps": done}


def relative(value: float, base: float) -> float | None:
    """value / base - 1; None when the base scores 0 (a model too small to caption at all)."""
    return value / base - 1 if base > 0 else None


def spread(values: list[float | None]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "values": []}
    return {"mean": round(statistics.mean(values), 4),
            "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4), "values": values}


__all__ = ["RewardClock", "relative", "spread", "train"]

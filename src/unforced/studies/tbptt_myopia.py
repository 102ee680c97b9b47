"""TBPTT myopia: truncated backpropagation through time cannot teach a decoder a dependency longer than its cut.

The task, a "delayed echo": the source is one constant token, so attention carries nothing; the target is
`length` symbols whose first `delay` (D) are drawn at random and whose later ones repeat the symbol D places back,
y_t = y_(t-D). Under teacher forcing the decoder is fed y_(t-1) at step t, so to predict y_t it must keep the input
fed at step t-D+1 in its own recurrent state for D-1 steps.

Truncated backpropagation (Williams and Peng 1990) with truncation L detaches the state every L steps, so the
loss at step t sends gradient only to steps of its own chunk. A write D-1 steps back lies in the same chunk only
when L >= D (and then only for a share (L-D+1)/L of positions); with L < D no gradient ever asks the state to keep
the token, and what the model remembers is whatever its recurrence happens to keep. We train a tiny GRU with the
`teacher_forcing` strategy with `tbptt` = L (a gold-fed rollout that detaches the state every L steps) for each
(D, L), and measure the teacher-forced accuracy on the positions the rule decides (t >= D; the first D are chance
by construction).
"""

from __future__ import annotations

import html
import json
import random
import time
from pathlib import Path

import torch

from unforced.distributed import choose_device
from unforced.models import ModelConfig, build_model
from unforced.report.page import page
from unforced.runfiles import atomic_write_text
from unforced.strategies import make_strategy
from unforced.tasks.base import Task
from unforced.tasks.tokenizers import VocabTokenizer

LETTERS = "abcdefghijklmnop"
SOURCE_TOKEN = "go"

SETTINGS = {
    # quick: < 60 s on 2 cores (measured ~25 s on one thread); full: < 6 minutes.
    True: {"delays": (2, 6), "truncations": (1, 2, 4, 8), "steps": 150, "learning_rate": 0.02},
    False: {"delays": (2, 4, 6), "truncations": (1, 2, 4, 8), "steps": 600, "learning_rate": 0.01},
}


def delayed_echo_task(delay: int, length: int = 12, symbols: int = 4, size: int = 2400, seed: int = 0) -> Task:
    """Source "go"; target of `length` symbols, the first `delay` random, then y_t = y_(t-delay)."""
    rng = random.Random(seed)
    alphabet = list(LETTERS[:symbols])

    def make() -> tuple[str, str]:
        target = [rng.choice(alphabet) for _ in range(delay)]
        while len(target) < length:
            target.append(target[-delay])
        return SOURCE_TOKEN, " ".join(target)

    pairs = [make() for _ in range(size)]
    held = max(1, size // 12)
    tokenizer = VocabTokenizer(alphabet + [SOURCE_TOKEN], "word")
    return Task(name=f"delayed-echo-{delay}", train=pairs[2 * held:], valid=pairs[held:2 * held],
                test=pairs[:held], source_tokenizer=tokenizer, target_tokenizer=tokenizer, metric="exact_match",
                description=f"repeat the symbol {delay} places back; the source carries nothing",
                settings={"delay": delay, "length": length, "symbols": symbols, "size": size, "seed": seed})


@torch.no_grad()
def decided_accuracy(model, task: Task, delay: int) -> float:
    """Teacher-forced token accuracy on target positions delay .. length-1 (the ones y_t = y_(t-D) decides)."""
    model.eval()
    batch = task.collate(task.test).to(next(model.parameters()).device)
    memory = model.encode(batch.source, batch.source_mask)
    choice = model.forced(memory, batch.inputs).logits.argmax(-1)  # (batch, time)
    length = task.settings["length"]
    return float((choice == batch.gold)[:, delay:length].float().mean())


def train_one(delay: int, truncation: int | None, steps: int, learning_rate: float, seed: int = 0,
              hidden: int = 32, batch_size: int = 32, device: str = "auto") -> dict:
    """Train a tiny GRU on the delayed echo with truncation `truncation` (None: full backpropagation), on `device`
    (auto: CUDA where available)."""
    task = delayed_echo_task(delay, seed=seed)
    torch.manual_seed(seed)
    vocab = task.target_tokenizer.vocab_size
    model = build_model(ModelConfig(kind="gru", source_vocab=vocab, target_vocab=vocab, embedding=16,
                                    hidden=hidden, dropout=0.0)).to(choose_device(device))
    strategy = make_strategy("teacher_forcing", {"tbptt": truncation}, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed)).tolist()
    started = time.perf_counter()
    model.train()
    loss = float("nan")
    for step in range(steps):
        start = (step * batch_size) % max(1, len(order) - batch_size)
        batch = task.collate([task.train[i] for i in order[start:start + batch_size]]).to(choose_device(device))
        output = strategy.loss(model, batch, step)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss = float(output.loss.detach())
    return {"delay": delay, "truncation": truncation, "accuracy": decided_accuracy(model, task, delay),
            "final_loss": loss, "seconds": time.perf_counter() - started,
            "chance": 1.0 / task.settings["symbols"]}


def _label(truncation: int | None) -> str:
    return "full" if truncation is None else str(truncation)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(cells: list[dict]) -> dict:
    """Mean accuracy where the cut keeps the dependency out of reach (L < D) and where it does not (L >= D)."""
    cut = [c["accuracy"] for c in cells if c["truncation"] is not None and c["truncation"] < c["delay"]]
    reach = [c["accuracy"] for c in cells if c["truncation"] is not None and c["truncation"] >= c["delay"]]
    return {"mean_accuracy_truncation_below_delay": _mean(cut), "mean_accuracy_truncation_at_least_delay":
            _mean(reach), "cells_below": len(cut), "cells_at_least": len(reach)}


def draw(results: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    from unforced.report.figures import save_figure

    figure = Figure(figsize=(6, 4.2))
    axes = figure.add_subplot(1, 1, 1)
    truncations = results["truncations"]
    for index, delay in enumerate(results["delays"]):
        color = f"C{index}"
        rows = {c["truncation"]: c for c in results["cells"] if c["delay"] == delay}
        axes.plot(truncations, [rows[t]["accuracy"] for t in truncations], marker="o", color=color,
                  label=f"D = {delay}")
        if None in rows:
            axes.axhline(rows[None]["accuracy"], color=color, linestyle=":", linewidth=1,
                         label=f"D = {delay}, full backpropagation")
        axes.axvline(delay, color=color, linestyle="--", linewidth=0.8, alpha=0.6)
    axes.axhline(results["chance"], color="grey", linewidth=1, label="chance")
    axes.set_xscale("log", base=2)
    axes.set_xticks(truncations, [str(t) for t in truncations])
    axes.set(xlabel="truncation L (steps between state detaches)", ylabel="teacher-forced accuracy, t >= D",
             title="Delayed echo y_t = y_(t-D) under TBPTT", ylim=(0, 1.05))
    axes.legend(fontsize=7)
    return save_figure(figure, path)


def sentences(results: dict) -> list[str]:
    """Plain sentences computed from the numbers of this run."""
    summary = results["summary"]
    out = []
    below, reach = summary["mean_accuracy_truncation_below_delay"], summary["mean_accuracy_truncation_at_least_delay"]
    if below is not None and reach is not None:
        verdict = ("so a cut shorter than the dependency leaves it unlearned at this budget"
                   if reach - below > 0.1 else "so at this budget the cut made little difference")
        out.append(f"Where the truncation is shorter than the delay (L < D) the decided positions are predicted with "
                   f"mean accuracy {below:.2f} (chance {results['chance']:.2f}); where it is at least the delay "
                   f"(L >= D) with {reach:.2f}, {verdict}.")
    for delay in results["delays"]:
        rows = [c for c in results["cells"] if c["delay"] == delay and c["truncation"] is not None]
        best = max(rows, key=lambda c: c["accuracy"])
        worst = min(rows, key=lambda c: c["accuracy"])
        full = next((c for c in results["cells"] if c["delay"] == delay and c["truncation"] is None), None)
        tail = f"; full backpropagation reaches {full['accuracy']:.2f}" if full else ""
        out.append(f"D = {delay}: accuracy {worst['accuracy']:.2f} at L = {worst['truncation']} and "
                   f"{best['accuracy']:.2f} at L = {best['truncation']}{tail}.")
    return out


def write_report(results: dict, out_dir: Path) -> Path:
    rows = "".join(
        f"<tr><td>{c['delay']}</td><td>{_label(c['truncation'])}</td><td>{c['accuracy']:.3f}</td>"
        f"<td>{c['final_loss']:.3f}</td><td>{c['seconds']:.1f}</td></tr>" for c in results["cells"])
    text = " ".join(html.escape(s) for s in sentences(results))
    body = f"""<h1>TBPTT myopia</h1>
<p>A GRU decoder learns a delayed echo, y_t = y_(t-D), with nothing in the source; its state is detached every L
steps (truncated backpropagation). Accuracy is teacher-forced, on positions t &gt;= D, after
{results['steps']} steps per cell.</p>
<img src="figures/tbptt_myopia.png" alt="accuracy against truncation">
<p>{text}</p>
<table><tr><th>D</th><th>L</th><th>accuracy</th><th>final loss</th><th>train s</th></tr>{rows}</table>"""
    path = out_dir / "report.html"
    atomic_write_text(page("unforced study: TBPTT myopia", body), path)
    return path


def run_study(out_dir: Path, quick: bool = False, seed: int = 0, delays=None, truncations=None,
              steps: int | None = None, full_reference: bool = True, device: str = "auto") -> dict:
    """Train every (D, L) cell and write results.json, figures/tbptt_myopia.png and report.html to `out_dir`.

    `delays`, `truncations` and `steps` override the preset (quick: D in {2, 6}, L in {1, 2, 4, 8}, 150 steps);
    `full_reference` adds one untruncated run per delay."""
    preset = SETTINGS[bool(quick)]
    delays = tuple(delays or preset["delays"])
    truncations = tuple(truncations or preset["truncations"])
    steps = steps or preset["steps"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = []
    for delay in delays:
        for truncation in truncations + ((None,) if full_reference else ()):
            cells.append(train_one(delay, truncation, steps, preset["learning_rate"], seed=seed, device=device))
    results = {"study": "tbptt-myopia", "seed": seed, "quick": bool(quick), "steps": steps,
               "learning_rate": preset["learning_rate"], "delays": list(delays), "truncations": list(truncations),
               "chance": cells[0]["chance"], "strategy": "teacher_forcing", "cells": cells,
               "accuracy": {str(d): {_label(c["truncation"]): c["accuracy"] for c in cells if c["delay"] == d}
                            for d in delays}}
    results["summary"] = summarize(cells)
    results["sentences"] = sentences(results)
    draw(results, out_dir / "figures" / "tbptt_myopia.png")
    atomic_write_text(json.dumps(results, indent=1), out_dir / "results.json")
    write_report(results, out_dir)
    return results


__all__ = ["delayed_echo_task", "run_study", "train_one"]

"""Figures of a run directory, drawn with matplotlib's Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def per_position(results: dict, path: Path) -> Path:
    """Error rate and NLL per target position, teacher-forced (dashed) against free-running (solid)."""
    figure = Figure(figsize=(11, 4.2))
    error_axes, nll_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for index, (name, entry) in enumerate(results["strategies"].items()):
        color = f"C{index}"
        curves = entry["per_position"]
        positions = range(1, len(curves["tf_error"]) + 1)
        error_axes.plot(positions, curves["fr_error"], color=color, label=f"{name}: free-running")
        error_axes.plot(positions, curves["tf_error"], color=color, linestyle="--", label=f"{name}: teacher-forced")
        nll_axes.plot(positions, curves["fr_nll"], color=color, label=f"{name}: free-running")
        nll_axes.plot(positions, curves["tf_nll"], color=color, linestyle="--", label=f"{name}: teacher-forced")
    error_axes.set(xlabel="target position", ylabel="token error rate", title="Per-position error")
    nll_axes.set(xlabel="target position", ylabel="NLL of the gold token (nats)", title="Per-position NLL")
    error_axes.legend(fontsize=7)
    nll_axes.legend(fontsize=7)
    return _save(figure, path)


def training_curves(metrics: list[dict], path: Path) -> Path:
    """Training loss per step, and validation NLL teacher-forced (dashed) against free-running (solid)."""
    figure = Figure(figsize=(11, 4.2))
    loss_axes, valid_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    tags = list(dict.fromkeys(m.get("strategy") for m in metrics))
    for index, tag in enumerate(tags):
        color = f"C{index}"
        train = [m for m in metrics if m.get("strategy") == tag and "loss" in m]
        evals = [m for m in metrics if m.get("strategy") == tag and "eval" in m]
        if train:
            loss_axes.plot([m["step"] for m in train], [m["loss"] for m in train], color=color, label=tag)
        if evals:
            steps = [m["step"] for m in evals]
            valid_axes.plot(steps, [m["eval"]["fr_nll"] for m in evals], color=color, marker="o",
                            label=f"{tag}: free-running")
            valid_axes.plot(steps, [m["eval"]["tf_nll"] for m in evals], color=color, marker="o",
                            linestyle="--", label=f"{tag}: teacher-forced")
    loss_axes.set(xlabel="step", ylabel="training loss", title="Training loss")
    valid_axes.set(xlabel="step", ylabel="validation NLL (nats/token)", title="Validation NLL")
    loss_axes.legend(fontsize=7)
    valid_axes.legend(fontsize=7)
    return _save(figure, path)

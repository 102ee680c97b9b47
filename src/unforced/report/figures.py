"""Figures of a run directory, drawn with matplotlib's Agg canvas (no display, no global pyplot state) from the
curve data of report/curves.py; each is written as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unforced.report import curves


def _legend(axes, fontsize: int) -> None:
    if axes.get_legend_handles_labels()[0]:  # an empty run draws no line, and then wants no legend
        axes.legend(fontsize=fontsize)


def save_figure(figure: Figure, path: Path) -> Path:
    """Lay out and write `figure` as a PNG at `path`, and as an SVG beside it (for a paper); folders made as
    needed. Returns the PNG's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    figure.savefig(path.with_suffix(".svg"), format="svg")
    return path


def per_position(results: dict, path: Path) -> Path:
    """Error rate and NLL per target position, teacher-forced (dashed) against free-running (solid), over the
    positions that at least MIN_SEQUENCES test sequences reach."""
    figure = Figure(figsize=(11, 4.2))
    error_axes, nll_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for index, (name, data) in enumerate(curves.per_position(results).items()):
        color = f"C{index}"
        for axes, side in ((error_axes, "error"), (nll_axes, "nll")):
            axes.plot(data["position"], data[f"fr_{side}"], color=color, label=f"{name}: free-running")
            axes.plot(data["position"], data[f"tf_{side}"], color=color, linestyle="--",
                      label=f"{name}: teacher-forced")
    error_axes.set(xlabel="target position", ylabel="token error rate", title="Per-position error")
    nll_axes.set(xlabel="target position", ylabel="NLL of the gold token (nats)", title="Per-position NLL")
    _legend(error_axes, 7)
    _legend(nll_axes, 7)
    return save_figure(figure, path)


def training_curves(metrics: list[dict], path: Path) -> Path:
    """Training loss per step, and validation NLL teacher-forced (dashed) against free-running (solid)."""
    figure = Figure(figsize=(11, 4.2))
    loss_axes, valid_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for index, (tag, data) in enumerate(curves.training(metrics).items()):
        color = f"C{index}"
        if data["step"]:
            loss_axes.plot(data["step"], data["loss"], color=color, label=tag)
        if data["eval_step"]:
            valid_axes.plot(data["eval_step"], data["fr_nll"], color=color, marker="o", label=f"{tag}: free-running")
            valid_axes.plot(data["eval_step"], data["tf_nll"], color=color, marker="o", linestyle="--",
                            label=f"{tag}: teacher-forced")
    loss_axes.set(xlabel="step", ylabel="training loss", title="Training loss")
    valid_axes.set(xlabel="step", ylabel="validation NLL (nats/token)", title="Validation NLL")
    _legend(loss_axes, 7)
    _legend(valid_axes, 7)
    return save_figure(figure, path)


def sweep(diagnostics: dict, path: Path) -> Path:
    """Gold-token NLL against the teacher-forcing ratio, one line per strategy."""
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot(1, 1, 1)
    for index, (name, entry) in enumerate(diagnostics["strategies"].items()):
        data = entry["diagnostics"]["sweep"]
        axes.plot(data["ratios"], data["nll"], marker="o", color=f"C{index}", label=name)
    axes.set(xlabel="teacher-forcing ratio (P(gold) per fed token)", ylabel="NLL of gold tokens (nats)",
             title="Ratio sweep")
    _legend(axes, 7)
    return save_figure(figure, path)


def divergence(diagnostics: dict, path: Path) -> Path:
    """||h_FR(t) - h_TF(t)|| per position (mean and spread), with the fitted plateau where a < 1."""
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot(1, 1, 1)
    for index, (name, entry) in enumerate(diagnostics["strategies"].items()):
        data = entry["diagnostics"]["divergence"]
        mean = [m if m is not None else float("nan") for m in data["mean"]]
        std = [s if s is not None else 0.0 for s in data["std"]]
        axes.plot(data["positions"], mean, color=f"C{index}", label=name)
        axes.fill_between(data["positions"], [m - s for m, s in zip(mean, std, strict=True)],
                          [m + s for m, s in zip(mean, std, strict=True)], color=f"C{index}", alpha=0.15)
        fit = data.get("fit") or {}
        if fit.get("plateau_predicted") is not None:
            axes.axhline(fit["plateau_predicted"], color=f"C{index}", linestyle=":", linewidth=1)
    axes.set(xlabel="target position", ylabel="hidden-state distance", title="Free-running vs teacher-forced state")
    _legend(axes, 7)
    return save_figure(figure, path)


def recovery(diagnostics: dict, path: Path) -> Path:
    """Token accuracy after one injected wrong token, against the clean prefix, per injection position."""
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot(1, 1, 1)
    for index, (name, entry) in enumerate(diagnostics["strategies"].items()):
        for probe_index, probe in enumerate(entry["diagnostics"]["recovery"]):
            offsets = [probe["position"] + probe["k"] + o for o in probe["curve"]["offset"]]
            label = f"{name} (slip at {probe['position']})"
            style = ["-", "--", ":"][probe_index % 3]
            axes.plot(offsets, probe["curve"]["corrupted"], color=f"C{index}", linestyle=style, label=label)
        if entry["diagnostics"]["recovery"]:
            probe = entry["diagnostics"]["recovery"][0]
            offsets = [probe["position"] + probe["k"] + o for o in probe["curve"]["offset"]]
            axes.plot(offsets, probe["curve"]["clean"], color=f"C{index}", alpha=0.4, linewidth=4)
    axes.set(xlabel="target position", ylabel="token accuracy", title="Recovery after an injected error")
    _legend(axes, 6)
    return save_figure(figure, path)


def compounding(diagnostics: dict, path: Path) -> Path:
    """Measured free-running NLL per position against the fitted absorbing-error chain."""
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot(1, 1, 1)
    for index, (name, entry) in enumerate(diagnostics["strategies"].items()):
        fit = entry["diagnostics"].get("compounding")
        measured = entry["per_position"]["fr_nll"]
        axes.plot(range(1, len(measured) + 1), measured, color=f"C{index}", marker=".", linestyle="none",
                  label=f"{name}: measured")
        if fit:
            axes.plot(range(1, len(fit["predicted_curve"]) + 1), fit["predicted_curve"], color=f"C{index}",
                      label=f"{name}: fit (c={fit['c']:.2f}, d={fit['d']:.2f}, e={fit['e']:.3f})")
    axes.set(xlabel="target position", ylabel="free-running NLL (nats)", title="Compounding-error fit")
    _legend(axes, 7)
    return save_figure(figure, path)


def prefix_divergence(diagnostics: dict, path: Path) -> Path:
    """Estimated KL(p_model(prefix) || n-gram of the data) per prefix length."""
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot(1, 1, 1)
    for index, (name, entry) in enumerate(diagnostics["strategies"].items()):
        data = entry["diagnostics"]["prefix_divergence"]
        axes.plot(data["lengths"], data["kl"], color=f"C{index}", marker="o", label=name)
    axes.set(xlabel="prefix length", ylabel="KL estimate (nats)", title="Prefix-distribution divergence")
    _legend(axes, 7)
    return save_figure(figure, path)


def scores(metrics: list[dict], path: Path, dips: list[dict] | None = None,
           warm_starts: dict[str, str | None] | None = None, switches: dict[str, list[dict]] | None = None) -> Path:
    """The validation metric of free-running (greedy) decoding over training, every strategy on one step axis
    (curves.scores: a fine-tuned entry's line continues from its starting model's last evaluation). Triangles mark
    mid-training dips, dotted lines the steps where a chain switched phase on a validation stall (`switches`:
    results.json's per entry). No teacher-forced sequence score is drawn: it is not a gap measure
    (docs/measures.md)."""
    figure = Figure(figsize=(7, 4.2))
    axes = figure.add_subplot(1, 1, 1)
    data = curves.scores(metrics, warm_starts)
    for index, (entry, series) in enumerate(data["entries"].items()):
        axes.plot(series["step"], series["fr"], color=f"C{index}", marker="o", markersize=3,
                  label=f"{entry}: free-running")
        for move in (switches or {}).get(entry, []):
            axes.axvline(move["global_step"], color=f"C{index}", linestyle=":", linewidth=1.2)
    evaluations = [m for m in metrics if isinstance(m.get("eval"), dict) and "metric" in m["eval"]]
    for dip in dips or []:
        record = next((m for m in evaluations if m.get("strategy") == dip.get("strategy")
                       and m["step"] == dip["step"]), None)
        if record is not None:
            axes.plot([record.get("global_step", record["step"])], [dip["value"]], marker="v", color="black",
                      markersize=8, linestyle="none")
    axes.set(xlabel="training step (fine-tuning continues its starting model's steps)",
             ylabel=f"validation {data['metric']} (free-running, greedy)", title="Scores over training")
    _legend(axes, 7)
    return save_figure(figure, path)

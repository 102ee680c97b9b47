"""A report page for each kind of observation bias: the estimates against the truth (where simulated), with
bands. Pages are self-contained HTML (figures inlined as SVG) in the project's shared page shell."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unforced.report.page import page

ESTIMATORS = ("naive", "ips", "snips", "clipped_ips", "dr")


def _svg(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def clicks_page(result: dict, truth: dict | None, path: str | Path) -> Path:
    """Policy value by estimator with +-2 standard-error bands, and the propensities by rank, against the
    simulator's truth where `truth` (the `truth` block of `clicks simulate --json`) is given."""
    figure = Figure(figsize=(10, 4))
    value_axes, rank_axes = figure.subplots(1, 2)
    values = [result[name]["value"] for name in ESTIMATORS]
    errors = [2 * result[name]["standard_error"] for name in ESTIMATORS]
    value_axes.errorbar(range(len(ESTIMATORS)), values, yerr=errors, fmt="o", capsize=4, label="estimate +- 2 SE")
    value_axes.set_xticks(range(len(ESTIMATORS)), ESTIMATORS)
    value_axes.set_ylabel("expected clicks per session")
    by_rank = result["propensity"]["by_rank"]
    ranks = np.arange(1, len(by_rank) + 1)
    rank_axes.plot(ranks, by_rank, "o-", label=f"estimated ({result['propensity']['source']})")
    if truth:
        value_axes.axhline(truth["policy_value"], color="black", linestyle="--", label="truth")
        true_rank = truth["propensity_by_rank"][: len(by_rank)]
        rank_axes.plot(ranks[: len(true_rank)], true_rank, "k--", label="truth")
    rank_axes.set_xlabel("rank")
    rank_axes.set_ylabel("examination propensity (rank 1 = 1)")
    value_axes.legend(fontsize=8)
    rank_axes.legend(fontsize=8)
    rows = "".join(f"<tr><td>{name}</td><td>{result[name]['value']:.4f}</td>"
                   f"<td>{result[name]['standard_error']:.4f}</td></tr>" for name in ESTIMATORS)
    truth_line = f"<p>True value (simulator): {truth['policy_value']:.4f}</p>" if truth else ""
    clip = result.get("clipping")
    clip_line = (f"<p class=\"note\">{clip['rows']} propensities below {clip['floor']:g} were raised to it: IPS "
                 f"moved from {clip['ips_unclipped']:.4f} to {clip['ips_clipped']:.4f}.</p>") if clip else ""
    body = (f"<h1>Position bias: a new ranking's value from a click log</h1>{truth_line}{clip_line}"
            f"<table><tr><th>estimator</th><th>value</th><th>standard error</th></tr>{rows}</table>"
            f"{_svg(figure)}<p>Naive: the log's own clicks per session. IPS/SNIPS/DR weight each click by the "
            f"examination at its new rank over that at its logged rank (docs/observation.md).</p>")
    return _write(path, page("unforced: position bias", body))


def specimens_page(collection, result: dict, truth: dict | None, path: str | Path, resamples: int = 50,
                   seed: int = 0) -> Path:
    """The three life tables with 90% bootstrap bands (specimens resampled), against the true curve if given."""
    from unforced.observation.survivorship import Collection, life_tables

    ages = np.asarray(result["ages"])
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in result["survival"]}
    for _ in range(resamples):
        pick = rng.integers(0, len(collection.age), len(collection.age))
        sample = Collection(collection.birth_year[pick], collection.age[pick], collection.effort_year,
                            collection.effort)
        for name, curve in life_tables(sample, ages)["survival"].items():
            draws[name].append(curve)
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for name, curve in result["survival"].items():
        low, high = np.percentile(np.asarray(draws[name]), [5, 95], axis=0)
        line = axes.step(ages, curve, where="post", label=name)[0]
        axes.fill_between(ages, low, high, step="post", alpha=0.2, color=line.get_color())
    if truth:
        axes.step(truth["ages"], truth["survival"], "k--", where="post", label="truth")
    axes.set_xlabel("age (years)")
    axes.set_ylabel("S(a) = P(lifespan >= a)")
    axes.legend(fontsize=8)
    body = (f"<h1>Survivor bias: a life table from {len(collection.age)} specimens</h1>{_svg(figure)}"
            f"<p>Bands: 5th to 95th percentile over {resamples} bootstrap resamples of the specimens. Weighted: each "
            f"specimen by 1 / its exposure; Kaplan-Meier: the same weights with left truncation "
            f"(docs/observation.md).</p>")
    return _write(path, page("unforced: survivor bias", body))


def _write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["clicks_page", "specimens_page"]

"""Curve data of a run directory, without drawing: what the report's figures draw and what the lab serves as
JSON. Each function returns plain lists and numbers (JSON-ready), one series per strategy."""

from __future__ import annotations

MIN_SEQUENCES = 20  # a position enters the per-position curves when at least this many test sequences reach it


def well_measured(curves: dict) -> int:
    """Positions reached by at least MIN_SEQUENCES sequences (the last few positions rest on a handful)."""
    counts = curves.get("count")
    if not counts:
        return len(curves["tf_error"])
    return max(1, sum(1 for c in counts if c >= min(MIN_SEQUENCES, counts[0])))


def per_position(results: dict) -> dict[str, dict[str, list]]:
    """{strategy: {"position", "tf_error", "fr_error", "tf_nll", "fr_nll"}} over the well-measured positions."""
    out = {}
    for name, entry in results["strategies"].items():
        curves = entry["per_position"]
        shown = well_measured(curves)
        out[name] = {"position": list(range(1, shown + 1)),
                     **{key: list(curves[key][:shown]) for key in ("tf_error", "fr_error", "tf_nll", "fr_nll")}}
    return out


def training(metrics: list[dict]) -> dict[str, dict[str, list]]:
    """{tag: {"step", "loss", "eval_step", "tf_nll", "fr_nll"}}: training loss per logged step and the validation
    NLL under both decodings at each evaluation, per metrics.jsonl tag (each phase of a chain apart)."""
    out: dict[str, dict[str, list]] = {}
    for tag in dict.fromkeys(m.get("strategy") for m in metrics):
        train = [m for m in metrics if m.get("strategy") == tag and "loss" in m]
        evals = [m for m in metrics if m.get("strategy") == tag and isinstance(m.get("eval"), dict)]
        out[str(tag)] = {"step": [m["step"] for m in train], "loss": [m["loss"] for m in train],
                         "eval_step": [m["step"] for m in evals],
                         "tf_nll": [m["eval"].get("tf_nll") for m in evals],
                         "fr_nll": [m["eval"].get("fr_nll") for m in evals]}
    return out


def scores(metrics: list[dict], warm_starts: dict[str, str | None] | None = None) -> dict:
    """{"metric": name, "entries": {entry: {"step", "fr"}}}: the free-running validation metric of each entry on
    one step axis (a chain's phases joined; `global_step` where present). `warm_starts` maps an entry to the tag it
    was fine-tuned from (results.json's `warm_start_from`): its series starts at that model's last evaluation."""
    evaluations = [m for m in metrics if isinstance(m.get("eval"), dict) and isinstance(m["eval"].get("metric"), dict)]
    name = evaluations[0]["eval"]["metric"]["name"] if evaluations else "metric"
    warm_starts = warm_starts or {}

    def in_order(entry: str) -> list[dict]:
        return sorted((m for m in evaluations if str(m.get("strategy")).split("#")[0] == entry),
                      key=lambda m: m.get("global_step", m["step"]))

    entries = {}
    for entry in dict.fromkeys(str(m.get("strategy")).split("#")[0] for m in evaluations):
        points = in_order(entry)
        start = in_order(warm_starts[entry]) if warm_starts.get(entry) else []
        if start:  # a fine-tune: drawn on from where its starting model ended
            points = [start[-1], *points]
        entries[entry] = {"step": [m.get("global_step", m["step"]) for m in points],
                          "fr": [m["eval"]["metric"]["fr"] for m in points]}
    return {"metric": name, "entries": entries}


__all__ = ["MIN_SEQUENCES", "per_position", "scores", "training", "well_measured"]

"""`unforced clicks simulate|estimate|evaluate` and `unforced specimens simulate|estimate` (typer sub-apps that
the main command adds). `--json` prints the result alone on stdout; progress and warnings go to stderr. Bad input
raises UnforcedError, which the main command turns into exit code 2 and one line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from unforced.errors import UnforcedError

clicks_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                         help="Position bias in click logs: simulate a log, estimate relevance, evaluate a ranking.")
specimens_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                            help="Survivor bias in specimen collections: simulate one, estimate its life table.")
stderr = Console(stderr=True)

def _emit(result: dict, as_json: bool, summary: str) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        stderr.print(summary, highlight=False)
        typer.echo(json.dumps(result, indent=2))


def _warned(caught: list) -> None:
    for warning in caught:
        stderr.print(f"warning: {warning.message}", highlight=False, soft_wrap=True)


def _check_positive(value: float, flag: str) -> None:
    if not value > 0:
        raise UnforcedError(f"{flag} must be above 0, got {value}")


def _propensities(log, source: str | None):
    """(source, by_rank or None for the log's own column)."""
    from unforced.observation.position_bias import (
        propensity_by_em,
        propensity_by_randomization,
        rank_propensity,
    )

    if source not in (None, "given", "randomization", "em"):
        raise UnforcedError(f"--propensity must be given, randomization or em, got {source!r}")
    source = source or ("given" if log.propensity is not None else "em")
    if source == "given":
        if log.propensity is None:
            raise UnforcedError("--propensity given: the log has no propensity column")
        return source, None, rank_propensity(log, None)
    if source == "randomization":
        by_rank = propensity_by_randomization(log)
    else:
        stderr.print("estimating propensities by regression EM ...", highlight=False)
        by_rank, _ = propensity_by_em(log)
    return source, by_rank, by_rank


@clicks_app.command("simulate")
def clicks_simulate(
    out: Path = typer.Option(..., "--out", help="the log to write: .csv or .parquet"),
    policy_out: Path | None = typer.Option(None, "--policy-out", help="also write the new policy (the true-"
                                           "relevance ranking) as query,item,rank"),
    queries: int = typer.Option(50, help="queries, each with --items results"),
    items: int = typer.Option(10, help="results per query (the log's depth)"),
    sessions: int = typer.Option(5000, help="sessions: a uniformly drawn query shown once"),
    eta: float = typer.Option(1.0, help="examination (1/rank)^eta"),
    noise: float = typer.Option(0.0, help="chance of a click on an examined irrelevant result"),
    logging: str = typer.Option("ranker", help="ranker (noisy logging ranker) or randomized (shuffled results)"),
    propensity: bool = typer.Option(True, "--propensity/--no-propensity", help="write the propensity column"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Simulate a position-based click log (and the new policy to evaluate on it)."""
    from unforced.observation.clicklog import write_log, write_policy
    from unforced.observation.position_bias import examination, make_world, simulate_log, true_policy_value

    for value, flag in ((queries, "--queries"), (items, "--items"), (sessions, "--sessions"), (eta, "--eta")):
        _check_positive(value, flag)
    if not 0 <= noise < 1:
        raise UnforcedError(f"--noise must lie in [0, 1), got {noise}")
    world = make_world(queries, items, noise=noise, seed=seed)
    log = simulate_log(world, sessions, eta=eta, logging=logging, seed=seed + 1)
    write_log(out, log, with_propensity=propensity)
    if policy_out is not None:
        write_policy(policy_out, world.query_of_item, np.arange(len(world.relevance)), world.target_rank)
    result = {"log": str(out), "rows": log.rows, "sessions": log.sessions, "policy": str(policy_out) if policy_out
              else None, "truth": {"propensity_by_rank": examination(np.arange(1, items + 1), eta).tolist(),
                                   "policy_value": true_policy_value(world, eta),
                                   "relevance": {str(i): float(r) for i, r in enumerate(world.relevance)}}}
    _emit(result, as_json, f"wrote {log.rows} rows ({log.sessions} sessions) to {out}")


@clicks_app.command("estimate")
def clicks_estimate(
    log_path: Path = typer.Argument(..., metavar="LOG", help="click log: .csv or .parquet"),
    propensity: str | None = typer.Option(None, help="given | randomization | em (default: the log's column, "
                                          "else em)"),
    min_propensity: float = typer.Option(1e-3, help="propensities below are raised to this, with a warning"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Each item's relevance (click probability when examined): naive, IPS, SNIPS."""
    from unforced.observation.clicklog import read_log
    from unforced.observation.position_bias import estimate_relevance

    _check_positive(min_propensity, "--min-propensity")
    log = read_log(log_path)
    source, by_rank, shown = _propensities(log, propensity)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        relevance = estimate_relevance(log, by_rank, min_propensity)
    _warned(caught)
    items = {str(label): {"impressions": int(relevance["impressions"][i]), "naive": _number(relevance["naive"][i]),
                          "ips": _number(relevance["ips"][i]), "snips": _number(relevance["snips"][i])}
             for i, label in enumerate(log.item_labels)}
    result = {"items": items, "propensity": {"source": source, "by_rank": shown.tolist()},
              "clipping": _clipping(relevance["clipping"])}
    _emit(result, as_json, f"{len(items)} items from {log.rows} rows, propensities: {source}")


@clicks_app.command("evaluate")
def clicks_evaluate(
    log_path: Path = typer.Argument(..., metavar="LOG", help="click log: .csv or .parquet"),
    policy: Path = typer.Option(..., help="the new policy: query,item,rank (.csv or .parquet)"),
    propensity: str | None = typer.Option(None, help="given | randomization | em (default: the log's column, "
                                          "else em)"),
    min_propensity: float = typer.Option(1e-3, help="propensities below are raised to this, with a warning"),
    max_weight: float = typer.Option(5.0, help="the weight cap of clipped IPS and DR"),
    truth: Path | None = typer.Option(None, help="the JSON of `clicks simulate`, for the report's truth line"),
    report: Path | None = typer.Option(None, help="also write an HTML report page here"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A new ranking's expected clicks per session: naive, IPS, SNIPS, clipped IPS, DR, each with its
    standard error."""
    from unforced.observation.clicklog import read_log, read_policy
    from unforced.observation.position_bias import evaluate_policy

    _check_positive(min_propensity, "--min-propensity")
    _check_positive(max_weight, "--max-weight")
    log = read_log(log_path)
    target_rank = read_policy(policy, log)
    source, by_rank, shown = _propensities(log, propensity)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimates = evaluate_policy(log, target_rank, by_rank, min_propensity, max_weight)
    _warned(caught)
    result = {name: estimates[name].as_dict() for name in ("naive", "ips", "snips", "clipped_ips", "dr")}
    result["propensity"] = {"source": source, "by_rank": shown.tolist()}
    result["clipping"] = _clipping(estimates["clipping"])
    result["max_weight"] = max_weight
    if report is not None:
        from unforced.observation.report import clicks_page

        clicks_page(result, _read_truth(truth), report)
        result["report"] = str(report)
    _emit(result, as_json, f"policy value from {log.rows} rows ({log.sessions} sessions), propensities: {source}")


@specimens_app.command("simulate")
def specimens_simulate(
    out: Path = typer.Option(..., "--out", help="specimens to write: birth_year,age (.csv or .parquet)"),
    effort_out: Path = typer.Option(..., "--effort-out", help="collection effort to write: year,effort"),
    specimens: int = typer.Option(2000, help="about this many specimens"),
    first_year: int = typer.Option(1900, help="the first year of collection"),
    years: int = typer.Option(60, help="years of collection"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Simulate a specimen collection from a population with a known survival curve."""
    from unforced.observation.survivorship import simulate_collection, write_collection

    _check_positive(specimens, "--specimens")
    _check_positive(years, "--years")
    collection = simulate_collection(specimens, first_year, years, seed=seed)
    write_collection(out, effort_out, collection)
    result = {"specimens": str(out), "effort": str(effort_out), "count": len(collection.age),
              "truth": {"ages": list(range(len(collection.true_survival))),
                        "survival": collection.true_survival.tolist()}}
    _emit(result, as_json, f"wrote {len(collection.age)} specimens to {out}, effort to {effort_out}")


@specimens_app.command("estimate")
def specimens_estimate(
    specimens: Path = typer.Argument(..., metavar="SPECIMENS", help="birth_year,age (.csv or .parquet)"),
    effort: Path = typer.Option(..., help="collection effort: year,effort"),
    truth: Path | None = typer.Option(None, help="the JSON of `specimens simulate`, for the report's truth line"),
    report: Path | None = typer.Option(None, help="also write an HTML report page here"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The life table S(a) = P(lifespan >= a): naive, inverse-exposure weighted, Kaplan-Meier."""
    from unforced.observation.survivorship import life_tables, read_collection

    collection = read_collection(specimens, effort)
    tables = life_tables(collection)
    result = {"ages": tables["ages"].tolist(),
              "survival": {name: curve.tolist() for name, curve in tables["survival"].items()},
              "specimens": len(collection.age)}
    if report is not None:
        from unforced.observation.report import specimens_page

        specimens_page(collection, result, _read_truth(truth), report)
        result["report"] = str(report)
    _emit(result, as_json, f"life tables from {len(collection.age)} specimens")


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _clipping(clipping) -> dict | None:
    if clipping is None:
        return None
    return {"rows": clipping.rows, "floor": clipping.floor, "ips_unclipped": clipping.unclipped,
            "ips_clipped": clipping.clipped}


def _read_truth(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("truth")
    except (OSError, ValueError, AttributeError) as error:
        raise UnforcedError(f"{path}: not the JSON of a simulate command ({error})") from None

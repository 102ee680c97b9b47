"""Position bias in click logs: a position-based click simulator and the estimators that correct for it.

The position-based model (Craswell et al. 2008; Joachims et al. 2017, "Unbiased Learning-to-Rank with Biased
Feedback"): a result at rank k is examined with probability theta_k, and clicked when examined with probability
gamma (its relevance), so P(click) = theta_k * gamma. Clicks at the top are over-counted; weighting each click by
1 / theta_k (inverse propensity scoring) undoes it. Propensities are relative to rank 1 (theta_1 = 1): clicks
alone cannot tell theta from gamma apart by a common factor.

Policy value = the expected clicks per session of a new ranking of the same results, sum_k theta_k gamma_(pi(k)).
Estimators, each with a standard error over sessions (analytic; SNIPS by the delta method):
- naive: the log's own clicks per session (the average reward of the log, as Open Bandit Pipeline's naive);
- IPS: per session sum_i c_i theta'_i / theta_i (theta' = examination at the new rank): unbiased;
- SNIPS: per item, the IPS terms self-normalised, sum c / sum theta (clicks over expected examinations; the
  Hajek-style ratio form), then sum_items theta' times it: consistent, lower variance;
- clipped IPS: the weights theta'/theta capped at `max_weight` (Strehl et al. 2010): less variance, some bias;
- DR: doubly robust with the SNIPS relevance as reward model, reward model + capped weight x its residual. With no
  weight capped it equals IPS exactly here (each shown result is scored once, so the model's terms cancel); under
  the cap the reward model fills in what the cap removed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from unforced.errors import UnforcedError
from unforced.observation.clicklog import ClickLog


class PropensityClipWarning(UserWarning):
    """Some propensities were below the floor and were raised to it: the message says how many and what it did."""


def examination(rank: np.ndarray, eta: float = 1.0) -> np.ndarray:
    """theta_k = (1 / k) ** eta, the examination probability of rank k (Joachims et al. 2017)."""
    return (1.0 / np.asarray(rank, dtype=np.float64)) ** eta


@dataclass
class ClickWorld:
    """Queries with `items_per_query` results each; item q * items_per_query + d is result d of query q."""

    features: np.ndarray  # (items, dimensions), standard normal
    relevance: np.ndarray  # (items,) gamma: the click probability when examined (noise clicks included)
    logging_score: np.ndarray  # (items,) what the logging ranker sorts by (it leans on a spurious feature)
    target_rank: np.ndarray  # (items,) the new policy's rank of each item within its query, 1 = top
    items_per_query: int

    @property
    def queries(self) -> int:
        return len(self.relevance) // self.items_per_query

    @property
    def query_of_item(self) -> np.ndarray:
        return np.arange(len(self.relevance)) // self.items_per_query


def make_world(queries: int = 50, items_per_query: int = 10, dimensions: int = 5, noise: float = 0.0,
               seed: int = 0) -> ClickWorld:
    """Relevance gamma = sigmoid(x . w - 1) (+ noise clicks: gamma + noise (1 - gamma)); the logging ranker sorts
    by x . w_logging, which leans on feature 0 that relevance ignores; the new policy sorts by the true relevance."""
    rng = np.random.default_rng(seed)
    items = queries * items_per_query
    features = rng.standard_normal((items, dimensions))
    weights = np.linspace(1.0, 0.2, dimensions)
    weights[0] = 0.0  # feature 0: no bearing on relevance
    relevance = 1.0 / (1.0 + np.exp(-(features @ weights - 1.0)))
    relevance = relevance + noise * (1.0 - relevance)
    logging_weights = weights.copy()
    logging_weights[0] = 1.0
    logging_score = features @ logging_weights
    target_rank = _rank_within(relevance, items_per_query)
    return ClickWorld(features=features, relevance=relevance, logging_score=logging_score,
                      target_rank=target_rank, items_per_query=items_per_query)


def _rank_within(score: np.ndarray, items_per_query: int) -> np.ndarray:
    """The rank (1 = highest score) of each item inside its query's block of `items_per_query`."""
    blocks = score.reshape(-1, items_per_query)
    order = np.argsort(-blocks, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, items_per_query + 1)[None, :], axis=1)
    return ranks.reshape(-1)


def true_policy_value(world: ClickWorld, eta: float = 1.0, target_rank: np.ndarray | None = None) -> float:
    """Expected clicks per session of the policy (queries drawn uniformly): mean_q sum_k theta_k gamma_(q, pi(k))."""
    rank = world.target_rank if target_rank is None else target_rank
    return float(np.sum(examination(rank, eta) * world.relevance) / world.queries)


def simulate_log(world: ClickWorld, sessions: int, eta: float = 1.0, logging: str = "ranker",
                 logging_noise: float = 1.0, seed: int = 0) -> ClickLog:
    """`sessions` sessions, each a uniformly drawn query showing all its results: ordered by the logging score
    plus N(0, logging_noise^2) per session (`logging="ranker"`), or uniformly shuffled (`"randomized"`, result
    randomisation). Each result is examined with theta_rank and then clicked with its relevance."""
    if logging not in ("ranker", "randomized"):
        raise UnforcedError(f"logging must be 'ranker' or 'randomized', got {logging!r}")
    rng = np.random.default_rng(seed)
    per = world.items_per_query
    query = rng.integers(0, world.queries, sessions)
    items = query[:, None] * per + np.arange(per)[None, :]  # (sessions, per)
    if logging == "ranker":
        score = world.logging_score[items] + logging_noise * rng.standard_normal(items.shape)
    else:
        score = rng.random(items.shape)
    order = np.argsort(-score, axis=1)
    shown = np.take_along_axis(items, order, axis=1).reshape(-1)  # row-major: session by session, rank 1 first
    rank = np.tile(np.arange(1, per + 1), sessions)
    propensity = examination(rank, eta)
    click = (rng.random(len(rank)) < propensity * world.relevance[shown]).astype(np.float64)
    query_rows = np.repeat(query, per)
    return ClickLog(query=query_rows, item=shown, rank=rank, click=click, propensity=propensity,
                    session=np.repeat(np.arange(sessions), per), query_labels=np.arange(world.queries),
                    item_labels=np.arange(len(world.relevance)))


@dataclass
class Clipping:
    """What the propensity floor did: how many rows it raised, and the IPS figure without and with it."""

    rows: int
    floor: float
    unclipped: float
    clipped: float


def row_propensity(log: ClickLog, by_rank: np.ndarray | None) -> np.ndarray:
    """The examination probability of each row: the log's own column, else `by_rank[rank - 1]`."""
    if by_rank is None:
        if log.propensity is None:
            raise UnforcedError("the log has no propensity column: estimate propensities (randomization or em)")
        return log.propensity
    by_rank = np.asarray(by_rank, dtype=np.float64)
    if log.depth > len(by_rank):
        raise UnforcedError(f"propensities cover ranks 1..{len(by_rank)}, the log reaches rank {log.depth}")
    return by_rank[log.rank - 1]


def rank_propensity(log: ClickLog, by_rank: np.ndarray | None) -> np.ndarray:
    """Examination by rank (index k - 1): `by_rank`, else the mean of the log's propensity column at each rank."""
    if by_rank is not None:
        return np.asarray(by_rank, dtype=np.float64)
    counts = np.bincount(log.rank - 1)
    sums = np.bincount(log.rank - 1, weights=row_propensity(log, None))
    return np.divide(sums, counts, out=np.zeros(len(counts)), where=counts > 0)


def _floor(propensity: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    tiny = propensity < floor
    return (np.where(tiny, floor, propensity), tiny) if tiny.any() else (propensity, tiny)


def estimate_relevance(log: ClickLog, by_rank: np.ndarray | None = None, min_propensity: float = 1e-3) -> dict:
    """Each item's relevance (click probability when examined): naive clicks / impressions, IPS mean(c / theta),
    SNIPS sum(c) / sum(theta). Returns arrays over the item codes and the clipping, if any (with a warning)."""
    raw = row_propensity(log, by_rank)
    propensity, tiny = _floor(raw, min_propensity)
    items = len(log.item_labels)
    impressions = np.bincount(log.item, minlength=items).astype(np.float64)
    clicks = np.bincount(log.item, weights=log.click, minlength=items)
    with np.errstate(invalid="ignore", divide="ignore"):
        naive = clicks / impressions
        ips = np.bincount(log.item, weights=log.click / propensity, minlength=items) / impressions
        snips = clicks / np.bincount(log.item, weights=propensity, minlength=items)
    result = {"impressions": impressions.astype(np.int64), "naive": naive, "ips": ips, "snips": snips,
              "clipping": None}
    if tiny.any():
        unclipped = np.bincount(log.item, weights=log.click / raw, minlength=items) / impressions
        touched = np.unique(log.item[tiny])
        change = float(np.max(np.abs(unclipped[touched] - ips[touched])))
        result["clipping"] = Clipping(int(tiny.sum()), min_propensity, float(np.nanmean(unclipped[touched])),
                                      float(np.nanmean(ips[touched])))
        warnings.warn(PropensityClipWarning(
            f"{int(tiny.sum())} of {log.rows} propensities were below {min_propensity:g} and were raised to it: "
            f"the IPS relevance of the {len(touched)} item(s) they touch moved by up to {change:.4g}"), stacklevel=2)
    return result


@dataclass
class Estimate:
    value: float
    standard_error: float

    def as_dict(self) -> dict:
        return {"value": self.value, "standard_error": self.standard_error}


def _per_session(log: ClickLog, values: np.ndarray) -> Estimate:
    totals = np.bincount(log.session, weights=values, minlength=log.sessions)
    spread = float(totals.std(ddof=1)) if len(totals) > 1 else float("nan")
    return Estimate(float(totals.mean()), float(spread / np.sqrt(len(totals))))


def evaluate_policy(log: ClickLog, target_rank: np.ndarray, by_rank: np.ndarray | None = None,
                    min_propensity: float = 1e-3, max_weight: float = 5.0) -> dict:
    """The new policy's expected clicks per session by naive, IPS, SNIPS, clipped IPS and DR (module docstring).

    `target_rank`: (rows,) the rank the policy gives each row's item, 0 = not shown; ranks past the propensities
    known count as not shown. Propensities below `min_propensity` are raised to it, with a warning."""
    target_rank = np.asarray(target_rank, dtype=np.int64)
    if len(target_rank) != log.rows:
        raise UnforcedError(f"the policy ranks {len(target_rank)} rows, the log has {log.rows}")
    raw = row_propensity(log, by_rank)
    propensity, tiny = _floor(raw, min_propensity)
    by_rank_known = rank_propensity(log, by_rank)
    shown = (target_rank >= 1) & (target_rank <= len(by_rank_known))
    target_examination = np.where(shown, by_rank_known[np.clip(target_rank, 1, len(by_rank_known)) - 1], 0.0)
    weight = target_examination / propensity
    items = len(log.item_labels)
    # SNIPS: per item R = sum c / sum theta; V = (1/N) sum_items T R with T = sum theta'; delta-method influence
    # of row i of item j: theta'_i R_j + (T_j / E_j)(c_i - R_j theta_i), which sums to V exactly.
    clicks = np.bincount(log.item, weights=log.click, minlength=items)
    expected = np.bincount(log.item, weights=propensity, minlength=items)
    target_total = np.bincount(log.item, weights=target_examination, minlength=items)
    ratio = np.divide(clicks, expected, out=np.zeros(items), where=expected > 0)
    scale = np.divide(target_total, expected, out=np.zeros(items), where=expected > 0)
    row_ratio = ratio[log.item]
    influence = target_examination * row_ratio + scale[log.item] * (log.click - row_ratio * propensity)
    capped = np.minimum(weight, max_weight)
    result = {
        "naive": _per_session(log, log.click),
        "ips": _per_session(log, log.click * weight),
        "snips": _per_session(log, influence),
        "clipped_ips": _per_session(log, log.click * capped),
        "dr": _per_session(log, target_examination * row_ratio + capped * (log.click - propensity * row_ratio)),
        "clipping": None,
    }
    if tiny.any():
        unclipped = _per_session(log, log.click * target_examination / raw).value
        result["clipping"] = Clipping(int(tiny.sum()), min_propensity, unclipped, result["ips"].value)
        warnings.warn(PropensityClipWarning(
            f"{int(tiny.sum())} of {log.rows} propensities were below {min_propensity:g} and were raised to it: "
            f"the IPS value moved from {unclipped:.6g} to {result['ips'].value:.6g}"), stacklevel=2)
    return result


def propensity_by_randomization(log: ClickLog) -> np.ndarray:
    """theta_k / theta_1 as the click-through rate at rank k over that at rank 1, from a log whose rankings were
    randomised (Wang et al. 2016, result randomisation; Joachims et al. 2017's swap interventions randomise
    less): there every rank sees the same relevance on average, so its click rate is proportional to theta_k."""
    counts = np.bincount(log.rank - 1).astype(np.float64)
    clicks = np.bincount(log.rank - 1, weights=log.click, minlength=len(counts))
    rate = np.divide(clicks, counts, out=np.zeros(len(counts)), where=counts > 0)
    if rate[0] <= 0:
        raise UnforcedError("no click at rank 1: propensities by randomisation are relative to rank 1")
    return rate / rate[0]


def propensity_by_em(log: ClickLog, iterations: int = 200, tolerance: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """(theta by rank relative to rank 1, gamma by item) by the EM of the position-based model (Wang et al.
    2018, "Position Bias Estimation for Unbiased Learning to Rank in Personal Search"), its M-step a regression
    of relevance on item identity. Latent E (examined) and R (relevant), click = E R:
    E-step for a row without a click: P(E=1 | c=0) = theta (1 - gamma) / (1 - theta gamma),
    P(R=1 | c=0) = (1 - theta) gamma / (1 - theta gamma); with a click both are 1.
    M-step: theta_k = mean P(E=1) over rank k's rows, gamma_d = mean P(R=1) over item d's rows.
    Needs each item shown at more than one rank (a logging ranker with noise, or randomisation)."""
    depth = log.depth
    rank = log.rank - 1
    rank_rows = np.bincount(rank, minlength=depth).astype(np.float64)
    item_rows = np.bincount(log.item, minlength=len(log.item_labels)).astype(np.float64)
    theta = np.full(depth, 0.5)
    gamma = np.full(len(item_rows), 0.5)
    clicked = log.click > 0
    for _ in range(iterations):
        t, g = theta[rank], gamma[log.item]
        denominator = np.maximum(1.0 - t * g, 1e-12)
        examined = np.where(clicked, 1.0, t * (1.0 - g) / denominator)
        relevant = np.where(clicked, 1.0, (1.0 - t) * g / denominator)
        new_theta = np.bincount(rank, weights=examined, minlength=depth) / np.maximum(rank_rows, 1)
        gamma = np.bincount(log.item, weights=relevant, minlength=len(item_rows)) / np.maximum(item_rows, 1)
        shift = float(np.max(np.abs(new_theta - theta)))
        theta = new_theta
        if shift < tolerance:
            break
    return theta / theta[0], gamma * theta[0]


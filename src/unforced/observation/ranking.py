"""Unbiased learning to rank, the small example: a linear ranker fitted to clicks with an IPS-weighted squared
loss against one fitted to raw clicks, both scored by NDCG on the simulator's true relevance.

Joachims et al. 2017 ("Unbiased Learning-to-Rank with Biased Feedback"): c / theta has expectation gamma, so the
squared loss sum_i (c_i / theta_i - x_i . w)^2 equals sum_i (gamma_i - x_i . w)^2 in expectation up to a constant
that does not depend on w; raw clicks instead fit theta * gamma, and inherit whatever the logging ranker leaned on.
"""

from __future__ import annotations

import numpy as np

from unforced.observation.clicklog import ClickLog
from unforced.observation.position_bias import ClickWorld


def fit_linear(features: np.ndarray, labels: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Least squares with an intercept and a small ridge: (X'X + ridge I)^-1 X'y."""
    design = np.hstack([features, np.ones((len(features), 1))])
    gram = design.T @ design + ridge * np.eye(design.shape[1])
    return np.linalg.solve(gram, design.T @ labels)


def ndcg(score: np.ndarray, relevance: np.ndarray, items_per_query: int, cutoff: int | None = None) -> float:
    """Mean over queries of DCG / ideal DCG, gain = relevance, discount 1 / log2(rank + 1), top `cutoff`."""
    cutoff = cutoff or items_per_query
    score, relevance = score.reshape(-1, items_per_query), relevance.reshape(-1, items_per_query)
    discount = 1.0 / np.log2(np.arange(2, cutoff + 2))
    ranked = np.take_along_axis(relevance, np.argsort(-score, axis=1, kind="stable"), axis=1)[:, :cutoff]
    ideal = -np.sort(-relevance, axis=1)[:, :cutoff]
    return float(np.mean((ranked @ discount) / (ideal @ discount)))


def unbiased_learning_to_rank(world: ClickWorld, log: ClickLog, propensity: np.ndarray,
                              cutoff: int = 5) -> dict:
    """Fit both rankers on the log's rows (features of each row's item) and score each, with the logging
    ranker and the ideal (true relevance) beside them for scale."""
    features = world.features[log.item]
    ips_weights = fit_linear(features, log.click / propensity)
    naive_weights = fit_linear(features, log.click)

    def score(weights):
        return world.features @ weights[:-1] + weights[-1]

    per = world.items_per_query
    return {"ndcg_cutoff": cutoff,
            "ips": ndcg(score(ips_weights), world.relevance, per, cutoff),
            "naive": ndcg(score(naive_weights), world.relevance, per, cutoff),
            "logging": ndcg(world.logging_score, world.relevance, per, cutoff),
            "ideal": 1.0,
            "weights": {"ips": ips_weights[:-1].tolist(), "naive": naive_weights[:-1].tolist()}}

"""CartPole (gymnasium's CartPole-v1, the `control` extra) with an LQR expert, and a linear policy learned from
its labels by behaviour cloning and by DAgger, each collecting expert labels until it balances as long as the
expert does.

The expert: the LQR gain of CartPole's equations linearised at the upright equilibrium (the environment's own
masses, length, force and time step; Euler steps as the environment takes), turned into the discrete action
"push right when -K s > 0". It balances for the whole episode.

The learner: a linear classifier over the state (logistic regression with an L2 penalty, fitted by Newton's
method: convex, closed to the same answer on every machine), the discrete-action analogue of the linear
system's least-squares policy. Behaviour cloning fits it on the first L states of the expert's own episodes,
which converge to a small neighbourhood of upright (the expert's narrow state distribution); DAgger (Ross et al.
2011) rolls in for `labels_per_round` steps per round with the mixture policy (the expert's action with
probability beta_i, else the learner's), labels every visited state with the expert's action, aggregates and
refits. Both are evaluated after every round of `labels_per_round` labels, on the same held-out starts, and stop
at the first round whose mean episode length reaches the expert's: `expert_labels` is the labels used then.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from unforced.config import finite_number, integer_at_least
from unforced.control.common import Progress, horizons_for, learner_summary, lqr_gain, quiet
from unforced.errors import UnforcedError
from unforced.schedules import Exponential


@dataclass(frozen=True)
class CartPoleConfig:
    """Settings of `unforced control --env cartpole`.

    horizon (int, 500): episode length limit (CartPole-v1's own is 500). 10 to 2000.
    seeds (int, 5): independent repetitions (training starts, mixture draws); figures are means over them.
    labels_per_round (int, 25): expert labels added per round, for both learners.
    max_rounds (int, 40): the label budget is max_rounds * labels_per_round; a learner that has not reached
        the expert's episode length by then reports `reached` below 1.
    beta_decay (float, 0.5): DAgger's beta_i = beta_decay ** i (round 0 rolls in with the expert alone).
    l2 (float, 1e-2): L2 penalty of the logistic regression.
    evaluation_episodes (int, 10): held-out starts on which every learner and the expert are evaluated.
    """

    horizon: int = 500
    seeds: int = 5
    labels_per_round: int = 25
    max_rounds: int = 40
    beta_decay: float = 0.5
    l2: float = 1e-2
    evaluation_episodes: int = 10

    def __post_init__(self) -> None:
        if not 10 <= integer_at_least("--horizon", self.horizon, 10) <= 2000:
            raise UnforcedError(f"--horizon must be between 10 and 2000 for cartpole, got {self.horizon!r}")
        if not 1 <= integer_at_least("--seeds", self.seeds, 1) <= 50:
            raise UnforcedError(f"--seeds must be between 1 and 50, got {self.seeds!r}")
        integer_at_least("labels_per_round", self.labels_per_round, 1)
        integer_at_least("max_rounds", self.max_rounds, 1)
        integer_at_least("evaluation_episodes", self.evaluation_episodes, 1)
        if finite_number("l2", self.l2) <= 0:
            raise UnforcedError(f"l2 must be above 0, got {self.l2!r}")
        Exponential(self.beta_decay)  # validates (0, 1]


def make_env(horizon: int):
    try:
        import gymnasium
    except ImportError as error:
        raise UnforcedError(f"--env cartpole needs the 'control' extra (pip install 'unforced[control]'): "
                            f"{error}") from None
    return gymnasium.make("CartPole-v1", max_episode_steps=horizon)


def expert_gain(env) -> np.ndarray:
    """LQR gain (4,) of CartPole linearised at upright: state (x, x_dot, theta, theta_dot), force u."""
    cartpole = env.unwrapped
    total = cartpole.masscart + cartpole.masspole
    denominator = cartpole.length * (4.0 / 3.0 - cartpole.masspole / total)
    theta_by_theta, theta_by_force = cartpole.gravity / denominator, -1.0 / (total * denominator)
    polemass_length = cartpole.masspole * cartpole.length
    x_by_theta = -polemass_length * theta_by_theta / total
    x_by_force = 1.0 / total - polemass_length * theta_by_force / total
    continuous = np.array([[0, 1, 0, 0], [0, 0, x_by_theta, 0], [0, 0, 0, 1], [0, 0, theta_by_theta, 0]], float)
    A = np.eye(4) + cartpole.tau * continuous
    B = cartpole.tau * np.array([[0.0], [x_by_force], [0.0], [theta_by_force]])
    return lqr_gain(A, B, np.diag([1.0, 1.0, 10.0, 1.0]), np.array([[1.0]]))[0]


def expert_actions(gain: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Push right (1) where the LQR force -K s is positive, else left (0)."""
    return (states @ -gain > 0).astype(int)


def fit_logistic(states: np.ndarray, actions: np.ndarray, l2: float, iterations: int = 100) -> np.ndarray:
    """Weights (5,) of P(right | s) = sigmoid(w . [s, 1]) maximising the L2-penalised likelihood (Newton)."""
    features = np.c_[states, np.ones(len(states))]
    weights = np.zeros(features.shape[1])
    for _ in range(iterations):
        probability = 1.0 / (1.0 + np.exp(-np.clip(features @ weights, -50, 50)))
        gradient = features.T @ (probability - actions) + l2 * weights
        hessian = (features * (probability * (1 - probability))[:, None]).T @ features + l2 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return weights


def learner_action(weights: np.ndarray, state: np.ndarray) -> int:
    return int(weights[:4] @ state + weights[4] > 0)


def episode(env, policy, reset_seed: int, horizon: int) -> tuple[np.ndarray, int]:
    """States (horizon + 1, 4) of one episode (the last state held once it has ended) and its length."""
    state, _ = env.reset(seed=reset_seed)
    states = [state]
    for _ in range(horizon):
        state, _, terminated, truncated, _ = env.step(policy(state))
        states.append(state)
        if terminated or truncated:
            break
    length = len(states) - 1
    states.extend([states[-1]] * (horizon + 1 - len(states)))
    return np.array(states), length


def evaluate(env, policy, config: CartPoleConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """States (episodes, horizon + 1, 4) and lengths (episodes,) on the held-out starts of `seed`."""
    runs = [episode(env, policy, 1_000_000 + 1000 * seed + e, config.horizon)
            for e in range(config.evaluation_episodes)]
    return np.array([states for states, _ in runs]), np.array([length for _, length in runs])


def fallen_cost(lengths: np.ndarray, horizon: int) -> np.ndarray:
    """Per-step cost (horizon,): the mean over episodes of 1 at every step after the pole fell, else 0."""
    return (np.arange(horizon)[None, :] >= lengths[:, None]).mean(0)


def train_seed(env, gain: np.ndarray, config: CartPoleConfig, seed: int, target: float) -> dict:
    """Both learners on one seed: labels used, rounds, episode length after each round, final evaluation."""
    beta = Exponential(config.beta_decay)
    expert = lambda state: int(state @ -gain > 0)  # noqa: E731
    results = {}
    for learner in ("behaviour_cloning", "dagger"):
        mixture_rng = np.random.default_rng([seed, 2])
        reset_seeds = iter(range(10_000 * seed, 10_000 * (seed + 1)))
        states: list[np.ndarray] = []
        weights, lengths_by_round, weights_by_round, demonstrations = None, [], [], np.empty((0, 4))
        for round_index in range(config.max_rounds):
            wanted = (round_index + 1) * config.labels_per_round
            if learner == "behaviour_cloning":
                # The first `wanted` states of the expert's consecutive episodes.
                while len(demonstrations) < wanted:
                    trajectory, length = episode(env, expert, next(reset_seeds), config.horizon)
                    demonstrations = np.concatenate([demonstrations, trajectory[:length]])
                visited = demonstrations[:wanted]
            else:
                current = weights
                state, _ = env.reset(seed=next(reset_seeds))
                for _ in range(config.labels_per_round):
                    states.append(state)
                    use_expert = current is None or mixture_rng.random() < beta(round_index)
                    action = expert(state) if use_expert else learner_action(current, state)
                    state, _, terminated, truncated, _ = env.step(action)
                    if terminated or truncated:
                        state, _ = env.reset(seed=next(reset_seeds))
                visited = np.array(states)
            weights = fit_logistic(visited, expert_actions(gain, visited), config.l2)
            _, lengths = evaluate(env, lambda s, w=weights: learner_action(w, s), config, seed)
            lengths_by_round.append(float(lengths.mean()))
            weights_by_round.append(weights)
            if lengths.mean() >= target:
                break
        trajectories, lengths = evaluate(env, lambda s, w=weights: learner_action(w, s), config, seed)
        results[learner] = {"trajectories": trajectories, "lengths": lengths, "labels": len(visited),
                            "rounds": len(lengths_by_round), "reached": bool(lengths.mean() >= target),
                            "lengths_by_round": lengths_by_round, "weights_by_round": weights_by_round}
    # Behaviour cloning with as many labels as DAgger needed (its own final weights if it stopped sooner).
    cloning = results["behaviour_cloning"]["weights_by_round"]
    weights = cloning[min(results["dagger"]["rounds"], len(cloning)) - 1]
    trajectories, lengths = evaluate(env, lambda s: learner_action(weights, s), config, seed)
    results["behaviour_cloning_at_dagger_labels"] = {"trajectories": trajectories, "lengths": lengths}
    return results


def run_cartpole(config: CartPoleConfig, progress: Progress = quiet) -> dict:
    """The JSON of `unforced control --env cartpole` (DESIGN.md's keys, as for the linear system): deviation
    from the expert's trajectory on the same starts, its growth rate, cost (steps short of the horizon) and the
    expert labels each learner needed to balance as long as the expert."""
    started = time.perf_counter()
    env = make_env(config.horizon)
    try:
        gain = expert_gain(env)
        expert = lambda state: int(state @ -gain > 0)  # noqa: E731
        expert_runs = [evaluate(env, expert, config, seed) for seed in range(config.seeds)]
        target = float(np.mean([lengths.mean() for _, lengths in expert_runs]))
        per_seed = []
        for seed in range(config.seeds):
            progress(f"cartpole: seed {seed + 1}/{config.seeds}")
            per_seed.append(train_seed(env, gain, config, seed, min(target, expert_runs[seed][1].mean())))
    finally:
        env.close()
    horizons = horizons_for(config.horizon)
    expert_cost = np.array([fallen_cost(lengths, config.horizon) for _, lengths in expert_runs])
    learners = {}
    for learner in ("behaviour_cloning", "dagger"):
        rows = [seed[learner] for seed in per_seed]
        deviation = np.array([np.linalg.norm(row["trajectories"] - expert_states, axis=2).mean(0)
                              for row, (expert_states, _) in zip(rows, expert_runs, strict=True)])
        cost = np.array([fallen_cost(row["lengths"], config.horizon) for row in rows])
        summary = learner_summary(deviation, cost, expert_cost, [row["labels"] for row in rows], horizons)
        budget_rounds = config.max_rounds
        # After a learner stops, its episode length is carried at the value that stopped it.
        curves = np.array([row["lengths_by_round"] + [row["lengths_by_round"][-1]] *
                           (budget_rounds - len(row["lengths_by_round"])) for row in rows])
        summary.update({"episode_length": float(np.mean([row["lengths"].mean() for row in rows])),
                        "reached": float(np.mean([row["reached"] for row in rows])),
                        "rounds_by_seed": [row["rounds"] for row in rows],
                        "episode_length_by_labels": {
                            "labels": [(k + 1) * config.labels_per_round for k in range(budget_rounds)],
                            "mean": curves.mean(0).tolist(), "min": curves.min(0).tolist(),
                            "max": curves.max(0).tolist()}})
        learners[learner] = summary
    # Behaviour cloning stopped at DAgger's labels: the covariate shift at equal labels.
    rows = [seed["behaviour_cloning_at_dagger_labels"] for seed in per_seed]
    deviation = np.array([np.linalg.norm(row["trajectories"] - expert_states, axis=2).mean(0)
                          for row, (expert_states, _) in zip(rows, expert_runs, strict=True)])
    cost = np.array([fallen_cost(row["lengths"], config.horizon) for row in rows])
    at_equal = learner_summary(deviation, cost, expert_cost, learners["dagger"]["expert_labels_by_seed"], horizons)
    at_equal["episode_length"] = float(np.mean([row["lengths"].mean() for row in rows]))
    learners["behaviour_cloning"]["at_dagger_labels"] = at_equal
    learners["dagger"]["rounds"] = int(round(float(np.mean(learners["dagger"]["rounds_by_seed"]))))
    learners["dagger"]["beta"] = [Exponential(config.beta_decay)(i) for i in range(config.max_rounds)]
    return {"env": "cartpole", "radius": None, "horizon": config.horizon, "seeds": config.seeds,
            "learners": learners,
            "expert": {"cost": float(expert_cost.sum(1).mean()), "episode_length": target,
                       "gain": gain.tolist()},
            "settings": asdict(config), "seconds": time.perf_counter() - started}


__all__ = ["CartPoleConfig", "expert_gain", "fit_logistic", "run_cartpole"]

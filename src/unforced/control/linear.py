"""A linear system x_{t+1} = A x_t + u_t + w_t with a chosen spectral radius, its LQR expert, and a linear
policy learned from the expert's labels by behaviour cloning and by DAgger.

Why behaviour cloning compounds here: A (4 x 4) = radius * Q blockdiag(R(a), R(b)) Q' is a scaled rotation in
two planes that the expert's closed loop keeps apart (with B = I and Q = R = I its LQR loop is A / (1 + p)). The
expert's disturbances w and initial states lie in the first plane, so its demonstrations cover that plane only
(the narrow state distribution of the expert). The learner is a linear policy u = W x fitted by ridge least
squares, the honest learner class for a linear expert; it executes u = W x + error * d, a small constant action
error along a fixed direction d. The component of d outside the demonstrated plane drives the learner where
behaviour cloning has no data (W = 0 there), so its deviation follows the open-loop dynamics: geometric growth
at rate `radius` when radius > 1, bounded when below. DAgger rolls in with the mixture policy
beta_i expert + (1 - beta_i) learner, labels every visited state with the expert's action, aggregates and
refits: its data reach the second plane and its deviation stays at the error's bounded offset. Both learners get
the same number of expert labels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from unforced.config import finite_number, integer_at_least
from unforced.control.common import Progress, horizons_for, learner_summary, lqr_gain, quiet
from unforced.errors import UnforcedError
from unforced.schedules import Exponential

DIMENSION = 4  # two planes of rotation; the expert's demonstrations excite the first only


@dataclass(frozen=True)
class LinearConfig:
    """Settings of `unforced control --env linear`.

    Parameters that define the system:
        radius (float, 1.1): spectral radius of A; above 1 the open loop is unstable. In (0, 1.5].
        horizon (int, 100): steps per episode (and per demonstration). 2 to 500.
        noise (float, 0.05): standard deviation of the disturbance w, which acts in the demonstrated plane.
    Parameters of the learners:
        action_error (float, 0.02): size of the learner's constant action error (along a fixed unit direction
            drawn per seed), the imperfect imitation whose effect the dynamics may compound.
        ridge (float, 1e-3): L2 penalty of the least-squares fit u = W x.
        rounds (int, 10): DAgger rounds; behaviour cloning gets the same number of expert trajectories.
        trajectories_per_round (int, 1): episodes rolled in (and labelled) per round.
        beta_decay (float, 0.5): DAgger's beta_i = beta_decay ** i (round 0 rolls in with the expert alone,
            Ross et al.'s beta_1 = 1), the probability of executing the expert's action at each step.
    Parameters of the measurement:
        seeds (int, 5): independent systems (A, the error direction, the episodes); figures are means over them.
        evaluation_episodes (int, 4): episodes per seed on which learner and expert share start and noise.
    """

    radius: float = 1.1
    horizon: int = 100
    seeds: int = 5
    noise: float = 0.05
    action_error: float = 0.02
    ridge: float = 1e-3
    rounds: int = 10
    trajectories_per_round: int = 1
    beta_decay: float = 0.5
    evaluation_episodes: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < finite_number("--radius", self.radius) <= 1.5:
            raise UnforcedError(f"--radius must be in (0, 1.5], got {self.radius!r}")
        if not 2 <= integer_at_least("--horizon", self.horizon, 2) <= 500:
            raise UnforcedError(f"--horizon must be between 2 and 500 for the linear system, got {self.horizon!r}")
        if not 1 <= integer_at_least("--seeds", self.seeds, 1) <= 50:
            raise UnforcedError(f"--seeds must be between 1 and 50, got {self.seeds!r}")
        for name in ("noise", "action_error", "ridge"):
            if finite_number(name, getattr(self, name)) < 0:
                raise UnforcedError(f"{name} must be at least 0, got {getattr(self, name)!r}")
        integer_at_least("rounds", self.rounds, 1)
        integer_at_least("trajectories_per_round", self.trajectories_per_round, 1)
        integer_at_least("evaluation_episodes", self.evaluation_episodes, 1)
        Exponential(self.beta_decay)  # validates (0, 1]


def rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


@dataclass(frozen=True)
class LinearSystem:
    """One seed's system: x' = A x + u + w, the demonstrated plane (columns of `plane`), the expert's gain K
    (u = -K x) and the learner's error direction."""

    A: np.ndarray  # (4, 4)
    K: np.ndarray  # (4, 4)
    plane: np.ndarray  # (4, 2) orthonormal
    error_direction: np.ndarray  # (4,) unit

    @classmethod
    def draw(cls, radius: float, rng: np.random.Generator) -> LinearSystem:
        basis, _ = np.linalg.qr(rng.standard_normal((DIMENSION, DIMENSION)))
        blocks = np.zeros((DIMENSION, DIMENSION))
        blocks[:2, :2], blocks[2:, 2:] = rotation(rng.uniform(0.3, 1.2)), rotation(rng.uniform(0.3, 1.2))
        A = radius * basis @ blocks @ basis.T
        identity = np.eye(DIMENSION)
        direction = rng.standard_normal(DIMENSION)
        return cls(A=A, K=lqr_gain(A, identity, identity, identity), plane=basis[:, :2],
                   error_direction=direction / np.linalg.norm(direction))

    def episode_draw(self, horizon: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A start state and disturbances, both in the demonstrated plane: (4,), (horizon, 4)."""
        return self.plane @ rng.standard_normal(2), noise * rng.standard_normal((horizon, 2)) @ self.plane.T

    def expert(self, states: np.ndarray) -> np.ndarray:
        return -states @ self.K.T

    def rollout(self, start: np.ndarray, disturbances: np.ndarray, policy) -> tuple[np.ndarray, np.ndarray]:
        """States (horizon + 1, 4) and actions (horizon, 4) of `policy(state, t) -> action`."""
        states, actions = [start], []
        for t, disturbance in enumerate(disturbances):
            action = policy(states[-1], t)
            actions.append(action)
            states.append(self.A @ states[-1] + action + disturbance)
        return np.array(states), np.array(actions)


def fit_linear_policy(states: np.ndarray, actions: np.ndarray, ridge: float) -> np.ndarray:
    """W minimising sum |W x - u|^2 + ridge |W|^2 (closed form, deterministic)."""
    return np.linalg.solve(states.T @ states + ridge * np.eye(states.shape[1]), states.T @ actions).T


def per_step_cost(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """x_t'x_t + u_t'u_t for t = 0 .. horizon - 1 (the LQR cost with Q = R = I)."""
    return (states[:-1] ** 2).sum(1) + (actions ** 2).sum(1)


def evaluate(system: LinearSystem, W: np.ndarray, config: LinearConfig, episodes) -> dict:
    """Deviation from the expert's trajectory (horizon + 1,) and per-step costs (horizon,) of learner and expert,
    means over `episodes` (start, disturbances) that both share."""
    error = config.action_error * system.error_direction
    deviations, costs, expert_costs = [], [], []
    for start, disturbances in episodes:
        expert_states, expert_actions = system.rollout(start, disturbances, lambda x, t: system.expert(x))
        states, actions = system.rollout(start, disturbances, lambda x, t: W @ x + error)
        deviations.append(np.linalg.norm(states - expert_states, axis=1))
        costs.append(per_step_cost(states, actions))
        expert_costs.append(per_step_cost(expert_states, expert_actions))
    return {"deviation": np.mean(deviations, 0), "cost": np.mean(costs, 0), "expert_cost": np.mean(expert_costs, 0)}


def train_seed(config: LinearConfig, seed: int) -> dict:
    """Behaviour cloning and DAgger on one seed's system: their final evaluations and cost after each round."""
    rng = np.random.default_rng([seed, 0])
    system = LinearSystem.draw(config.radius, rng)
    training = [[system.episode_draw(config.horizon, config.noise, rng) for _ in range(config.trajectories_per_round)]
                for _ in range(config.rounds)]
    evaluation_rng = np.random.default_rng([seed, 1])
    evaluation = [system.episode_draw(config.horizon, config.noise, evaluation_rng)
                  for _ in range(config.evaluation_episodes)]
    beta = Exponential(config.beta_decay)
    mixture_rng = np.random.default_rng([seed, 2])
    error = config.action_error * system.error_direction
    results = {}
    for learner in ("behaviour_cloning", "dagger"):
        visited: list[np.ndarray] = []
        W = np.zeros((DIMENSION, DIMENSION))
        cost_by_round = []
        for round_index, draws in enumerate(training):
            for start, disturbances in draws:
                if learner == "behaviour_cloning":
                    policy = lambda x, t: system.expert(x)  # noqa: E731
                else:
                    # DAgger's roll-in: the expert's action with probability beta_i, else the learner's own.
                    expert_steps = mixture_rng.random(config.horizon) < beta(round_index)
                    current = W
                    policy = lambda x, t, w=current, e=expert_steps: system.expert(x) if e[t] else w @ x + error  # noqa: E731
                states, _ = system.rollout(start, disturbances, policy)
                visited.append(states[:-1])  # every visited state, labelled by the expert below
            states = np.concatenate(visited)
            W = fit_linear_policy(states, system.expert(states), config.ridge)
            cost_by_round.append(float(evaluate(system, W, config, evaluation)["cost"].sum()))
        results[learner] = {**evaluate(system, W, config, evaluation), "labels": len(states),
                            "cost_by_round": cost_by_round}
    return results


def rounds_to_expert_cost(cost_by_round: list[float], expert_cost: float, tolerance: float = 0.1) -> int | None:
    """The first round (counted from 1) after which the learner's cost is within `tolerance` (10%) of the
    expert's; None if none is. The constant action error keeps a learner a few percent above the expert."""
    for round_number, cost in enumerate(cost_by_round, start=1):
        if cost <= (1 + tolerance) * expert_cost:
            return round_number
    return None


def run_linear(config: LinearConfig, progress: Progress = quiet) -> dict:
    """The JSON of `unforced control --env linear`: both learners' deviation from the expert's trajectory (mean
    over seeds), its fitted growth rate, cost and expert labels; DAgger's rounds; the expert's cost."""
    started = time.perf_counter()
    per_seed = []
    for seed in range(config.seeds):
        progress(f"linear system, radius {config.radius:g}: seed {seed + 1}/{config.seeds}")
        per_seed.append(train_seed(config, seed))
    horizons = horizons_for(config.horizon)
    expert_cost = np.array([seed["dagger"]["expert_cost"] for seed in per_seed])
    learners = {}
    for learner in ("behaviour_cloning", "dagger"):
        rows = [seed[learner] for seed in per_seed]
        learners[learner] = learner_summary(np.array([row["deviation"] for row in rows]),
                                            np.array([row["cost"] for row in rows]), expert_cost,
                                            [row["labels"] for row in rows], horizons)
        learners[learner]["cost_by_round"] = np.mean([row["cost_by_round"] for row in rows], 0).tolist()
        learners[learner]["rounds_to_expert_cost"] = rounds_to_expert_cost(learners[learner]["cost_by_round"],
                                                                           float(expert_cost.sum(1).mean()))
    beta = Exponential(config.beta_decay)
    learners["dagger"]["rounds"] = config.rounds
    learners["dagger"]["beta"] = [beta(i) for i in range(config.rounds)]
    return {"env": "linear", "radius": float(config.radius), "horizon": config.horizon, "seeds": config.seeds,
            "learners": learners,
            "expert": {"cost": float(expert_cost.sum(1).mean()), "cost_by_seed": expert_cost.sum(1).tolist()},
            "settings": asdict(config), "seconds": time.perf_counter() - started}


__all__ = ["LinearConfig", "LinearSystem", "fit_linear_policy", "run_linear"]

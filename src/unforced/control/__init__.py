"""Behaviour cloning against DAgger where the dynamics make the gap real (docs/control.md).

Teacher forcing is behaviour cloning of the reference; its covariate shift is exposure bias. Here the same bias
is shown on control problems with an expert: a learner fitted on the expert's own states (behaviour cloning) is
rolled out on the states it visits itself, and DAgger (Ross, Gordon and Bagnell 2011, "A Reduction of Imitation
Learning and Structured Prediction to No-Regret Online Learning") labels those states with the expert.

- `run_linear(LinearConfig(...))`: x' = A x + u + w with spectral radius `radius` and its LQR expert.
- `run_cartpole(CartPoleConfig(...))`: gymnasium's CartPole-v1 (the `control` extra) with an LQR expert.

Both return the JSON of `unforced control --json` (DESIGN.md). gymnasium is imported only when CartPole runs.
"""

from unforced.control.cartpole import CartPoleConfig, run_cartpole
from unforced.control.common import growth_rate, lqr_gain
from unforced.control.linear import LinearConfig, run_linear

__all__ = ["CartPoleConfig", "LinearConfig", "growth_rate", "lqr_gain", "run_cartpole", "run_linear"]

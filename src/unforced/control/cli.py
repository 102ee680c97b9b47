"""`unforced control`: behaviour cloning against DAgger on a linear system or CartPole (docs/control.md). The
main CLI registers this function as its `control` command; gymnasium (the `control` extra) is imported only for
CartPole. `--json` prints the result alone on stdout; progress goes to stderr; bad arguments raise
UnforcedError, which the main command turns into exit code 2 and one line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from unforced.errors import UnforcedError
from unforced.runfiles import atomic_write_text

ENVIRONMENTS = ("linear", "cartpole")
stderr = Console(stderr=True)


def default_out(env: str, radius: float | None) -> Path:
    return Path("runs") / (f"control-{env}" + (f"-radius-{radius:g}" if radius is not None else ""))


def control(env: str = typer.Option(..., "--env", help="linear (x' = A x + u + w) or cartpole (CartPole-v1)"),
            radius: float | None = typer.Option(None, "--radius",
                                                help="spectral radius of A, linear only (default 1.1)"),
            horizon: int | None = typer.Option(None, "--horizon",
                                               help="steps per episode (default 100 linear, 500 cartpole)"),
            seeds: int = typer.Option(5, "--seeds", help="independent repetitions; figures are means over them"),
            as_json: bool = typer.Option(False, "--json", help="print the JSON result alone on stdout"),
            out: Path | None = typer.Option(None, "--out",
                                            help="folder for result.json and deviation.png "
                                                 "(default runs/control-ENV[-radius-R])")):
    """Behaviour cloning vs DAgger where the dynamics compound a small error: deviation from the expert's
    trajectory against time, its growth rate, cost and expert labels, with a figure."""
    from unforced.control.cartpole import CartPoleConfig, run_cartpole
    from unforced.control.figure import plot_control
    from unforced.control.linear import LinearConfig, run_linear

    if env not in ENVIRONMENTS:
        raise UnforcedError(f"--env must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
    if env == "cartpole" and radius is not None:
        raise UnforcedError("--radius applies to --env linear only (CartPole's dynamics are its own)")
    options = {key: value for key, value in {"radius": radius, "horizon": horizon, "seeds": seeds}.items()
               if value is not None}
    progress = lambda message: stderr.print(message, highlight=False)  # noqa: E731
    config = LinearConfig(**options) if env == "linear" else CartPoleConfig(**options)
    out = out or default_out(env, config.radius if env == "linear" else None)
    try:
        out.mkdir(parents=True, exist_ok=True)  # before the run: a folder that cannot be written fails at once
    except OSError as error:
        raise UnforcedError(f"--out {out}: cannot write there: {error}") from None
    result = run_linear(config, progress) if env == "linear" else run_cartpole(config, progress)
    try:
        atomic_write_text(json.dumps(result, indent=2) + "\n", out / "result.json")
        figure = plot_control(result, out / "deviation.png")
    except OSError as error:
        raise UnforcedError(f"--out {out}: cannot write there: {error}") from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    for learner, entry in result["learners"].items():
        stderr.print(f"{learner}: growth rate {entry['growth_rate']:.4f}/step, cost {entry['cost']:.4g}, "
                     f"expert labels {entry['expert_labels']}" +
                     (f", rounds {entry['rounds']}" if "rounds" in entry else ""), highlight=False)
    stderr.print(f"expert: cost {result['expert']['cost']:.4g}\nresult: {out / 'result.json'}\nfigure: {figure}",
                 highlight=False)


__all__ = ["control", "default_out"]

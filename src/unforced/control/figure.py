"""The figure of `unforced control`: deviation from the expert's trajectory against time (mean and band over
seeds) for both learners, beside the excess cost against the horizon on log-log axes (linear system) or the
episode length against expert labels (CartPole)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAMES = {"behaviour_cloning": "behaviour cloning", "dagger": "DAgger"}
COLOURS = {"behaviour_cloning": "tab:red", "dagger": "tab:blue"}


def plot_control(result: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    title = f"{result['env']}" + (f", spectral radius {result['radius']:g}" if result["radius"] is not None else "")
    for learner, entry in result["learners"].items():
        steps = np.arange(len(entry["deviation"]))
        label = f"{NAMES[learner]} (growth {entry['growth_rate']:.3f}/step)"
        left.plot(steps, entry["deviation"], color=COLOURS[learner], label=label)
        left.fill_between(steps, entry["deviation_spread"]["min"], entry["deviation_spread"]["max"],
                          color=COLOURS[learner], alpha=0.2, linewidth=0)
    equal = result["learners"]["behaviour_cloning"].get("at_dagger_labels")
    if equal is not None:  # CartPole: behaviour cloning stopped at the labels DAgger needed
        left.plot(np.arange(len(equal["deviation"])), equal["deviation"], color=COLOURS["behaviour_cloning"],
                  linestyle="--", label=f"behaviour cloning at DAgger's {equal['expert_labels']} labels "
                                        f"(episode length {equal['episode_length']:.0f})")
    left.set(xlabel="time step", ylabel="|x_learner - x_expert|", title=f"deviation from the expert ({title})")
    if result["env"] == "linear":
        left.set_yscale("log")
        for learner, entry in result["learners"].items():
            excess = np.asarray(entry["excess_cost"]["values"], dtype=float)
            horizons = np.asarray(entry["excess_cost"]["horizons"], dtype=float)
            keep = excess > 0
            slope = entry["excess_cost"]["slope"]
            reference = 2 if learner == "behaviour_cloning" else 1
            right.loglog(horizons[keep], excess[keep], "o-", color=COLOURS[learner],
                         label=f"{NAMES[learner]}: slope {slope:.2f}" if slope is not None else NAMES[learner])
            if keep.any():
                anchor = horizons[keep][0], excess[keep][0]
                right.loglog(horizons, anchor[1] * (horizons / anchor[0]) ** reference, ":", color=COLOURS[learner],
                             label=f"Ross-Bagnell reference slope {reference}")
        right.set(xlabel="horizon T", ylabel="excess cost over the expert", title="excess cost against horizon")
    else:
        for learner, entry in result["learners"].items():
            curve = entry["episode_length_by_labels"]
            right.plot(curve["labels"], curve["mean"], color=COLOURS[learner],
                       label=f"{NAMES[learner]}: {entry['expert_labels']} labels to the expert's length")
            right.fill_between(curve["labels"], curve["min"], curve["max"], color=COLOURS[learner], alpha=0.2,
                               linewidth=0)
        right.axhline(result["expert"]["episode_length"], color="black", linestyle=":", label="expert")
        right.set(xlabel="expert labels", ylabel="mean episode length", title="episode length against labels")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = ["plot_control"]

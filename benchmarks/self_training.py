"""Self-training with scarce labels, and SPIN against preference and SCST with all labels, on `bible-en-es`.

Both parts, per seed: a GRU translator trained with teacher forcing until validation BLEU stalls (unforced.switch,
best weights), then from that model branches of equal steps over the same batches (benchmarks/_branches.py),
scored on the held-out test books with greedy decoding: corpus BLEU and chrF (unforced.diagnostics.evaluate).

1. Scarce labels: `get_task("bible-en-es", labelled=0.1)` keeps 10% of the train split labelled and makes the
   rest's sources `task.unlabelled`. Branches: more teacher forcing on the labelled share, and `self_training`
   (He et al. 2020: its own beam's pseudo-labels on the unlabelled sources, kept above a confidence threshold,
   beside the labelled batch; the threshold keeps half of the start model's beam outputs on the valid sources).
2. All labels: the whole train split. Branches: more teacher forcing, `spin` (Chen et al. 2024: DPO of the gold
   against the model's own sample, the previous iterate as reference), `preference` (online DPO on sampled pairs
   ranked by sentence BLEU) and SCST (`reinforce`, greedy baseline, Rennie et al. 2017; reward sentence BLEU).

The relative change of each branch over more teacher forcing, value / value_tf_more - 1, per seed, then mean and
spread over seeds; a difference is beyond the spread when mean - stdev > 0 (or mean + stdev < 0). Equal steps are
not equal work: the branches that decode (beam, samples, greedy baseline) cost more per step, and self-training
also trains on its pseudo-labelled rows; the seconds of every branch are reported beside its scores. No choice
is made on the test split: the stopping point of teacher forcing and the self-training threshold are chosen on
valid, the other branch settings are fixed in advance (SIZES).

    python benchmarks/self_training.py [--quick] [--json] [--seeds N]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _branches import relative, spread, train  # noqa: E402
from common import goal, print_goals, provenance  # noqa: E402

from unforced.diagnostics import evaluate  # noqa: E402
from unforced.models import ModelConfig, build_model  # noqa: E402
from unforced.strategies.preference import Preference, PreferenceConfig  # noqa: E402
from unforced.strategies.reinforce import Reinforce, ReinforceConfig  # noqa: E402
from unforced.strategies.self_training import SelfTraining, SelfTrainingConfig  # noqa: E402
from unforced.strategies.spin import Spin, SpinConfig  # noqa: E402
from unforced.strategies.teacher_forcing import TeacherForcing  # noqa: E402
from unforced.switch import Patience, SwitchConfig  # noqa: E402
from unforced.tasks import get_task  # noqa: E402
from unforced.tasks.base import Task  # noqa: E402

PARTS = {"scarce_labels": ("tf_more", "self_training"),
         "all_labels": ("tf_more", "spin", "preference", "scst")}
METRICS = ("bleu", "chrf")
# The full size is sized for about 30 minutes on one busy core (measured at hidden 128, batch 32, max_words 20,
# one thread beside another job: ~70 ms a teacher-forcing step, ~100-200 ms a step of the decoding branches).
SIZES = {
    "quick": {"task": {"size": 400, "max_words": 12, "vocab_size": 300}, "seeds": 2, "steps": 6, "eval_every": 3,
              "patience": 1, "fine_tune": 2, "batch_size": 8, "embedding": 16, "hidden": 24, "valid_limit": 16,
              "test_limit": 16, "lr": 2e-3, "branch_lr": 3e-4, "beam": 2, "samples": 2, "keep": 0.5},
    "full": {"task": {"max_words": 20}, "seeds": 3, "steps": 2000, "eval_every": 200, "patience": 2,
             "fine_tune": 250, "batch_size": 32, "embedding": 64, "hidden": 128, "valid_limit": None,
             "test_limit": None, "lr": 2e-3, "branch_lr": 3e-4, "beam": 3, "samples": 2, "keep": 0.5},
}


class Logged:
    """A strategy whose step logs are summed, so that a branch reports their means (kept pseudo-labels, pairs,
    collapse) beside its scores."""

    def __init__(self, strategy):
        self.strategy, self.sums, self.steps = strategy, {}, 0

    def loss(self, model, batch, step: int):
        output = self.strategy.loss(model, batch, step)
        for key, value in output.logs.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.steps += 1
        return output

    def means(self) -> dict:
        return {key: round(total / self.steps, 4) for key, total in self.sums.items()}


def calibrated_threshold(model, task: Task, size: dict) -> float:
    """The confidence (mean log-probability per token) that the start model's beam exceeds on `keep` of the
    valid sources it ends: a threshold that keeps about that share of its pseudo-labels at the start, chosen on
    valid (the fixed default, -0.5, keeps none from a model this weak)."""
    labeller = SelfTraining(SelfTrainingConfig(beam=size["beam"], threshold=float("-inf"))).bind(task)
    sources = [example.source for example in task.valid[:size["valid_limit"]]]
    labels = labeller.pseudo_labels(model, sources, model.config.max_target_len)
    ended = labels.confidence[labels.kept]  # (ended,) every hypothesis that ends in <eos> and fits
    if len(ended) == 0:
        return 0.0  # nothing ends: keep nothing, as the default would
    return min(0.0, float(torch.quantile(ended, 1.0 - size["keep"])))


def branch_strategy(name: str, size: dict, seed: int, task: Task, threshold: float | None = None):
    if name == "tf_more":
        return TeacherForcing()
    if name == "self_training":  # pseudo-labels of the beam above the threshold calibrated on valid
        return SelfTraining(SelfTrainingConfig(beam=size["beam"], threshold=threshold), seed=seed).bind(task)
    if name == "spin":  # two iterations over the branch: the reference refreshed half way
        return Spin(SpinConfig(iteration_steps=max(1, size["fine_tune"] // 2)), seed=seed)
    if name == "preference":
        return Preference(PreferenceConfig(samples=size["samples"]), seed=seed).bind(task)
    if name == "scst":
        return Reinforce(ReinforceConfig(baseline="greedy", samples=size["samples"]), seed=seed).bind(task)
    raise ValueError(name)


def test_scores(model, task: Task, limit: int | None) -> tuple[dict, dict]:
    """Greedy corpus BLEU and chrF on the test split, against every reference; and how they were measured."""
    metric = evaluate(model, task, "test", limit=limit)["metric"]
    return ({"bleu": round(metric["fr"], 4), "chrf": round(metric["companions"]["chrf"]["fr"], 4)},
            {"bleu_signature": metric["signature"], "decode": metric["decode"], "references": metric["nrefs"]})


def compare(part: str, task: Task, size: dict, seed: int, scratch: Path) -> dict:
    """Teacher forcing until validation BLEU stalls (best weights), then every branch of `part` for the same steps
    over the same batches from that model."""
    longest_source, longest_target = task.longest()
    torch.manual_seed(seed)
    model = build_model(ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                                    target_vocab=task.target_tokenizer.vocab_size, embedding=size["embedding"],
                                    hidden=size["hidden"], dropout=0.1, max_source_len=longest_source,
                                    max_target_len=longest_target))
    patience = Patience(SwitchConfig(metric="bleu", patience=size["patience"]), scratch / f"{part}-{seed}.pt")
    done = train(model, TeacherForcing(), task, size["steps"], size["batch_size"], size["lr"], seed,
                 patience=patience, eval_every=size["eval_every"], valid_limit=size["valid_limit"])
    log(f"{part} seed {seed}: teacher forcing {done['steps']} steps, best validation BLEU {patience.best:.2f} at "
        f"step {patience.best_step} ({done['seconds']:.0f} s)")
    seconds = {"tf_start": done["seconds"]}
    scores, measured = {}, {}
    scores["tf_start"], measured = test_scores(model, task, size["test_limit"])
    threshold = calibrated_threshold(model, task, size) if "self_training" in PARTS[part] else None
    logs = {}
    for name in PARTS[part]:
        branch = copy.deepcopy(model)
        torch.manual_seed(seed)  # the same dropout masks in every branch for as long as their work is the same
        strategy = Logged(branch_strategy(name, size, seed, task, threshold))
        seconds[name] = train(branch, strategy, task, size["fine_tune"], size["batch_size"], size["branch_lr"],
                              seed, start=done["steps"])["seconds"]
        began = time.perf_counter()
        scores[name], _ = test_scores(branch, task, size["test_limit"])
        seconds[f"{name}_test"] = time.perf_counter() - began
        logs[name] = strategy.means()
        log(f"{part} seed {seed}: {name} test BLEU {scores[name]['bleu']:.2f} chrF {scores[name]['chrf']:.2f} "
            f"({seconds[name]:.0f} s)")
    changes = {f"{name}_over_{base}": {m: relative(scores[name][m], scores[base][m]) for m in METRICS}
               for base in ("tf_more", "tf_start") for name in PARTS[part] if name != base}
    return {"seed": seed, "switch": {**patience.summary(), "steps_trained": done["steps"]}, "test_scores": scores,
            "measured": measured, "relative": {k: {m: None if v is None else round(v, 6) for m, v in c.items()} for k, c in changes.items()},
            "branch_logs": logs, "self_training_threshold": None if threshold is None else round(threshold, 4),
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def side(figure: dict) -> str:
    """Where a relative change lies against its seed spread: above, below or within (one stdev)."""
    if figure["mean"] is None or len(figure["values"]) < 2:
        return "unknown"
    if figure["mean"] - figure["stdev"] > 0:
        return "above"
    return "below" if figure["mean"] + figure["stdev"] < 0 else "within"


def measure(part: str, task: Task, size: dict, seeds: int, scratch: Path) -> dict:
    runs = [compare(part, task, size, seed, scratch) for seed in range(seeds)]
    first = runs[0]
    scores = {name: {m: spread([run["test_scores"][name][m] for run in runs]) for m in METRICS}
              for name in first["test_scores"]}
    changes = {key: {m: spread([run["relative"][key][m] for run in runs]) for m in METRICS}
               for key in first["relative"]}
    return {"runs": runs, "test_scores": scores, "relative": changes,
            "against_spread": {key: {m: side(figure) for m, figure in entry.items()} for key, entry in changes.items()},
            "seconds": {key: spread([run["seconds"][key] for run in runs]) for key in first["seconds"]},
            "task": {"train": len(task.train), "unlabelled": len(task.unlabelled), "valid": len(task.valid),
                     "test": len(task.test) if size["test_limit"] is None else min(len(task.test),
                                                                                  size["test_limit"]),
                     "settings": task.settings}}


def setup(size: dict) -> dict:
    return {
        "task": f"bible-en-es, options {size['task']}; scarce labels: labelled=0.1 (the same seeded 10% for every "
                "training seed); the tokenizers are trained on the whole train split's text in both parts, so "
                "the scarce-label vocabulary has seen the unlabelled rows' references",
        "model": f"gru, embedding {size['embedding']}, hidden {size['hidden']}, dropout 0.1",
        "teacher_forcing": f"up to {size['steps']} steps, batch {size['batch_size']}, Adam lr {size['lr']}, "
                           f"validated every {size['eval_every']} steps on valid (greedy BLEU), stopped after "
                           f"{size['patience']} evaluations without a better one, best weights",
        "branches": f"{size['fine_tune']} steps each from the same model over the same batches, Adam lr "
                    f"{size['branch_lr']}, batch {size['batch_size']}",
        "equal_work": "equal steps and labelled batches, not equal work: self_training decodes a beam of "
                      f"{size['beam']} over {size['batch_size']} unlabelled sources a step and trains on the kept "
                      f"ones too; spin samples one sequence per source; preference samples {size['samples']} and "
                      f"scst {size['samples']} plus a greedy baseline; each branch's seconds are reported",
        "strategies": {"self_training": f"beam {size['beam']}, ratio 1, threshold per seed: the confidence "
                                        f"that the start model's beam exceeds on {size['keep']:.0%} of the valid "
                                        "sources it ends (self_training_threshold in each run)",
                       "spin": f"beta 0.1, iteration_steps {max(1, size['fine_tune'] // 2)}, temperature 1",
                       "preference": f"best_worst pairs of {size['samples']} samples, reward sentence BLEU, "
                                     "beta 0.1",
                       "scst": f"reinforce, baseline greedy, {size['samples']} samples, reward sentence BLEU"},
        "scores": "test split (held-out books John, Esther, James, Jude), greedy decoding with the model's "
                  "budget, sacrebleu corpus BLEU and chrF against every reference (unforced.diagnostics.evaluate)",
        "relative": "value / value_base - 1 per seed (None where the base is 0), then mean and spread over seeds; "
                    "against_spread: above when mean - stdev > 0, below when mean + stdev < 0, else within",
    }


def goal_at_least_zero(figure: dict) -> dict:
    """The goal that a branch be no worse than more teacher forcing: the mean relative change at least 0."""
    if figure["mean"] is None:
        return {"value": None, "goal": 0.0, "met": False, "direction": "at least"}
    return goal(figure["mean"], 0.0, lower_is_better=False)


def log(message: str) -> None:
    print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke size the tests run")
    parser.add_argument("--json", action="store_true", help="print the JSON document alone on stdout")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds (default 3, quick 2)")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)  # a small GRU gains nothing from more, and the benchmark shares its machine
    name = "quick" if arguments.quick else "full"
    size = SIZES[name]
    seeds = arguments.seeds or size["seeds"]
    began = time.perf_counter()
    document: dict = {"benchmark": "self_training", "size": name, "seeds": seeds, "provenance": provenance(),
                      "setup": setup(size)}
    with tempfile.TemporaryDirectory(prefix="self-training-bench-") as scratch:
        for part, labelled in (("scarce_labels", 0.1), ("all_labels", 1.0)):
            task = get_task("bible-en-es", **size["task"], labelled=labelled)
            document[part] = measure(part, task, size, seeds, Path(scratch))
    document["seconds"] = round(time.perf_counter() - began, 1)
    scarce, full = document["scarce_labels"]["relative"], document["all_labels"]["relative"]
    document["goals"] = {
        "self_training_bleu_over_tf_more": goal_at_least_zero(scarce["self_training_over_tf_more"]["bleu"]),
        "spin_bleu_over_tf_more": goal_at_least_zero(full["spin_over_tf_more"]["bleu"]),
    }
    if arguments.json:
        print(json.dumps(document, indent=2))
    print_goals({k: v for k, v in document["goals"].items() if v["value"] is not None})
    return document


if __name__ == "__main__":
    main()

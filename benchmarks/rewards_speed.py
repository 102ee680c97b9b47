"""Speed of CIDEr-D and BLEU against the reference code they equal, with equal work on both sides.

CIDEr-D on a set (goal: >= 10x): `corpus_score("cider_d", ...)` against pycocoevalcap's `Cider().compute_score`
on one test set of 5,000 candidates x 5 references. Both take the document frequencies from that set (one
document per candidate) and score every candidate; the per-candidate scores and the mean are checked equal.

CIDEr-D per SCST batch (goal: >= 10x): our `CiderD(corpus)` (df and every reference's tf-idf vector computed
once per corpus, as an SCST reward is called batch after batch) against the SCST code's CiderD scorer (df loaded
once; each batch re-vectorises every reference for every hypothesis), as the loop-for-loop port that
`tests/test_rewards.py` holds equal to it; batches of 64 hypotheses x 5 references. The port's re-vectorising is
work it cannot switch off, so the ratio is also given against our first ("cold") pass, which vectorises every
reference as well. Both sides' one-off df build is timed beside them. pycocoevalcap and our `CiderD()` on each
batch (df from the batch) are timed too, for scale.

BLEU: ours (one BLEU object, reference n-grams cached) against `sacrebleu.sentence_bleu` in a loop.

The captions are synthetic, from a seeded generator: Zipf-distributed words, 5 captions per item, so that
n-grams repeat as in real captions; half the hypotheses are a reference with one word changed, half unrelated.
Times are milliseconds, from `interleaved` (the variants of a comparison alternate, in rotating order): median
and min over the repeats; per-batch figures are one pass over the batches divided by their number. Rewards score
strings with numpy on the CPU: `--device` (which every benchmark takes) is recorded and must be "cpu" or "auto".

    python benchmarks/rewards_speed.py [--quick] [--json] [--device cpu]
"""

import argparse
import importlib.util
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
from common import goal, interleaved, print_goals, provenance

from unforced.rewards import CiderD, _scorer, sentence_bleu
from unforced.rewards.corpus import corpus_score

ROOT = Path(__file__).resolve().parents[1]
SPEEDUP_GOAL = 10.0
EQUALITY_GOAL = 1e-6


def load_reference_port():
    # The reference port lives beside the test that holds it equal to pycocoevalcap; load it from there.
    spec = importlib.util.spec_from_file_location("_rewards_reference", ROOT / "tests" / "test_rewards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_corpus(seed: int, items: int, references: int = 5, vocabulary: int = 2000):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocabulary)]
    weights = [1.0 / (i + 1) for i in range(vocabulary)]

    def caption():
        return " ".join(rng.choices(words, weights, k=rng.randint(6, 16)))

    return [[caption() for _ in range(references)] for _ in range(items)], rng, caption


def make_hypotheses(references, rng, caption) -> list[str]:
    # Half the hypotheses near a reference (one word changed), half unrelated: rewards of both kinds.
    hypotheses = []
    for refs in references:
        words = rng.choice(refs).split()
        if rng.random() < 0.5:
            words[rng.randrange(len(words))] = "w7"
            hypotheses.append(" ".join(words))
        else:
            hypotheses.append(caption())
    return hypotheses


def make_batches(corpus, rng, caption, batches: int, batch_size: int):
    out = []
    for _ in range(batches):
        references = [corpus[i] for i in rng.sample(range(len(corpus)), batch_size)]
        out.append((make_hypotheses(references, rng, caption), references))
    return out


def once_ms(function) -> float:
    start = time.perf_counter()
    function()
    return 1000.0 * (time.perf_counter() - start)


def per_batch(timing: dict, batches: int) -> dict:
    """`interleaved`'s milliseconds per pass over the batches, as milliseconds per batch."""
    return {key: round(timing[key] / batches, 3) for key in ("median", "min", "max")}


def ratios(slow: dict, fast: dict) -> dict:
    return {"median": round(slow["median"] / fast["median"], 2), "min": round(slow["min"] / fast["min"], 2)}


def coco_inputs(hypotheses, references):
    return {i: list(refs) for i, refs in enumerate(references)}, {i: [h] for i, h in enumerate(hypotheses)}


def cider_d_on_a_set(set_size: int, repeats: int) -> dict:
    from pycocoevalcap.cider.cider import Cider as CocoCider

    references, rng, caption = make_corpus(1, set_size)
    hypotheses = make_hypotheses(references, rng, caption)
    gts, res = coco_inputs(hypotheses, references)  # pycocoevalcap's input format, built outside the timing
    timing = interleaved({
        "ours_corpus_score": lambda: corpus_score("cider_d", hypotheses, references),
        "pycocoevalcap_cider_compute_score": lambda: CocoCider().compute_score(gts, res),
    }, repeats=repeats, warmup=1)
    coco_mean, coco_scores = CocoCider().compute_score(gts, res)
    ours_scores = CiderD()(hypotheses, references)  # what corpus_score averages
    ours_mean = corpus_score("cider_d", hypotheses, references)
    return {
        "candidates": set_size,
        "references_per_candidate": 5,
        "equal_work": "both take the document frequencies from the scored set (one document per candidate, "
                      "df and log|D| as pycocoevalcap's Cider computes them) and compute every candidate's "
                      "CIDEr-D against its 5 references; inputs are built before timing, in each one's format "
                      "(lists for ours, pycocoevalcap's gts/res dicts); no PTB tokenizer on either side",
        "signature": ours_mean.signature,
        "ms": {name: {key: round(value, 2) for key, value in entry.items() if key != "samples"}
               for name, entry in timing.items()},
        "samples_ms": {name: [round(v, 2) for v in entry["samples"]] for name, entry in timing.items()},
        "speedup_pycocoevalcap_over_ours": ratios(timing["pycocoevalcap_cider_compute_score"],
                                                  timing["ours_corpus_score"]),
        "mean": {"ours": ours_mean.value, "pycocoevalcap": float(coco_mean)},
        "max_abs_difference": {
            "per_candidate": float(np.abs(ours_scores - np.asarray(coco_scores)).max()),
            "mean": abs(ours_mean.value - float(coco_mean)),
        },
    }


def cider_d_per_batch(items: int, batches_count: int, batch_size: int, repeats: int) -> dict:
    from pycocoevalcap.cider.cider import Cider as CocoCider

    reference = load_reference_port()
    corpus, rng, caption = make_corpus(0, items)
    batches = make_batches(corpus, rng, caption, batches_count, batch_size)

    ours_build = once_ms(lambda: CiderD(corpus))  # the first CiderD of a corpus computes its df
    scst_build = once_ms(lambda: reference.ReferenceCiderD(corpus))
    ours, scst = CiderD(corpus), reference.ReferenceCiderD(corpus)
    # The first pass vectorises each reference as it is first seen; later passes find every one cached.
    cold = [once_ms(lambda h=h, r=r: ours(h, r)) for h, r in batches]
    batch_df = CiderD()
    coco_batches = [coco_inputs(h, r) for h, r in batches]
    timing = interleaved({
        "ours_corpus_cached": lambda: [ours(h, r) for h, r in batches],
        "scst_ciderd_port": lambda: [reference.reference_scores(scst, h, r) for h, r in batches],
        "ours_batch_df": lambda: [batch_df(h, r) for h, r in batches],
        "pycocoevalcap_batch_df": lambda: [CocoCider().compute_score(g, s) for g, s in coco_batches],
    }, repeats=repeats, warmup=1)
    ms = {name: per_batch(entry, batches_count) for name, entry in timing.items()}
    ms["ours_corpus_cold_first_pass"] = {"median": round(statistics.median(cold), 3),
                                         "min": round(min(cold), 3), "max": round(max(cold), 3)}

    difference_scst = max(float(np.abs(ours(h, r) - reference.reference_scores(scst, h, r)).max())
                          for h, r in batches)
    difference_coco = max(float(np.abs(batch_df(h, r) - CocoCider().compute_score(g, s)[1]).max())
                          for (h, r), (g, s) in zip(batches, coco_batches, strict=True))
    return {
        "corpus_items": items,
        "corpus_captions": items * 5,
        "batches": batches_count,
        "batch_size": batch_size,
        "references_per_hypothesis": 5,
        "equal_work": "both score every hypothesis of a batch against its 5 references with df from the same "
                      "corpus, computed once; ours also keeps each reference's tf-idf vector after its first "
                      "batch, the port re-vectorises every reference each batch (it cannot switch that off): "
                      "the cold ratio is against our first pass, which vectorises every reference too",
        "df_build_once_ms": {"ours": round(ours_build, 2), "scst_ciderd_port": round(scst_build, 2)},
        "ms_per_batch": ms,
        "speedup": {
            "scst_port_over_ours_corpus_cached": ratios(ms["scst_ciderd_port"], ms["ours_corpus_cached"]),
            "scst_port_over_ours_cold_first_pass": ratios(ms["scst_ciderd_port"],
                                                          ms["ours_corpus_cold_first_pass"]),
            "pycocoevalcap_over_ours_batch_df": ratios(ms["pycocoevalcap_batch_df"], ms["ours_batch_df"]),
        },
        "max_abs_difference": {"corpus_cached_vs_scst_port": difference_scst,
                               "batch_df_vs_pycocoevalcap": difference_coco},
    }


def bleu_per_batch(items: int, batches_count: int, batch_size: int, repeats: int) -> dict:
    import sacrebleu
    from sacrebleu.metrics import BLEU

    corpus, rng, caption = make_corpus(0, items)
    batches = make_batches(corpus, rng, caption, batches_count, batch_size)
    _scorer("bleu")._references.clear()  # the first pass meets every reference set uncached
    cold = [once_ms(lambda h=h, r=r: sentence_bleu(h, r)) for h, r in batches]
    reused = BLEU(effective_order=True)
    timing = interleaved({
        "ours_warm": lambda: [sentence_bleu(h, r) for h, r in batches],
        "sacrebleu_sentence_bleu_loop": lambda: [
            [sacrebleu.sentence_bleu(x, y).score for x, y in zip(h, r, strict=True)] for h, r in batches],
        "reused_bleu_sentence_score_loop": lambda: [
            [reused.sentence_score(x, y).score for x, y in zip(h, r, strict=True)] for h, r in batches],
    }, repeats=repeats, warmup=1)
    ms = {name: per_batch(entry, batches_count) for name, entry in timing.items()}
    ms["ours_cold_first_pass"] = {"median": round(statistics.median(cold), 3), "min": round(min(cold), 3),
                                  "max": round(max(cold), 3)}
    hypotheses, references = batches[0]
    expected = [sacrebleu.sentence_bleu(x, y).score for x, y in zip(hypotheses, references, strict=True)]
    return {
        "batches": batches_count,
        "batch_size": batch_size,
        "ms_per_batch": ms,
        "speedup": {
            "sacrebleu_loop_over_ours_cold_first_pass": ratios(ms["sacrebleu_sentence_bleu_loop"],
                                                               ms["ours_cold_first_pass"]),
            "sacrebleu_loop_over_ours_warm": ratios(ms["sacrebleu_sentence_bleu_loop"], ms["ours_warm"]),
            "sacrebleu_loop_over_reused_object_loop": ratios(ms["sacrebleu_sentence_bleu_loop"],
                                                             ms["reused_bleu_sentence_score_loop"]),
        },
        "max_abs_difference_vs_sacrebleu": float(np.abs(sentence_bleu(hypotheses, references) - expected).max()),
    }


def scst_benchmark_keys(cider_batch: dict, bleu: dict) -> dict:
    """The per-batch medians again, under the names (and the ratios) that benchmarks/scst.py reads."""
    cider_ms, bleu_ms = cider_batch["ms_per_batch"], bleu["ms_per_batch"]
    return {
        "batch_size": cider_batch["batch_size"],
        "references_per_hypothesis": cider_batch["references_per_hypothesis"],
        "cider_d_ms": {
            "ours_corpus_df_build_once": cider_batch["df_build_once_ms"]["ours"],
            "ours_corpus_df_cold": cider_ms["ours_corpus_cold_first_pass"]["median"],
            "ours_corpus_df_warm": cider_ms["ours_corpus_cached"]["median"],
            "ours_batch_df": cider_ms["ours_batch_df"]["median"],
            "pycocoevalcap_cider": cider_ms["pycocoevalcap_batch_df"]["median"],
            "scst_ciderd_reference": cider_ms["scst_ciderd_port"]["median"],
        },
        "cider_d_speedup": {
            "scst_reference_over_ours_warm": cider_batch["speedup"]["scst_port_over_ours_corpus_cached"]["median"],
            "scst_reference_over_ours_cold":
                cider_batch["speedup"]["scst_port_over_ours_cold_first_pass"]["median"],
            # Unequal work (pycocoevalcap recomputes df and every vector per batch); kept for scst.py.
            "pycocoevalcap_over_ours_warm": round(cider_ms["pycocoevalcap_batch_df"]["median"]
                                                  / cider_ms["ours_corpus_cached"]["median"], 2),
            "pycocoevalcap_over_ours_batch_df": cider_batch["speedup"]["pycocoevalcap_over_ours_batch_df"]["median"],
        },
        "cider_d_max_abs_difference": {
            "vs_scst_reference": cider_batch["max_abs_difference"]["corpus_cached_vs_scst_port"],
            "vs_pycocoevalcap": cider_batch["max_abs_difference"]["batch_df_vs_pycocoevalcap"],
        },
        "bleu_ms": {
            "ours_cold": bleu_ms["ours_cold_first_pass"]["median"],
            "ours_warm": bleu_ms["ours_warm"]["median"],
            "sacrebleu_sentence_bleu_loop": bleu_ms["sacrebleu_sentence_bleu_loop"]["median"],
            "reused_bleu_sentence_score_loop": bleu_ms["reused_bleu_sentence_score_loop"]["median"],
        },
        "bleu_speedup": {key: value["median"] for key, value in {
            "sacrebleu_loop_over_ours_cold": bleu["speedup"]["sacrebleu_loop_over_ours_cold_first_pass"],
            "sacrebleu_loop_over_ours_warm": bleu["speedup"]["sacrebleu_loop_over_ours_warm"],
            "sacrebleu_loop_over_reused_object_loop": bleu["speedup"]["sacrebleu_loop_over_reused_object_loop"],
        }.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the smoke variant the tests run")
    parser.add_argument("--json", action="store_true", help="print the JSON result alone")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu"),
                        help="rewards run on the CPU (strings and numpy); recorded in the JSON")
    args = parser.parse_args(argv)

    if args.quick:
        set_size, items, batches_count, batch_size, repeats = 300, 300, 4, 32, 5
    else:
        set_size, items, batches_count, batch_size, repeats = 5000, 1000, 20, 64, 5
    cider_set = cider_d_on_a_set(set_size, repeats)
    cider_batch = cider_d_per_batch(items, batches_count, batch_size, repeats)
    bleu = bleu_per_batch(items, batches_count, batch_size, repeats)

    goals = {
        "cider_d_set_speedup_over_pycocoevalcap": goal(
            cider_set["speedup_pycocoevalcap_over_ours"]["median"], SPEEDUP_GOAL, lower_is_better=False),
        "cider_d_set_max_abs_difference_vs_pycocoevalcap": goal(
            max(cider_set["max_abs_difference"].values()), EQUALITY_GOAL),
        "cider_d_corpus_cached_speedup_over_scst_port": goal(
            cider_batch["speedup"]["scst_port_over_ours_corpus_cached"]["median"], SPEEDUP_GOAL,
            lower_is_better=False),
        "cider_d_corpus_cached_max_abs_difference_vs_scst_port": goal(
            cider_batch["max_abs_difference"]["corpus_cached_vs_scst_port"], EQUALITY_GOAL),
    }
    result = {
        "provenance": provenance(device="cpu"),
        "benchmark": "rewards_speed",
        "quick": args.quick,
        "device": "cpu",
        "timing": f"interleaved, {repeats} repeats after 1 warm-up round; ratios of medians and of mins",
        "cider_d_set": cider_set,
        "cider_d_per_batch": cider_batch,
        "bleu_per_batch": bleu,
        "goals": goals,
        # benchmarks/scst.py reads these names: the per-batch medians above again.
        **scst_benchmark_keys(cider_batch, bleu),
    }
    if not args.json:
        print_goals(goals)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

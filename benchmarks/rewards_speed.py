"""Speed of the batched rewards against the reference code they equal, per batch of 64 hypotheses x 5 references.

CIDEr-D: ours (document frequencies and reference vectors computed once per corpus) against pycocoevalcap's
`Cider` (the COCO evaluation code: df from the scored batch, everything recomputed each call) and against the
SCST CiderD scorer (df precomputed from the corpus once; each batch re-vectorises every reference for every
hypothesis), the latter as the loop-for-loop port that `tests/test_rewards.py` holds equal to it.
BLEU: ours (one BLEU object, reference n-grams cached) against `sacrebleu.sentence_bleu` in a loop.

The corpus is synthetic, from a seeded generator: Zipf-distributed words, 5 captions per item, so that n-grams
repeat as in real captions. Times are medians over batches in milliseconds; "cold" is the first pass over the
batches (reference vectors not cached yet), "warm" a later pass (as in a second epoch, or several samples per
image). Prints JSON. Rewards score strings with numpy on the CPU: `--device` (which every benchmark takes) is
recorded in the JSON and must be the CPU or "auto"; there is nothing to move.

    python benchmarks/rewards_speed.py [--quick] [--json] [--device cpu]
"""

import argparse
import importlib.util
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from unforced.rewards import CiderD, _scorer, sentence_bleu

ROOT = Path(__file__).resolve().parents[1]


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


def make_batches(corpus, rng, caption, batches: int, batch_size: int):
    out = []
    for _ in range(batches):
        items = rng.sample(range(len(corpus)), batch_size)
        references = [corpus[i] for i in items]
        # Half the hypotheses near a reference (one word changed), half unrelated: rewards of both kinds.
        hypotheses = []
        for refs in references:
            words = rng.choice(refs).split()
            if rng.random() < 0.5:
                words[rng.randrange(len(words))] = "w7"
                hypotheses.append(" ".join(words))
            else:
                hypotheses.append(caption())
        out.append((hypotheses, references))
    return out


def median_ms(function, batches) -> float:
    times = []
    for hypotheses, references in batches:
        start = time.perf_counter()
        function(hypotheses, references)
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller corpus and fewer batches")
    parser.add_argument("--json", action="store_true", help="print the JSON result alone")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu"),
                        help="rewards run on the CPU (strings and numpy); recorded in the JSON")
    args = parser.parse_args(argv)

    from pycocoevalcap.cider.cider import Cider as CocoCider

    reference = load_reference_port()
    items, batches_count, batch_size = (600, 5, 64) if args.quick else (1000, 20, 64)
    corpus, rng, caption = make_corpus(0, items)
    batches = make_batches(corpus, rng, caption, batches_count, batch_size)

    start = time.perf_counter()
    ours = CiderD(corpus)
    build_ms = 1000.0 * (time.perf_counter() - start)
    ours_cold = median_ms(ours, batches)
    ours_warm = median_ms(ours, batches)
    ours_batch_df = median_ms(CiderD(), batches)  # df from each batch, the same metric pycocoevalcap computes

    coco = CocoCider()

    def coco_cider(hypotheses, references):
        gts = {i: refs for i, refs in enumerate(references)}
        res = {i: [h] for i, h in enumerate(hypotheses)}
        return coco.compute_score(gts, res)[1]

    coco_ms = median_ms(coco_cider, batches)
    scst = reference.ReferenceCiderD(corpus)
    scst_ms = median_ms(lambda h, r: reference.reference_scores(scst, h, r), batches)

    # Agreement check on the timed batches, so that the timings compare equal metrics.
    hypotheses, references = batches[0]
    max_difference_scst = float(
        np.abs(ours(hypotheses, references) - reference.reference_scores(scst, hypotheses, references)).max()
    )
    max_difference_coco = float(
        np.abs(CiderD()(hypotheses, references) - coco_cider(hypotheses, references)).max()
    )

    import sacrebleu
    from sacrebleu.metrics import BLEU

    _scorer("bleu")._references.clear()  # time the cold cache first
    bleu_cold = median_ms(sentence_bleu, batches)
    bleu_warm = median_ms(sentence_bleu, batches)
    sacrebleu_loop = median_ms(
        lambda h, r: [sacrebleu.sentence_bleu(x, y).score for x, y in zip(h, r, strict=True)], batches
    )
    reused = BLEU(effective_order=True)
    reused_loop = median_ms(
        lambda h, r: [reused.sentence_score(x, y).score for x, y in zip(h, r, strict=True)], batches
    )

    result = {
        "benchmark": "rewards_speed",
        "quick": args.quick,
        "device": "cpu",
        "corpus_items": items,
        "corpus_captions": items * 5,
        "batches": batches_count,
        "batch_size": batch_size,
        "references_per_hypothesis": 5,
        "cider_d_ms": {
            "ours_corpus_df_build_once": round(build_ms, 2),
            "ours_corpus_df_cold": round(ours_cold, 3),
            "ours_corpus_df_warm": round(ours_warm, 3),
            "ours_batch_df": round(ours_batch_df, 3),
            "pycocoevalcap_cider": round(coco_ms, 3),
            "scst_ciderd_reference": round(scst_ms, 3),
        },
        "cider_d_speedup": {
            "scst_reference_over_ours_warm": round(scst_ms / ours_warm, 1),
            "scst_reference_over_ours_cold": round(scst_ms / ours_cold, 1),
            "pycocoevalcap_over_ours_warm": round(coco_ms / ours_warm, 1),
            "pycocoevalcap_over_ours_batch_df": round(coco_ms / ours_batch_df, 1),
        },
        "cider_d_max_abs_difference": {
            "vs_scst_reference": max_difference_scst,
            "vs_pycocoevalcap": max_difference_coco,
        },
        "bleu_ms": {
            "ours_cold": round(bleu_cold, 3),
            "ours_warm": round(bleu_warm, 3),
            "sacrebleu_sentence_bleu_loop": round(sacrebleu_loop, 3),
            "reused_bleu_sentence_score_loop": round(reused_loop, 3),
        },
        "bleu_speedup": {
            "sacrebleu_loop_over_ours_cold": round(sacrebleu_loop / bleu_cold, 2),
            "sacrebleu_loop_over_ours_warm": round(sacrebleu_loop / bleu_warm, 2),
            "sacrebleu_loop_over_reused_object_loop": round(sacrebleu_loop / reused_loop, 2),
        },
    }
    if not args.json:
        print(
            f"CIDEr-D per batch of {batch_size}: ours {ours_warm:.2f} ms warm / {ours_cold:.2f} ms cold, "
            f"SCST reference {scst_ms:.1f} ms, pycocoevalcap {coco_ms:.1f} ms",
            file=sys.stderr,
        )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

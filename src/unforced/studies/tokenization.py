"""Tokenization and exposure bias: how the BPE vocabulary size moves per-step error and the free-running gap.

A smaller vocabulary cuts the same sentence into more tokens, so a free-running decoder takes more steps, each
a chance to leave the gold path and compound. We train one teacher-forced model per vocabulary size on the same
text (`bible-en-es` where its data cache is present, else the toy-translation grammar written to a pairs file
and cut by BPE) with `run_experiment`, and read from each run: per-step (per-token) error teacher-forced and
free-running, tokens per sentence, the gap per token (`gap_nll`, `gap_pct`) and per sentence
(`gap_nll` x tokens per sentence, <eos> included), and the sequence metric (BLEU). Per-token figures are not
comparable across vocabularies (a token is a different unit in each); per-sentence figures and BLEU are.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from unforced.errors import UnforcedError
from unforced.report.page import page
from unforced.runfiles import atomic_write_text

BIBLE_SIZES = {True: (250, 2000), False: (250, 500, 1000, 2000)}
# The toy grammar has ~25 characters and ~80 words: BPE saturates at ~200 (word level, ~7 tokens a sentence),
# and 40 is near character level (~32 tokens a sentence).
TOY_SIZES = {True: (40, 200), False: (40, 60, 100, 200)}
MODEL = {"kind": "gru", "embedding": 64, "hidden": 128, "dropout": 0.1}
TOY_MODEL = {"kind": "gru", "embedding": 32, "hidden": 96, "dropout": 0.0}
TRAIN = {True: {"steps": 150, "batch_size": 32, "eval_every": 0, "checkpoint_every": 0, "learning_rate": 3e-3},
         False: {"steps": 600, "batch_size": 64, "eval_every": 0, "checkpoint_every": 0, "learning_rate": 3e-3}}
TEST_LIMIT = {True: 150, False: 500}


def bible_available() -> bool:
    """Whether the bible-en-es pairs can be read from the local cache (never fetched from here)."""
    from unforced.tasks.sword import CACHE_NAME, default_cache_dir

    return (default_cache_dir() / CACHE_NAME).exists()


def _toy_pairs_file(out_dir: Path, seed: int) -> Path:
    """The toy-translation pairs as a .tsv (one split column, so every vocabulary size sees the same splits)."""
    from unforced.tasks import get_task

    task = get_task("toy-translation", size=3000, seed=seed)
    lines = [f"{s}\t{t}\t{split}" for split in ("train", "valid", "test") for s, t in task.split(split)]
    path = out_dir / "toy-translation.tsv"
    atomic_write_text("\n".join(lines) + "\n", path)
    return path


def _run_config(corpus: str, size: int, quick: bool, seed: int, pairs_file: Path | None, steps: int | None,
                device: str = "auto"):
    from unforced.experiment import RunConfig

    train = {**TRAIN[quick], **({"steps": steps} if steps else {}), "device": device}
    if corpus == "bible-en-es":
        options = {"vocab_size": size, "max_words": 12 if quick else 16, "size": 6000 if quick else 20000}
        return RunConfig(task="bible-en-es", task_options=options, strategies=["teacher_forcing"], preset="quick",
                         model=dict(MODEL), train=train, seed=seed, test_limit=TEST_LIMIT[quick],
                         diagnostics_limit=0)
    return RunConfig(task=str(pairs_file), task_options={"tokenizer": "bpe", "vocab_size": size},
                     strategies=["teacher_forcing"], preset="quick", model=dict(TOY_MODEL), train=train, seed=seed,
                     test_limit=TEST_LIMIT[quick], diagnostics_limit=0)


def row_of(size: int, results: dict) -> dict:
    """One vocabulary size's figures, read from its run's results.json dict."""
    entry = results["strategies"]["teacher_forcing"]
    counts = entry["per_position"]["count"]
    tokens_with_eos = sum(counts) / counts[0]  # count[t] = sequences reaching position t
    return {
        "vocab_size": size,
        "tokens_per_sentence": tokens_with_eos - 1.0,
        "tf_error": 1.0 - entry["tf_token_acc"],
        "fr_error": 1.0 - entry["fr_token_acc"],
        "tf_nll": entry["tf_nll"],
        "fr_nll": entry["fr_nll"],
        "gap_nll": entry["gap_nll"],
        "gap_pct": entry["gap_pct"],
        "tf_nll_per_sentence": entry["tf_nll"] * tokens_with_eos,
        "fr_nll_per_sentence": entry["fr_nll"] * tokens_with_eos,
        "gap_per_sentence": entry["gap_nll"] * tokens_with_eos,
        "metric": entry["metric"],
        "train_seconds": entry["train_seconds"],
    }


def draw(results: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    from unforced.report.figures import save_figure

    rows = results["rows"]
    sizes = [r["vocab_size"] for r in rows]
    figure = Figure(figsize=(12, 3.8))
    error_axes, length_axes, gap_axes = (figure.add_subplot(1, 3, i) for i in (1, 2, 3))
    error_axes.plot(sizes, [r["fr_error"] for r in rows], marker="o", color="C0", label="free-running")
    error_axes.plot(sizes, [r["tf_error"] for r in rows], marker="o", color="C0", linestyle="--",
                    label="teacher-forced")
    error_axes.set(xlabel="BPE vocabulary size", ylabel="per-step (token) error", title="Error per step")
    error_axes.legend(fontsize=7)
    length_axes.plot(sizes, [r["tokens_per_sentence"] for r in rows], marker="o", color="C1")
    length_axes.set(xlabel="BPE vocabulary size", ylabel="target tokens per sentence", title="Steps per sentence")
    gap_axes.plot(sizes, [r["gap_per_sentence"] for r in rows], marker="o", color="C2",
                  label="gap (FR - TF NLL), nats per sentence")
    gap_axes.plot(sizes, [r["tf_nll_per_sentence"] for r in rows], marker=".", color="C3", linestyle="--",
                  label="teacher-forced NLL, nats per sentence")
    gap_axes.set(xlabel="BPE vocabulary size", ylabel="nats per sentence", title="Gap per sentence")
    gap_axes.legend(fontsize=7)
    for axes in (error_axes, length_axes, gap_axes):
        axes.set_xscale("log")
        axes.set_xticks(sizes, [str(s) for s in sizes])
        axes.minorticks_off()
    return save_figure(figure, path)


def sentences(results: dict) -> list[str]:
    """Plain sentences computed from the numbers of this run."""
    rows = results["rows"]
    first, last = rows[0], rows[-1]
    metric = first["metric"]["name"]
    out = [f"From vocabulary {first['vocab_size']} to {last['vocab_size']}, a target sentence goes from "
           f"{first['tokens_per_sentence']:.1f} to {last['tokens_per_sentence']:.1f} tokens, and the free-running "
           f"per-step error from {first['fr_error']:.2f} to {last['fr_error']:.2f} (teacher-forced "
           f"{first['tf_error']:.2f} to {last['tf_error']:.2f})."]
    longest = max(rows, key=lambda r: r["tokens_per_sentence"])
    widest = max(rows, key=lambda r: r["gap_per_sentence"])
    if longest is widest:
        out.append(f"The longest tokenization (vocabulary {longest['vocab_size']}) has the largest gap per "
                   f"sentence, {longest['gap_per_sentence']:.1f} nats ({longest['gap_pct']:.0f}% of its "
                   f"teacher-forced NLL): more steps left more room to compound.")
    else:
        out.append(f"The largest gap per sentence, {widest['gap_per_sentence']:.1f} nats, is at vocabulary "
                   f"{widest['vocab_size']}, not at the longest tokenization (vocabulary {longest['vocab_size']}, "
                   f"{longest['gap_per_sentence']:.1f} nats): here sequence length alone does not set the gap.")
    best = max(rows, key=lambda r: r["metric"]["fr"]) if metric not in ("wer", "cer") else \
        min(rows, key=lambda r: r["metric"]["fr"])
    out.append(f"Free-running {metric.upper()} is best at vocabulary {best['vocab_size']} "
               f"({best['metric']['fr']:.2f}).")
    return out


def write_report(results: dict, out_dir: Path) -> Path:
    rows = "".join(
        f"<tr><td>{r['vocab_size']}</td><td>{r['tokens_per_sentence']:.1f}</td><td>{r['tf_error']:.3f}</td>"
        f"<td>{r['fr_error']:.3f}</td><td>{r['gap_pct']:.1f}%</td><td>{r['gap_per_sentence']:.2f}</td>"
        f"<td>{r['metric']['fr']:.2f}</td>"
        f"<td><a href=\"vocab-{r['vocab_size']}/results.json\">results</a></td></tr>" for r in results["rows"])
    metric = html.escape(results["rows"][0]["metric"]["name"])
    text = " ".join(html.escape(s) for s in sentences(results))
    body = f"""<h1>Tokenization and the free-running gap ({html.escape(results['corpus'])})</h1>
<p>One teacher-forced GRU per BPE vocabulary size, same text, same budget ({results['steps']} steps). Per-step
figures count tokens, which differ between vocabularies; per-sentence figures and {metric} compare directly.</p>
<img src="figures/tokenization.png" alt="error, length and gap against vocabulary size">
<p>{text}</p>
<table><tr><th>vocabulary</th><th>tokens / sentence</th><th>TF error / step</th><th>FR error / step</th>
<th>gap (per token)</th><th>gap (nats / sentence)</th><th>FR {metric} (greedy)</th><th>run</th></tr>
{rows}</table>"""
    path = out_dir / "report.html"
    atomic_write_text(page("unforced study: tokenization", body), path)
    return path


def run_study(out_dir: Path, quick: bool = False, seed: int = 0, corpus: str = "auto", sizes=None,
              steps: int | None = None, device: str = "auto") -> dict:
    """One run per vocabulary size under `out_dir/vocab-<size>/`, then results.json, figures/tokenization.png and
    report.html in `out_dir`.

    corpus: "auto" (the full study on bible-en-es if its cache is present, else toy; the quick study always on
    toy, since 150 steps teach a Bible model almost nothing (BLEU ~1) and take minutes), "bible-en-es" or "toy"
    (toy-translation written to a pairs file and cut by BPE). `sizes` and `steps` override the preset; `device`
    is the training device (auto: CUDA where available).
    """
    from unforced.experiment import run_experiment

    if corpus not in ("auto", "bible-en-es", "toy"):
        raise UnforcedError(f"corpus must be 'auto', 'bible-en-es' or 'toy', got {corpus!r}")
    quick = bool(quick)
    if corpus == "auto":
        corpus = "bible-en-es" if bible_available() and not quick else "toy"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs_file = _toy_pairs_file(out_dir, seed) if corpus == "toy" else None
    sizes = tuple(sizes or (BIBLE_SIZES if corpus == "bible-en-es" else TOY_SIZES)[quick])
    rows = []
    for size in sizes:
        config = _run_config(corpus, size, quick, seed, pairs_file, steps, device)
        results = run_experiment(config, out_dir / f"vocab-{size}", overwrite=True)
        rows.append(row_of(size, results))
    results = {"study": "tokenization", "corpus": corpus, "seed": seed, "quick": quick,
               "steps": steps or TRAIN[quick]["steps"], "sizes": list(sizes), "rows": rows,
               "figures": ["figures/tokenization.png"]}
    results["sentences"] = sentences(results)
    draw(results, out_dir / "figures" / "tokenization.png")
    atomic_write_text(json.dumps(results, indent=1), out_dir / "results.json")
    write_report(results, out_dir)
    return results


__all__ = ["bible_available", "row_of", "run_study"]

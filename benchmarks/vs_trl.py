"""Samples per second of unforced's SCST (RLOO baseline) against TRL's RLOOTrainer, on the same GPT-2.

Both sides train one GPT-2 built from a config (no download) of a realistic shape (full run: 4 layers, width 256,
4 heads, a word vocabulary of 8,000, dropout off), from the same initial weights, on the same prompts (random
strings of words, all of one length), with K samples per prompt, the same number of new tokens (32 in the full
run; end-of-sequence made unreachable while sampling on both sides, so every sample is exactly that long), the same
reward (the fraction of generated words in a target set), the same prompts per optimizer step and the same AdamW
settings. A step is generation + reward + loss + backward + optimizer step, timed one by one after the warm-up.

TRL computes the old log-probabilities with one extra no-grad forward pass over every completion in each step
(`_get_per_token_logps_and_entropies` under no_grad; needed for its importance ratio, even with
num_iterations 1), which cannot be switched off. Its time is measured by wrapping that method, and the JSON gives
both the raw ratio and the ratio with that forward removed from TRL's time.

    python benchmarks/vs_trl.py [--quick] [--json] [--steps N] [--rounds R] [--baseline leave_one_out|mean]

TRL is an optional dependency (the `bench` extra: pip install trl datasets). Without it this prints JSON with an
"error" field and exits 1; the unforced half alone is `measure_unforced`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import goal, provenance  # noqa: E402

from unforced.distributed import choose_device  # noqa: E402
from unforced.models.hf import HuggingFaceModel  # noqa: E402
from unforced.strategies import make_strategy  # noqa: E402
from unforced.tasks.base import Batch  # noqa: E402
from unforced.vocab import BOS, EOS, PAD  # noqa: E402

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]  # ids 0..3, the library's PAD, BOS, EOS, UNK
TARGET = "s0"
SPEEDUP_GOAL = 1.2

FULL = {"vocabulary": 8000, "prompts": 64, "prompt_length": 8, "samples_per_prompt": 4, "new_tokens": 32,
        "prompts_per_step": 8, "steps": 50, "warmup_steps": 2, "learning_rate": 1e-4, "width": 256, "layers": 4,
        "heads": 4, "positions": 64, "seed": 0, "rounds": 2}
QUICK = {**FULL, "vocabulary": 32, "prompts": 16, "new_tokens": 16, "prompts_per_step": 4, "steps": 2,
         "warmup_steps": 1, "width": 64, "layers": 2, "heads": 2, "rounds": 1}


def vocabulary(size: int = 32) -> list[str]:
    """The word list of a vocabulary of `size`: the four specials, then s0 .. s(size - 5)."""
    return SPECIALS + [f"s{i}" for i in range(size - len(SPECIALS))]


VOCABULARY = vocabulary(32)  # the quick run's
SYMBOLS = VOCABULARY[len(SPECIALS):]


def target_fraction(text: str, target: str = TARGET) -> float:
    """The reward both sides optimise: the share of whitespace-separated words of `text` equal to `target`."""
    words = text.split()
    return sum(word == target for word in words) / len(words) if words else 0.0


def unforced_reward(hypotheses: list[str], references: list[list[str]]) -> np.ndarray:
    """`target_fraction` behind the library's Reward contract (references are unused)."""
    return np.asarray([target_fraction(text) for text in hypotheses], dtype=np.float64)


def trl_reward(prompts, completions, **kwargs) -> list[float]:
    """`target_fraction` behind TRL's reward-function contract."""
    return [target_fraction(text) for text in completions]


def build_prompts(count: int, length: int, seed: int = 0, size: int = 32) -> list[str]:
    """`count` prompts of `length` random words of a vocabulary of `size` each (specials never appear), seeded."""
    chooser = random.Random(seed)
    symbols = vocabulary(size)[len(SPECIALS):]
    return [" ".join(chooser.choice(symbols) for _ in range(length)) for _ in range(count)]


def build_tokenizer(size: int = 32):
    """A word-level `PreTrainedTokenizerFast` over `vocabulary(size)`, built in memory (TRL needs a tokenizer)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(WordLevel({word: i for i, word in enumerate(vocabulary(size))}, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>")
    tokenizer.padding_side = "left"
    return tokenizer


def build_gpt2(settings: dict):
    """The GPT-2 both sides train, with the library's special ids and dropout off, seeded."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(settings["seed"])
    config = GPT2Config(vocab_size=settings["vocabulary"], n_embd=settings["width"], n_layer=settings["layers"],
                        n_head=settings["heads"], n_positions=settings["positions"], pad_token_id=PAD,
                        bos_token_id=BOS, eos_token_id=EOS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        summary_first_dropout=0.0)
    return GPT2LMHeadModel(config)


class NoEndHuggingFaceModel(HuggingFaceModel):
    """HuggingFaceModel whose sampling steps never choose <eos>: the twin of `min_new_tokens = max_new_tokens` in
    `transformers.generate`, which sets the <eos> logit to -inf until the minimum length. The forced pass (the log-
    probabilities that are reinforced) is left unmasked, as TRL leaves its own."""

    def step(self, memory, state, tokens, embeddings=None):
        logits, hidden, state = super().step(memory, state, tokens, embeddings)
        return logits.index_fill(1, torch.tensor([EOS], device=logits.device), float("-inf")), hidden, state


def prompt_batch(tokenizer, prompts: list[str]) -> Batch:
    """A decoder-only Batch: the prompt ids are the source (all prompts have one length, so no padding)."""
    source = torch.tensor([tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts])  # (batch, source)
    rows = source.shape[0]
    gold = torch.full((rows, 1), EOS)  # unused by reinforce with an explicit max_len and rl_weight 1
    return Batch(source=source, source_mask=torch.ones_like(source, dtype=torch.bool),
                 inputs=torch.full((rows, 1), BOS), gold=gold, gold_mask=torch.ones_like(gold, dtype=torch.bool),
                 sources=prompts, references=[[""] for _ in prompts])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_unforced(settings: dict, baseline: str = "leave_one_out", device: str = "cpu") -> dict:
    """Train the GPT-2 with unforced's reinforce strategy on `device`; the seconds of each step after the
    warm-up steps, and samples per second over them."""
    device = choose_device(device)
    tokenizer = build_tokenizer(settings["vocabulary"])
    prompts = build_prompts(settings["prompts"], settings["prompt_length"], settings["seed"], settings["vocabulary"])
    model = NoEndHuggingFaceModel(build_gpt2(settings), max_source_len=settings["prompt_length"],
                                  max_target_len=settings["new_tokens"]).to(device)
    model.train()  # dropout is 0 in the config, so train mode changes nothing but is what a user would run
    strategy = make_strategy("reinforce", {"reward": None, "baseline": baseline,
                                           "samples": settings["samples_per_prompt"],
                                           "max_len": settings["new_tokens"], "temperature": 1.0},
                             seed=settings["seed"])
    strategy.reward = unforced_reward
    strategy.decode = lambda rows: tokenizer.batch_decode(rows, skip_special_tokens=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"], weight_decay=0.0)
    per_step = settings["prompts_per_step"]
    batches = [prompt_batch(tokenizer, prompts[i:i + per_step]).to(device) for i in range(0, len(prompts), per_step)]
    warmup, steps = settings["warmup_steps"], settings["steps"]
    rewards, lengths, step_seconds = [], [], []
    for index in range(warmup + steps):
        start = time.perf_counter()
        output = strategy.loss(model, batches[index % len(batches)], index)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        synchronize(device)
        if index >= warmup:
            step_seconds.append(time.perf_counter() - start)
        rewards.append(output.logs["reward_mean"])
        lengths.append(output.logs["sample_length"])
    seconds = sum(step_seconds)
    samples = steps * per_step * settings["samples_per_prompt"]
    return {"samples_per_second": samples / seconds, "seconds": seconds, "samples": samples,
            "step_seconds": step_seconds, "mean_completion_length": float(np.mean(lengths)),
            "mean_reward": float(np.mean(rewards))}


def measure_trl(settings: dict, device: str = "cpu") -> dict:
    """Train the same GPT-2 with TRL's RLOOTrainer (GRPOTrainer where RLOO is missing) on `device` (the CPU, or
    the GPU that transformers picks); the seconds of each step after the warm-up, and of the extra no-grad forward
    inside each step."""
    chosen = choose_device(device)
    on_cpu = chosen.type == "cpu"
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    trainer_name = "RLOO" if hasattr(trl, "RLOOTrainer") else "GRPO"
    config_class = trl.RLOOConfig if trainer_name == "RLOO" else trl.GRPOConfig
    trainer_class = trl.RLOOTrainer if trainer_name == "RLOO" else trl.GRPOTrainer
    tokenizer = build_tokenizer(settings["vocabulary"])
    # "<bos>" ends each prompt so that TRL's model reads exactly what unforced's reads: [prompt, <bos>, y_1 ...].
    prompts = [p + " <bos>" for p in build_prompts(settings["prompts"], settings["prompt_length"], settings["seed"],
                                                   settings["vocabulary"])]
    completions_per_step = settings["prompts_per_step"] * settings["samples_per_prompt"]
    total_steps = settings["warmup_steps"] + settings["steps"]
    ends: list[float] = []
    extra: dict[int, float] = {}  # step index -> seconds in the no-grad log-probability forward(s)
    logged: dict = {}

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not ends:
                ends.append(time.perf_counter())  # the start of the first step

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(chosen)
            ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            logged.update(logs or {})

    with tempfile.TemporaryDirectory() as output_dir:
        config = config_class(
            output_dir=output_dir, use_cpu=on_cpu, bf16=False, fp16=False, report_to="none", logging_strategy="no",
            save_strategy="no", eval_strategy="no", disable_tqdm=True, gradient_checkpointing=False,
            max_steps=total_steps, learning_rate=settings["learning_rate"], weight_decay=0.0, max_grad_norm=1.0,
            lr_scheduler_type="constant", warmup_steps=0, seed=settings["seed"], data_seed=settings["seed"],
            per_device_train_batch_size=completions_per_step, gradient_accumulation_steps=1,
            generation_batch_size=completions_per_step, num_generations=settings["samples_per_prompt"],
            num_iterations=1, beta=0.0, use_vllm=False, temperature=1.0, top_p=1.0, top_k=0,
            max_completion_length=settings["new_tokens"], disable_dropout=True,
            generation_kwargs={"min_new_tokens": settings["new_tokens"]}, shuffle_dataset=False,
            log_completions=False, dataloader_num_workers=0)
        trainer = trainer_class(model=build_gpt2(settings), reward_funcs=trl_reward, args=config,
                                train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                                callbacks=[StepClock()])
        log_probs = trainer._get_per_token_logps_and_entropies

        def timed_log_probs(*args, **kwargs):
            # The call under no_grad is the extra forward (old log-probabilities); the one with grad is the loss's.
            if torch.is_grad_enabled():
                return log_probs(*args, **kwargs)
            synchronize(chosen)
            start = time.perf_counter()
            try:
                return log_probs(*args, **kwargs)
            finally:
                synchronize(chosen)
                step = len(ends) - 1
                extra[step] = extra.get(step, 0.0) + time.perf_counter() - start

        trainer._get_per_token_logps_and_entropies = timed_log_probs
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its closing metrics; stdout is ours
            trainer.train()
    if len(ends) != total_steps + 1:
        raise RuntimeError(f"TRL ran {len(ends) - 1} steps, expected {total_steps}")
    warmup, steps = settings["warmup_steps"], settings["steps"]
    step_seconds = [ends[i + 1] - ends[i] for i in range(warmup, total_steps)]
    extra_seconds = [extra.get(i, 0.0) for i in range(warmup, total_steps)]
    if not all(extra_seconds):
        raise RuntimeError("TRL's extra no-grad forward was not seen in every step: the timing hook missed it")
    seconds = sum(step_seconds)
    samples = steps * completions_per_step
    length = logged.get("completions/mean_length")  # the mean over the whole run, from the closing log
    return {"trainer": trainer_name, "version": trl.__version__, "samples_per_second": samples / seconds,
            "samples_per_second_without_extra_forward": samples / (seconds - sum(extra_seconds)),
            "seconds": seconds, "samples": samples, "step_seconds": step_seconds,
            "extra_forward_seconds": extra_seconds,
            "mean_completion_length": float(length) if length is not None else None}


HOW_MADE_EQUAL = (
    "One process, one GPT-2 built from the same config and seed (identical initial weights; resid/embd/attn "
    "dropout 0 in the config, and TRL's disable_dropout on), same prompts (all of one length: no padding on either "
    "side), same K samples per prompt, same prompts per optimizer step (TRL: per_device_train_batch_size = "
    "generation_batch_size = prompts_per_step * K, gradient_accumulation_steps 1, num_iterations 1, so one "
    "generation batch per optimizer step), same reward callable (target_fraction on the decoded words, "
    "skip_special_tokens on both sides). TRL prompts end with '<bos>' so both models read [prompt, <bos>, y_1..]. "
    "Length: exactly new_tokens per sample on both sides; TRL via max_completion_length = min_new_tokens = "
    "new_tokens (transformers' MinNewTokensLengthLogitsProcessor sets the <eos> logit to -inf), unforced via "
    "max_len = new_tokens and a HuggingFaceModel subclass whose sampling step sets the <eos> logit to -inf; "
    "neither masks <eos> in the log-probabilities that are reinforced. Sampling: temperature 1, no top-k/top-p. "
    "Optimizer: AdamW, same learning rate, weight decay 0, gradient clipping at norm 1, constant learning rate. "
    "Both sides: one forward with gradient over prompt + completions for the loss, then backward and the "
    "optimizer step. TRL extras switched off: beta 0 (no reference model), no vLLM, no gradient checkpointing, "
    "fp32 (bf16/fp16 off), use_cpu, report_to none, logging/saving/eval off, log_completions off, dataloader "
    "workers 0. What TRL still does that unforced does not: one extra no-grad forward over prompt + completions "
    "for the old log-probabilities (timed by wrapping _get_per_token_logps_and_entropies, the calls made without "
    "grad; removed from TRL's time in the *_without_extra_forward figures), the entropy and clipped-ratio metrics, "
    "and the Trainer's per-step bookkeeping (left in). Timing: each step after the warm-up, generation + reward + "
    "loss + backward + optimizer step (TRL: between TrainerCallback on_step_begin/on_step_end marks); the two "
    "sides alternate `rounds` times; samples/s = samples per step / median step seconds over all rounds.")


def summarize(steps: list[float], samples_per_step: int) -> dict:
    median, fastest = statistics.median(steps), min(steps)
    return {"samples_per_second": round(samples_per_step / median, 2),
            "samples_per_second_best_step": round(samples_per_step / fastest, 2),
            "step_seconds": {"median": round(median, 4), "min": round(fastest, 4), "max": round(max(steps), 4),
                             "steps": len(steps)}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per round (after the warm-up)")
    parser.add_argument("--rounds", type=int, default=None, help="times each side runs, alternating")
    parser.add_argument("--baseline", choices=("leave_one_out", "mean"), default="leave_one_out",
                        help="unforced's baseline: leave_one_out is RLOO, TRL's RLOOTrainer's baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (both sides run there)")
    args = parser.parse_args(argv)
    device = str(choose_device(args.device))
    settings = dict(QUICK if args.quick else FULL)
    if args.steps:
        settings["steps"] = args.steps
    if args.rounds:
        settings["rounds"] = args.rounds
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import datasets  # noqa: F401
        import trl
    except ImportError as error:
        result = {"benchmark": "vs_trl", "error": f"TRL is not importable ({error}); install the bench extra: "
                                                   f"pip install 'unforced[bench]' (trl, datasets)"}
        print(json.dumps(result))
        sys.exit(1)
    # The halves alternate, unforced first in odd rounds and TRL first in even ones: the machine is shared and noisy.
    unforced_runs, trl_runs = [], []
    for round_index in range(settings["rounds"]):
        if round_index % 2:
            trl_runs.append(measure_trl(settings, device))
            unforced_runs.append(measure_unforced(settings, args.baseline, device))
        else:
            unforced_runs.append(measure_unforced(settings, args.baseline, device))
            trl_runs.append(measure_trl(settings, device))
    per_step = settings["prompts_per_step"] * settings["samples_per_prompt"]
    ours = summarize([s for r in unforced_runs for s in r["step_seconds"]], per_step)
    theirs = summarize([s for r in trl_runs for s in r["step_seconds"]], per_step)
    theirs_without = summarize([s - e for r in trl_runs for s, e in zip(r["step_seconds"], r["extra_forward_seconds"],
                                                                        strict=True)], per_step)
    extra = [e for r in trl_runs for e in r["extra_forward_seconds"]]
    ratio = ours["samples_per_second"] / theirs["samples_per_second"]
    ratio_without = ours["samples_per_second"] / theirs_without["samples_per_second"]
    result = {
        "provenance": provenance(device=device),
        "benchmark": "vs_trl", "quick": args.quick,
        "unforced_samples_per_second": ours["samples_per_second"],
        "trl_samples_per_second": theirs["samples_per_second"],
        "trl_samples_per_second_without_extra_forward": theirs_without["samples_per_second"],
        "ratio": round(ratio, 3),
        "ratio_without_trl_extra_forward": round(ratio_without, 3),
        "ratio_best_step": round(ours["samples_per_second_best_step"] / theirs["samples_per_second_best_step"], 3),
        "ratio_best_step_without_trl_extra_forward": round(
            ours["samples_per_second_best_step"] / theirs_without["samples_per_second_best_step"], 3),
        "trl_extra_forward": {"what": "the no-grad forward for the old log-probabilities, once per step",
                              "median_seconds_per_step": round(statistics.median(extra), 4),
                              "share_of_trl_step": round(statistics.median(
                                  e / s for r in trl_runs
                                  for s, e in zip(r["step_seconds"], r["extra_forward_seconds"], strict=True)), 3)},
        "unforced": ours, "trl": theirs, "trl_without_extra_forward": theirs_without,
        "trl_trainer": trl_runs[0]["trainer"], "trl_version": trl.__version__,
        "runs": {"unforced_samples_per_second": [round(r["samples_per_second"], 2) for r in unforced_runs],
                 "trl_samples_per_second": [round(r["samples_per_second"], 2) for r in trl_runs],
                 "trl_samples_per_second_without_extra_forward": [
                     round(r["samples_per_second_without_extra_forward"], 2) for r in trl_runs]},
        "mean_completion_length": {"unforced": unforced_runs[0]["mean_completion_length"],
                                   "trl": trl_runs[0]["mean_completion_length"]},
        "settings": {**settings, "target": TARGET, "unforced_baseline": args.baseline, "dropout": 0.0,
                     "samples_per_step": per_step, "device": device, "threads": torch.get_num_threads(),
                     "torch": str(torch.__version__), "transformers": __import__("transformers").__version__},
        "how_made_equal": HOW_MADE_EQUAL,
        "goals": {
            "samples_per_second_over_trl_without_extra_forward": goal(round(ratio_without, 3), SPEEDUP_GOAL,
                                                                      lower_is_better=False),
            "samples_per_second_over_trl_raw": goal(round(ratio, 3), SPEEDUP_GOAL, lower_is_better=False),
        },
    }
    if not args.json:
        print(f"unforced {result['unforced_samples_per_second']} samples/s, TRL {result['trl_trainer']} "
              f"{result['trl_samples_per_second']} samples/s ({result['trl_samples_per_second_without_extra_forward']}"
              f" without its extra forward), ratio {result['ratio']} ({result['ratio_without_trl_extra_forward']})",
              file=sys.stderr)
    print(json.dumps(result, indent=None if args.json else 1))
    return result


if __name__ == "__main__":
    main()

"""Samples per second of unforced's SCST (RLOO baseline) against TRL's RLOOTrainer, on the same tiny GPT-2.

Both sides train one GPT-2 built from a config (vocabulary 32 words, width 64, 2 layers, 2 heads; no download),
from the same initial weights, on the same prompts (random strings of symbols, all of one length), with K samples
per prompt, the same number of new tokens (end-of-sequence made unreachable while sampling on both sides, so every
sample is exactly that long), the same reward (the fraction of generated words equal to a target symbol), the same
prompts per optimizer step and the same AdamW settings. A step is generation + reward + loss + backward + optimizer
step; the clock starts after one warm-up step and stops after the last step, on both sides.

    python benchmarks/vs_trl.py [--quick] [--json] [--steps N] [--baseline leave_one_out|mean]

TRL is an optional dependency (the `bench` extra: pip install trl datasets). Without it this prints JSON with an
"error" field and exits 1; the unforced half alone is `measure_unforced`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time

import numpy as np
import torch

from unforced.distributed import choose_device
from unforced.models.hf import HuggingFaceModel
from unforced.strategies import make_strategy
from unforced.tasks.base import Batch
from unforced.vocab import BOS, EOS, PAD

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]  # ids 0..3, the library's PAD, BOS, EOS, UNK
SYMBOLS = [f"s{i}" for i in range(28)]
VOCABULARY = SPECIALS + SYMBOLS  # 32 words
TARGET = "s0"

FULL = {"prompts": 64, "prompt_length": 8, "samples_per_prompt": 4, "new_tokens": 16, "prompts_per_step": 16,
        "steps": 10, "warmup_steps": 1, "learning_rate": 1e-4, "width": 64, "layers": 2, "heads": 2,
        "positions": 128, "seed": 0}
QUICK = {**FULL, "prompts": 16, "prompts_per_step": 4, "steps": 2}


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


def build_prompts(count: int, length: int, seed: int = 0) -> list[str]:
    """`count` prompts of `length` random symbols each (specials never appear), seeded."""
    chooser = random.Random(seed)
    return [" ".join(chooser.choice(SYMBOLS) for _ in range(length)) for _ in range(count)]


def build_tokenizer():
    """A word-level `PreTrainedTokenizerFast` over VOCABULARY, built in memory (TRL needs a tokenizer)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(WordLevel({word: i for i, word in enumerate(VOCABULARY)}, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>")
    tokenizer.padding_side = "left"
    return tokenizer


def build_gpt2(settings: dict):
    """The tiny GPT-2 both sides train, with the library's special ids, seeded."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(settings["seed"])
    config = GPT2Config(vocab_size=len(VOCABULARY), n_embd=settings["width"], n_layer=settings["layers"],
                        n_head=settings["heads"], n_positions=settings["positions"], pad_token_id=PAD,
                        bos_token_id=BOS, eos_token_id=EOS)
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


def measure_unforced(settings: dict, baseline: str = "leave_one_out", device: str = "cpu") -> dict:
    """Train the tiny GPT-2 with unforced's reinforce strategy on `device`; samples per second after the warm-up
    steps."""
    device = choose_device(device)
    tokenizer = build_tokenizer()
    prompts = build_prompts(settings["prompts"], settings["prompt_length"], settings["seed"])
    model = NoEndHuggingFaceModel(build_gpt2(settings), max_source_len=settings["prompt_length"],
                                  max_target_len=settings["new_tokens"]).to(device)
    model.train()
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
    rewards, lengths, start = [], [], None
    for index in range(warmup + steps):
        if index == warmup:
            start = time.perf_counter()
        output = strategy.loss(model, batches[index % len(batches)], index)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        rewards.append(output.logs["reward_mean"])
        lengths.append(output.logs["sample_length"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    samples = steps * per_step * settings["samples_per_prompt"]
    return {"samples_per_second": samples / seconds, "seconds": seconds, "samples": samples,
            "mean_completion_length": float(np.mean(lengths)), "mean_reward": float(np.mean(rewards))}


def measure_trl(settings: dict, device: str = "cpu") -> dict:
    """Train the same GPT-2 with TRL's RLOOTrainer (GRPOTrainer where RLOO is missing) on `device` (the CPU, or
    the GPU that transformers picks); samples per second."""
    on_cpu = choose_device(device).type == "cpu"
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    trainer_name = "RLOO" if hasattr(trl, "RLOOTrainer") else "GRPO"
    config_class = trl.RLOOConfig if trainer_name == "RLOO" else trl.GRPOConfig
    trainer_class = trl.RLOOTrainer if trainer_name == "RLOO" else trl.GRPOTrainer
    tokenizer = build_tokenizer()
    # "<bos>" ends each prompt so that TRL's model reads exactly what unforced's reads: [prompt, <bos>, y_1 ...].
    prompts = [p + " <bos>" for p in build_prompts(settings["prompts"], settings["prompt_length"], settings["seed"])]
    completions_per_step = settings["prompts_per_step"] * settings["samples_per_prompt"]
    total_steps = settings["warmup_steps"] + settings["steps"]
    ends: list[float] = []
    logged: dict = {}

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
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
            max_completion_length=settings["new_tokens"],
            generation_kwargs={"min_new_tokens": settings["new_tokens"]}, shuffle_dataset=False,
            log_completions=False, dataloader_num_workers=0)
        trainer = trainer_class(model=build_gpt2(settings), reward_funcs=trl_reward, args=config,
                                train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                                callbacks=[StepClock()])
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its closing metrics; stdout is ours
            trainer.train()
    if len(ends) != total_steps:
        raise RuntimeError(f"TRL ran {len(ends)} steps, expected {total_steps}")
    steps = settings["steps"]
    seconds = ends[-1] - ends[settings["warmup_steps"] - 1]
    samples = steps * completions_per_step
    length = logged.get("completions/mean_length")  # the mean over the whole run, from the closing log
    return {"trainer": trainer_name, "version": trl.__version__, "samples_per_second": samples / seconds,
            "seconds": seconds, "samples": samples,
            "mean_completion_length": float(length) if length is not None else None}


HOW_MADE_EQUAL = (
    "One process, one GPT-2 built from the same config and seed (identical initial weights), same prompts (all of one "
    "length: no padding on either side), same K samples per prompt, same prompts per optimizer step (TRL: "
    "per_device_train_batch_size = generation_batch_size = prompts_per_step * K, gradient_accumulation_steps 1, "
    "num_iterations 1, so one generation batch per optimizer step), same reward callable (target_fraction on the "
    "decoded words, skip_special_tokens on both sides). TRL prompts end with '<bos>' so both models read [prompt, "
    "<bos>, y_1..]. Length: exactly new_tokens per sample on both sides; TRL via max_completion_length = "
    "min_new_tokens = new_tokens (transformers' MinNewTokensLengthLogitsProcessor sets the <eos> logit to -inf), "
    "unforced via max_len = new_tokens and a HuggingFaceModel subclass whose sampling step sets the <eos> logit to "
    "-inf; neither masks <eos> in the log-probabilities that are reinforced. Sampling: temperature 1, no top-k/top-p. "
    "Optimizer: AdamW, same learning rate, weight decay 0, gradient clipping at norm 1, constant learning rate. "
    "TRL extras switched off: beta 0 (no reference model), no vLLM, no gradient checkpointing, fp32 (bf16/fp16 "
    "off), use_cpu, report_to none, logging/saving/eval off, log_completions off, dataloader workers 0. What "
    "TRL still does that unforced does not: one extra no-grad forward for the old log-probabilities, entropy and "
    "clipped-ratio metrics, and the Trainer's per-step bookkeeping; that is part of what is measured. Timing: "
    "wall clock from the end of the warm-up step(s) to the end of the last step (a TrainerCallback's on_step_end "
    "on the TRL side), so it covers generation, reward, loss, backward and the optimizer step.")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--steps", type=int, default=None, help="measured steps (after the warm-up)")
    parser.add_argument("--baseline", choices=("leave_one_out", "mean"), default="leave_one_out",
                        help="unforced's baseline: leave_one_out is RLOO, TRL's RLOOTrainer's baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (both sides run there)")
    args = parser.parse_args(argv)
    device = str(choose_device(args.device))
    settings = dict(QUICK if args.quick else FULL)
    if args.steps:
        settings["steps"] = args.steps
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
    # Interleave the halves three times and keep each side's best run: the machine is shared and noisy.
    unforced_runs, trl_runs = [], []
    for _ in range(1 if args.quick else 3):
        unforced_runs.append(measure_unforced(settings, args.baseline, device))
        trl_runs.append(measure_trl(settings, device))
    ours = max(unforced_runs, key=lambda r: r["samples_per_second"])
    theirs = max(trl_runs, key=lambda r: r["samples_per_second"])
    result = {
        "benchmark": "vs_trl", "quick": args.quick,
        "unforced_samples_per_second": round(ours["samples_per_second"], 2),
        "trl_samples_per_second": round(theirs["samples_per_second"], 2),
        "ratio": round(ours["samples_per_second"] / theirs["samples_per_second"], 3),
        "trl_trainer": theirs["trainer"], "trl_version": trl.__version__,
        "runs": {"unforced_samples_per_second": [round(r["samples_per_second"], 2) for r in unforced_runs],
                 "trl_samples_per_second": [round(r["samples_per_second"], 2) for r in trl_runs]},
        "mean_completion_length": {"unforced": ours["mean_completion_length"],
                                   "trl": theirs["mean_completion_length"]},
        "settings": {**settings, "vocabulary": len(VOCABULARY), "target": TARGET, "unforced_baseline": args.baseline,
                     "samples_per_step": settings["prompts_per_step"] * settings["samples_per_prompt"],
                     "device": device, "threads": torch.get_num_threads(), "torch": str(torch.__version__),
                     "transformers": __import__("transformers").__version__},
        "how_made_equal": HOW_MADE_EQUAL,
    }
    if not args.json:
        print(f"unforced {result['unforced_samples_per_second']} samples/s, TRL {result['trl_trainer']} "
              f"{result['trl_samples_per_second']} samples/s, ratio {result['ratio']}", file=sys.stderr)
    print(json.dumps(result, indent=None if args.json else 1))
    return result


if __name__ == "__main__":
    main()

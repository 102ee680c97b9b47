"""The ASR-TTS cycle: a recogniser and a synthesiser trained on a paired share of the speech corpus, then teaching
each other on the rest (Tjandra et al. 2017, "Listening while speaking"; Hori et al. 2019, "Cycle-consistency
training for end-to-end speech recognition").

The train split is cut, with the seed, into a paired share (audio and transcript), and the rest halved into
speech without transcripts and transcripts without speech (no utterance gives both sides). Then:

    asr-paired, tts-paired      each trained teacher-forced on the paired share (the synthesiser optionally with
                                scheduled sampling over its frames)
    round r = 1 .. rounds:
      synthetic                 the synthesiser speaks the unpaired text (free running, to its stop)
      transcripts               the recogniser transcribes the unpaired speech (greedy)
      asr                       the recogniser trains on paired + synthetic pairs, plus the cycle-consistency term
                                on the unpaired speech (strategies/cycle_consistency.py)
      tts                       the synthesiser trains on paired + (transcript, real speech) pairs

Every phase trains with the Trainer in its own folder under `out` (`last.pt`, `metrics.jsonl`), so a killed run
resumes where it stopped: a finished phase is not retrained, a half-done one continues from its checkpoint, and
synthesis and transcription are written in chunks through renames (a chunk on disk is whole). `progress(event)`
is told each phase's steps and each chunk.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from unforced.errors import UnforcedError
from unforced.models import ModelConfig, build_model
from unforced.models.tts import Synthesiser, SynthesiserConfig
from unforced.rollout import Greedy, rollout
from unforced.runfiles import atomic_save, atomic_write_text, read_checkpoint_file, read_metrics
from unforced.schedules import make_schedule
from unforced.strategies.cycle_consistency import CycleConsistency, CycleConsistencyConfig
from unforced.strategies.synthesis import SynthesisTraining, frame_gap
from unforced.strategies.teacher_forcing import TeacherForcing
from unforced.tasks.base import Example, Task
from unforced.tasks.codecs import LogMel
from unforced.train import TrainConfig, Trainer
from unforced.vocab import EOS, PAD

CHUNK = 128  # utterances a synthesis or transcription chunk holds (one file each)
TTS_FEEDS = ("teacher_forcing", "scheduled_sampling")


@dataclass
class CycleConfig:
    """paired: share of the train utterances with both sides. rounds: of the cycle. *_steps: optimizer steps of
    each phase; a recogniser's phase ends with the weights of its best validation WER (every `eval_every` steps on
    `valid_limit` utterances), the synthesiser's with its last. tts_feed: how the synthesiser trains ("teacher_forcing", or "scheduled_sampling" with the
    inverse-sigmoid schedule of `tts_ss_k`). synthetic_per_paired: synthetic pairs a round's recogniser trains on,
    per paired one (a seeded choice each round; 0: none, the cycle-consistency term alone). cycle_weight, samples, unpaired_batch: the cycle-consistency term."""

    paired: float = 0.1
    seed: int = 0
    rounds: int = 2
    asr_steps: int = 600
    tts_steps: int = 600
    round_asr_steps: int = 300
    round_tts_steps: int = 200
    batch_size: int = 16
    learning_rate: float = 2e-3
    asr_embedding: int = 48
    asr_hidden: int = 128
    tts_hidden: int = 128
    reduction: int = 4
    tts_feed: str = "teacher_forcing"
    tts_ss_k: float = 100.0
    synthetic_per_paired: float = 1.0
    cycle_weight: float = 0.5
    samples: int = 2
    unpaired_batch: int = 8
    asr_dropout: float = 0.2
    eval_every: int = 150
    valid_limit: int = 100
    eval_limit: int = 200
    log_every: int = 10

    def __post_init__(self):
        if not isinstance(self.paired, int | float) or isinstance(self.paired, bool) or not 0 < self.paired < 1:
            raise UnforcedError(f"cycle.paired (the paired share of the train split) is in (0, 1), got "
                                f"{self.paired!r}")
        for name in ("rounds", "asr_steps", "tts_steps", "round_asr_steps", "round_tts_steps", "batch_size",
                     "eval_every", "valid_limit", "eval_limit", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "rounds" else 1):
                raise UnforcedError(f"cycle.{name} must be a {'non-negative' if name == 'rounds' else 'positive'}"
                                    f" integer, got {value!r}")
        if not 0 <= self.asr_dropout < 1:
            raise UnforcedError(f"cycle.asr_dropout must be in [0, 1), got {self.asr_dropout}")
        if not (self.synthetic_per_paired >= 0 and math.isfinite(self.synthetic_per_paired)):
            raise UnforcedError(f"cycle.synthetic_per_paired must be a non-negative number, got "
                                f"{self.synthetic_per_paired}")
        if self.tts_feed not in TTS_FEEDS:
            raise UnforcedError(f"cycle.tts_feed must be one of {', '.join(TTS_FEEDS)}, got {self.tts_feed!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise UnforcedError(f"cycle.learning_rate must be a positive number, got {self.learning_rate}")
        CycleConsistencyConfig(self.cycle_weight, self.samples, self.unpaired_batch)  # checks those three


def split_for_cycle(task: Task, paired: float, seed: int) -> tuple[list[Example], list, list[str]]:
    """(paired examples, speech without transcripts, transcripts without speech) of the train split: a seeded
    permutation, the first `paired` share paired, the rest halved. Each side keeps at least one utterance."""
    if len(task.train) < 3:
        raise UnforcedError(f"the cycle needs at least 3 train utterances, the task has {len(task.train)}")
    order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed * 7919 + 17)).tolist()
    kept = min(max(1, round(len(order) * paired)), len(order) - 2)
    rest = order[kept:]
    half = len(rest) // 2
    return ([task.train[i] for i in order[:kept]], [task.train[i].source for i in rest[:half]],
            [task.train[i].target for i in rest[half:]])


def limits_of(task: Task) -> dict:
    """The longest source and target of `task` (`Task.longest`, which reads every audio header: take it once and
    pass it on)."""
    longest_source, longest_target = task.longest()
    return {"max_source_len": longest_source, "max_target_len": longest_target}


def build_recogniser(task: Task, config: CycleConfig, limits: dict | None = None):
    limits = limits or limits_of(task)
    torch.manual_seed(config.seed)
    return build_model(ModelConfig(kind="gru", target_vocab=task.target_tokenizer.vocab_size,
                                   embedding=config.asr_embedding, hidden=config.asr_hidden, dropout=config.asr_dropout,
                                   **limits, **task.source_codec.model_options()))


def build_synthesiser(task: Task, config: CycleConfig, limits: dict | None = None) -> Synthesiser:
    limits = limits or limits_of(task)
    torch.manual_seed(config.seed + 1)
    return Synthesiser(SynthesiserConfig(vocab=task.target_tokenizer.vocab_size, mels=task.source_codec.mels,
                                         hidden=config.tts_hidden, reduction=config.reduction,
                                         max_steps=math.ceil(limits["max_source_len"] / config.reduction)))


def train_phase(name: str, model, task: Task, strategy, steps: int, out: Path, config: CycleConfig,
                progress: Callable[[dict], None] | None = None, start_from: Path | None = None,
                limits: dict | None = None, select: bool = False) -> dict:
    """`steps` steps of `strategy` on `task` in `out/name` with the Trainer: resumed from its own checkpoint if
    it has one, else started from the weights of the checkpoint `start_from` (the phase before). The model ends
    with the phase's last weights, or with `select` (a recogniser) with those of its best validation WER
    (evaluated every `config.eval_every` steps on `config.valid_limit` utterances; every step is still taken, so
    phases of equal steps do equal work). `checkpoint` in the result: the weights the next phase starts from."""
    folder = out / name
    patience = evaluate = None
    if select:
        from unforced.diagnostics import evaluate as evaluate_split
        from unforced.switch import Patience, SwitchConfig

        patience = Patience(SwitchConfig(metric=task.metric, patience=10**9), folder / "best.pt")

        def evaluate(m):
            return evaluate_split(m, task, "valid", limit=config.valid_limit, limits=limits)
    trainer = Trainer(model, task, strategy,
                      TrainConfig(steps=steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                                  warmup=0 if start_from else 50, eval_every=config.eval_every if select else 0,
                                  checkpoint_every=100, log_every=config.log_every, seed=config.seed,
                                  device="cpu"),
                      folder, folder / "metrics.jsonl", tag=name, identity={"cycle_phase": name},
                      limits=limits, progress=progress and (lambda record: progress({"phase": name, **record})),
                      evaluate=evaluate, patience=patience)
    if not trainer.resume() and start_from is not None:
        model.load_state_dict(read_checkpoint_file(start_from)["model"])
    summary = trainer.fit()
    if patience is not None and (best := patience.best_weights()) is not None:
        model.load_state_dict(best)
        return {**summary, "checkpoint": str(folder / "best.pt"), "best_step": patience.best_step,
                "best_valid": patience.best}
    return {**summary, "checkpoint": str(folder / "last.pt")}


def _chunked(name: str, items: list, folder: Path, make: Callable[[list], list],
             progress: Callable[[dict], None] | None) -> list:
    """make(items) chunk by chunk, each chunk's result saved to `folder/name-<i>.pt` (atomically) and read back
    on a rerun instead of made again."""
    results = []
    chunks = math.ceil(len(items) / CHUNK)
    for index in range(chunks):
        path = folder / f"{name}-{index:04d}.pt"
        if path.exists():
            part = read_checkpoint_file(path)["items"]
        else:
            part = make(items[index * CHUNK:(index + 1) * CHUNK])
            atomic_save({"items": part}, path)
        results.extend(part)
        if progress:
            progress({"phase": folder.name, "step": name, "done": len(results), "total": len(items)})
    return results


def synthesise_texts(synthesiser: Synthesiser, texts: list[str], task: Task, folder: Path, longest: int,
                     progress=None) -> list[LogMel]:
    """The synthesiser's frames for each text (free running to its stop, cut at `longest` frames: the recogniser
    reads no longer source), in chunks under `folder`."""
    tokenizer = task.target_tokenizer

    def make(part: list[str]) -> list[torch.Tensor]:
        made = []
        for start in range(0, len(part), 32):
            rows = [tokenizer.encode(text) + [EOS] for text in part[start:start + 32]]
            width = max(len(row) for row in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            for i, row in enumerate(rows):
                ids[i, : len(row)] = torch.tensor(row)
            made.extend(frames[:longest].clone() for frames in synthesiser.synthesise(ids, ids != PAD))
        return made

    return [LogMel(frames) for frames in _chunked("synthetic", texts, folder, make, progress)]


def transcribe(model, sources: list, task: Task, folder: Path, progress=None) -> list[str]:
    """The recogniser's greedy transcript of each source, in chunks under `folder`."""
    tokenizer = task.target_tokenizer

    @torch.no_grad()
    def make(part: list) -> list[str]:
        model.eval()
        texts = []
        for start in range(0, len(part), 32):
            frames, mask = task.source_codec.encode(part[start:start + 32])
            free = rollout(model, model.encode(frames, mask), Greedy(), max_len=model.config.max_target_len,
                           batch_size=len(frames), keep_hidden=False, keep_logits=False)
            texts.extend(tokenizer.decode([t for t in row[: int(n)] if t != EOS])
                         for row, n in zip(free.tokens.tolist(), free.lengths.tolist(), strict=True))
        return texts

    return _chunked("transcripts", sources, folder, make, progress)


def tts_strategy(config: CycleConfig, offset: int = 0):
    if config.tts_feed == "teacher_forcing":
        return SynthesisTraining(seed=config.seed)
    schedule = make_schedule("inverse_sigmoid", k=config.tts_ss_k)
    return SynthesisTraining(schedule=lambda step: schedule(step + offset), seed=config.seed)


def run_cycle(task: Task, config: CycleConfig, out: Path, progress: Callable[[dict], None] | None = None,
              evaluate_asr: Callable | None = None) -> dict:
    """The whole cycle on the speech `task` in `out` (resumable); the recogniser's and the synthesiser's figures
    after the paired phases and after each round. `evaluate_asr(model, task)` scores the recogniser (default:
    test WER and CER, greedy)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paired, speech, texts = split_for_cycle(task, config.paired, config.seed)
    paired_task = dataclasses.replace(task, train=paired, unlabelled=[])
    limits = limits_of(task)
    evaluate_asr = evaluate_asr or (lambda model, t: error_rates(model, t, limits=limits))
    asr, tts = build_recogniser(task, config, limits), build_synthesiser(task, config, limits)
    phases = {"asr-paired": train_phase("asr-paired", asr, paired_task, TeacherForcing(), config.asr_steps, out,
                                        config, progress, limits=limits, select=True),
              "tts-paired": train_phase("tts-paired", tts, paired_task, tts_strategy(config), config.tts_steps,
                                        out, config, progress)}
    figures = {"split": {"paired": len(paired), "unpaired_speech": len(speech), "unpaired_text": len(texts),
                         "synthetic_per_round": min(len(texts), round(len(paired) * config.synthetic_per_paired))},
               "rounds": [{"round": 0, "asr": evaluate_asr(asr, task),
                           "tts": frame_gap(tts, task, "test", limit=config.eval_limit)}]}
    asr_from, tts_from = Path(phases["asr-paired"]["checkpoint"]), Path(phases["tts-paired"]["checkpoint"])
    for number in range(1, config.rounds + 1):
        folder = out / f"round-{number}"
        folder.mkdir(exist_ok=True)
        chosen = torch.randperm(len(texts), generator=torch.Generator().manual_seed(config.seed * 31 + number))
        spoken = [texts[i] for i in sorted(chosen[: round(len(paired) * config.synthetic_per_paired)].tolist())]
        synthetic = synthesise_texts(tts, spoken, task, folder, limits["max_source_len"], progress)
        transcripts = transcribe(asr, speech, task, folder, progress)
        asr_task = dataclasses.replace(task, train=paired + [Example(f, t) for f, t in zip(synthetic, spoken,
                                                                                         strict=True)],
                                       unlabelled=speech)
        cycle = CycleConsistency(copy.deepcopy(tts),  # a frozen copy of the synthesiser as it is now
                                 CycleConsistencyConfig(config.cycle_weight, config.samples,
                                                        config.unpaired_batch),
                                 seed=config.seed + number).bind(asr_task)
        phases[f"round-{number}/asr"] = train_phase(f"round-{number}/asr", asr, asr_task, cycle,
                                                    config.round_asr_steps, out, config, progress, asr_from, limits,
                                                    select=True)
        tts_task = dataclasses.replace(task, train=paired + [Example(s, t) for s, t in zip(speech, transcripts,
                                                                                          strict=True) if t],
                                       unlabelled=[])
        phases[f"round-{number}/tts"] = train_phase(
            f"round-{number}/tts", tts, tts_task,
            tts_strategy(config, config.tts_steps + (number - 1) * config.round_tts_steps),
            config.round_tts_steps, out, config, progress, tts_from)
        asr_from = Path(phases[f"round-{number}/asr"]["checkpoint"])
        tts_from = Path(phases[f"round-{number}/tts"]["checkpoint"])
        figures["rounds"].append({"round": number, "asr": evaluate_asr(asr, task),
                                  "tts": frame_gap(tts, task, "test", limit=config.eval_limit),
                                  "reconstruction_error": last_logged(folder / "asr" / "metrics.jsonl",
                                                                      "reconstruction_error")})
    result = {"config": dataclasses.asdict(config), "phases": phases, **figures}
    atomic_write_text(json.dumps(result, indent=2) + "\n", out / "results.json")
    return result


def last_logged(path: Path, key: str) -> float | None:
    """The last value of `key` in a metrics file, or None."""
    return next((record[key] for record in reversed(read_metrics(path)) if key in record), None)


def error_rates(model, task: Task, limit: int | None = None, limits: dict | None = None) -> dict:
    """Greedy test WER and CER of a recogniser (diagnostics.evaluate); `limits`: limits_of(task), taken if not
    given."""
    from unforced.diagnostics import evaluate

    figures = evaluate(model, task, "test", limit=limit, limits=limits or limits_of(task))
    return {"wer": figures["metric"]["fr"], "cer": figures["metric"]["companions"]["cer"]["fr"]}


__all__ = ["CycleConfig", "run_cycle", "split_for_cycle", "synthesise_texts", "train_phase", "transcribe"]

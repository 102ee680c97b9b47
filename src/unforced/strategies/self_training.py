"""Self-training (Scudder 1965; Yarowsky 1995; for sequence generation He et al. 2020, "Revisiting Self-Training
for Neural Sequence Generation"; for speech Kahn et al. 2020, "Self-training for End-to-end Speech Recognition"):
the model labels sources that have no reference with its own beam search, keeps the labels it is confident of,
and trains on them beside the labelled data.

    y^_u   = beam_search(x_u)                        for the unlabelled sources x_u of this step
    c_u    = log p(y^_u | x_u) / |y^_u|               mean log-probability per token (<eos> counted)
    K      = {u : c_u > threshold, y^_u ends in <eos>}
    loss   = NLL(labelled batch) + ratio * NLL({(x_u, y^_u) : u in K})

Both NLLs are per-token means. The papers alternate rounds (label everything, train to convergence, repeat);
here the labels are made fresh every step by the model being trained (online), from a seeded walk over
`task.unlabelled`, so the pseudo-labels improve as the model does. He et al. 2020 find that noise (dropout, and
perturbed inputs: noisy self-training) is where much of the gain comes from; here dropout stays on in the
pseudo-labelled pass (the decode runs in eval mode, the loss in train mode) and the sources are not perturbed.
Pseudo-labels come from a trained model: named alone in a run, it starts from the run's teacher-forced weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.rollout import beam_search
from unforced.strategies.base import SourceWalk, StepOutput, token_nll
from unforced.strategies.sequence_level import decode_budget
from unforced.tasks.base import Example
from unforced.vocab import EOS


@dataclass
class SelfTrainingConfig:
    """Parameters of self-training.

    > Parameters that control the mix

    ratio (float, default 1.0): weight of the pseudo-labelled NLL against the labelled one; 1 weighs a
        pseudo-labelled token as a labelled one, as training on the union of both sets does.
    unlabelled_batch (int or None, default None): unlabelled sources decoded per step; None: as many as the
        labelled batch has rows.

    > Parameters that control the pseudo-labels

    beam (int, default 3): beam width of the decode that makes them (1 is greedy decoding).
    threshold (float, default -0.5): a pseudo-label is kept when its mean log-probability per token (<eos>
        counted) is above this, i.e. its geometric-mean token probability is above exp(threshold) (0.61 at
        -0.5). 0 keeps none (no log-probability is above 0); -inf keeps every hypothesis that ends in <eos>.
        Kahn et al. 2020 filter on a length-normalised beam score of this kind.
    max_len (int or None, default None), max_len_factor (float, default 1.5): the decoding budget, as
        reinforce's, with the gold width of the step's labelled batch standing in for the unlabelled rows'
        own. A hypothesis without <eos> within it is never kept.
    """

    ratio: float = 1.0
    unlabelled_batch: int | None = None
    beam: int = 3
    threshold: float = -0.5
    max_len: int | None = None
    max_len_factor: float = 1.5

    def __post_init__(self):
        if isinstance(self.ratio, bool) or not (self.ratio > 0 and math.isfinite(self.ratio)):
            raise UnforcedError(f"self_training.ratio must be a positive number, got {self.ratio!r}")
        for name, value, optional in (("unlabelled_batch", self.unlabelled_batch, True), ("beam", self.beam, False),
                                      ("max_len", self.max_len, True)):
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UnforcedError(f"self_training.{name} must be an integer >= 1{' or None' if optional else ''}, "
                                    f"got {value!r}")
        if isinstance(self.threshold, bool) or math.isnan(self.threshold) or self.threshold > 0:
            raise UnforcedError(f"self_training.threshold is a mean log-probability per token: a number <= 0 "
                                f"(-inf keeps every label), got {self.threshold!r}")
        if not (self.max_len_factor > 0 and math.isfinite(self.max_len_factor)):
            raise UnforcedError(f"self_training.max_len_factor must be a positive number, got {self.max_len_factor}")


@dataclass
class PseudoLabels:
    """One decode of unlabelled sources: the beam's best hypothesis of each, as text, and whether it is kept."""

    sources: list
    texts: list[str]
    confidence: Tensor  # (rows,) mean log-probability per token of each hypothesis
    kept: Tensor  # (rows,) above the threshold and ended by <eos>

    def examples(self) -> list[Example]:
        return [Example(s, t) for s, t, k in zip(self.sources, self.texts, self.kept.tolist(), strict=True) if k]


class SelfTraining:
    """Self-training on `task.unlabelled`; see `SelfTrainingConfig` and the module docstring.

    The unlabelled sources are walked in epochs, each a fresh permutation drawn from (seed, epoch) as the
    Trainer's labelled batches are; the walk's place (epoch, position) is the strategy's state, so a resumed run
    labels the sources an uninterrupted one would have.
    """

    name = "self_training"
    warm_start = True  # pseudo-labels come from a trained model (the teacher-forced one, named alone in a run)
    needs_unlabelled = True  # experiment.py refuses a task without unlabelled sources before any phase trains

    def __init__(self, config: SelfTrainingConfig | None = None, seed: int = 0):
        self.config = config or SelfTrainingConfig()
        self.seed = seed
        self.walk = SourceWalk(seed * 100003)  # over task.unlabelled
        self.task = None

    # ---- capabilities (strategies/base.py): TaskBound, Stateful ------------------------------------------------
    def bind(self, task) -> SelfTraining:
        if not task.unlabelled:
            raise UnforcedError(f"self_training needs unlabelled sources and task {task.name!r} has none: give the "
                                f"task option labelled below 1 (e.g. task_options: {{labelled: 0.2}} in the "
                                f"--config file keeps 20% of the train split labelled and makes the rest's "
                                f"sources unlabelled), or a task with unlabelled sources")
        self.task = task
        self.walk.reset()
        return self

    def state_dict(self) -> dict:
        return self.walk.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.walk.load_state_dict(state)

    # ---- the walk over the unlabelled sources ------------------------------------------------------------------
    def next_sources(self, rows: int) -> list:
        """The next `rows` unlabelled sources of the walk (crossing into the next epoch where one runs out)."""
        if self.task is None:
            raise UnforcedError("self_training is not bound to a task: call bind(task) before training")
        return self.walk.take(self.task.unlabelled, rows)

    # ---- pseudo-labels and the loss ----------------------------------------------------------------------------
    def pseudo_labels(self, model, sources: list, max_len: int, device=None) -> PseudoLabels:
        """The beam's best hypothesis of each source and its confidence, decoded in eval mode without gradient
        (the model's train/eval mode is restored after). Sources longer than the model accepts are never kept."""
        task, config = self.task, self.config
        device = device if device is not None else next(model.parameters()).device
        limits = getattr(model, "config", None)
        longest_source = getattr(limits, "max_source_len", None)
        longest_target = getattr(limits, "max_target_len", None)
        fits = [longest_source is None or task.source_codec.length(s) <= longest_source for s in sources]
        inside = [s for s, ok in zip(sources, fits, strict=True) if ok]
        texts, confidence = [""] * len(sources), torch.full((len(sources),), float("-inf"))
        ended = torch.zeros(len(sources), dtype=torch.bool)
        if inside:
            source, source_mask = task.source_codec.encode(inside)
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    memory = model.encode(source.to(device), source_mask.to(device))
                    tokens, scores = beam_search(model, memory, config.beam, max_len, len(inside))  # (rows, time)
            finally:
                model.train(was_training)
            tokens, scores = tokens.cpu(), scores.cpu().float()
            has_eos = (tokens == EOS).any(1)
            lengths = torch.where(has_eos, (tokens == EOS).float().argmax(1) + 1, tokens.shape[1])
            rows = torch.tensor([i for i, ok in enumerate(fits) if ok], dtype=torch.long)
            confidence[rows] = scores / lengths.float()
            ended[rows] = has_eos
            for row, hypothesis in zip(rows.tolist(), tokens.tolist(), strict=True):
                texts[row] = task.target_tokenizer.decode(hypothesis)
        kept = ended & (confidence > config.threshold)
        if longest_target is not None:  # the text read back must fit the decoder, as a labelled target must
            fit = [len(task.target_tokenizer.encode(t)) + 1 <= longest_target for t in texts]
            kept &= torch.tensor(fit, dtype=torch.bool)
        return PseudoLabels(sources, texts, confidence, kept)

    def loss(self, model, batch, step: int) -> StepOutput:
        config = self.config
        sources = self.next_sources(config.unlabelled_batch or len(batch))
        device = batch.source.device
        labels = self.pseudo_labels(model, sources, decode_budget(config, model, batch.gold.shape[1]), device)
        memory = model.encode(batch.source, batch.source_mask)
        labelled = token_nll(model.forced(memory, batch.inputs).logits, batch.gold, batch.gold_mask)
        finite = torch.isfinite(labels.confidence)
        logs = {"labelled_nll": float(labelled.detach()), "pseudo_kept": float(labels.kept.float().mean()),
                "pseudo_rows": float(labels.kept.sum()),
                "pseudo_confidence": float(labels.confidence[finite].mean()) if bool(finite.any()) else 0.0}
        examples = labels.examples()
        if not examples:  # nothing confident enough: this step is teacher forcing on the labelled batch
            return StepOutput(loss=labelled, logs=logs)
        pseudo_batch = self.task.collate(examples).to(device)
        pseudo_memory = model.encode(pseudo_batch.source, pseudo_batch.source_mask)
        pseudo = token_nll(model.forced(pseudo_memory, pseudo_batch.inputs).logits, pseudo_batch.gold,
                           pseudo_batch.gold_mask)
        logs["pseudo_nll"] = float(pseudo.detach())
        return StepOutput(loss=labelled + config.ratio * pseudo, logs=logs)


__all__ = ["PseudoLabels", "SelfTraining", "SelfTrainingConfig"]

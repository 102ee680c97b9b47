"""Feeds and the decoding engine: roll a decoder forward, choosing at each step what it is fed.

Teacher forcing, free running, scheduled sampling, SCST, MIXER and every gap measurement are a choice of feed:

    Gold()                          the reference token y_(t-1)
    Greedy()                        the model's own argmax
    Sample(temperature, top_k)      a sample from the model's own softmax(logits / temperature), top-k truncated
    Mix(gold_ratio, own, per)       gold with probability `gold_ratio` (the teacher-forcing ratio), else `own`;
                                    one coin per token, per sequence, or per batch
    Prefix(lengths, then)           gold for the first lengths[b] tokens of row b, then `then`'s own tokens
                                    (MIXER, Ranzato et al. 2016)

At every step the rollout records the model's own choice (`tokens`) and what was actually fed next (`inputs`).
Two switches change how the feed enters the decoder, not what is chosen:

    soft=True           an own input is the expected embedding softmax(logits / soft_temperature) @ E (E the
                        embedding table as `model.embed` scales it) instead of a token, so the gradient flows
                        back through the choice (gold inputs stay the gold embedding)
    detach_every=k      truncated backpropagation through time (Williams and Peng 1990): the recurrent state is
                        detached before steps k, 2k, ..., so no gradient crosses a cut
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.models.base import select_rows
from unforced.vocab import BOS, EOS, PAD


@dataclass(frozen=True)
class Gold:
    """Feed the reference token (teacher forcing)."""


@dataclass(frozen=True)
class Greedy:
    """Feed the model's own most probable token."""


@dataclass(frozen=True)
class Sample:
    """Feed a sample from softmax(logits / temperature), restricted to the `top_k` most probable tokens if set."""

    temperature: float = 1.0
    top_k: int | None = None

    def __post_init__(self):
        if self.temperature <= 0:
            raise UnforcedError(f"Sample.temperature must be positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise UnforcedError(f"Sample.top_k must be at least 1, got {self.top_k}")


@dataclass(frozen=True)
class Mix:
    """Feed gold with probability `gold_ratio` (the teacher-forcing ratio), else the `own` feed's token.

    `per="token"` draws one coin per row and step (Bengio et al. 2015), `per="sequence"` one per row for the whole
    rollout, `per="batch"` one for the whole batch.
    """

    gold_ratio: float
    own: Greedy | Sample = field(default_factory=Greedy)
    per: str = "token"

    def __post_init__(self):
        if not 0.0 <= self.gold_ratio <= 1.0:
            raise UnforcedError(f"Mix.gold_ratio must be in [0, 1], got {self.gold_ratio}")
        if self.per not in ("token", "sequence", "batch"):
            raise UnforcedError(f"Mix.per must be 'token', 'sequence' or 'batch', got {self.per!r}")
        if not isinstance(self.own, Greedy | Sample):
            raise UnforcedError("Mix.own must be Greedy() or Sample(...)")


@dataclass(frozen=True, eq=False)
class Prefix:
    """Feed gold for the first `lengths[b]` tokens of row b, then the `then` feed's own tokens (MIXER).

    The sequence a Prefix rollout produces is y_t = gold_t for t < lengths[b], else the model's own choice at t;
    its `tokens` are that sequence (so the prefix is part of the output), and it ends at the sequence's first
    <eos>. Inputs 0 .. lengths[b] are gold (<bos> first).
    """

    lengths: Tensor  # (batch,) gold tokens per row
    then: Greedy | Sample = field(default_factory=Greedy)

    def __post_init__(self):
        lengths = torch.as_tensor(self.lengths)
        if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise UnforcedError(f"Prefix.lengths must be a 1-D tensor of integers, got {self.lengths!r}")
        if lengths.numel() and int(lengths.min()) < 0:
            raise UnforcedError(f"Prefix.lengths must not be negative, got {lengths.tolist()}")
        if not isinstance(self.then, Greedy | Sample):
            raise UnforcedError("Prefix.then must be Greedy() or Sample(...)")
        object.__setattr__(self, "lengths", lengths.long())


Feed = Gold | Greedy | Sample | Mix | Prefix


@dataclass
class Rollout:
    tokens: Tensor  # (batch, time) the model's own choice at each step (Prefix: the gold prefix, then own)
    inputs: Tensor  # (batch, time) what was fed at each step (<bos> first; soft feeds: the own token chosen)
    logits: Tensor | None  # (batch, time, vocab); None with keep_logits=False
    log_probs: Tensor | None  # (batch, time) log-prob of gold if gold was given, else of `tokens`; None as logits
    hidden: Tensor | None  # (batch, time, hidden)
    lengths: Tensor  # (batch,) steps up to and including the first <eos>: of gold when given, else of `tokens`
    mask: Tensor  # (batch, time) True on steps inside `lengths`
    gold_fed: Tensor | None = None  # (batch, time) True where the input at that step was gold (Mix and Prefix)


def sample_tokens(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """Sample one token per row by inverse CDF: cumsum then searchsorted on uniform draws.

    Written by hand because `torch.multinomial` over 8000 logits costs ~17 ms a step on these CPUs against
    ~2.3 ms for this (DESIGN.md, measured facts).
    """
    logits = logits.detach().float() / temperature
    index = None
    if top_k is not None and top_k < logits.shape[-1]:
        logits, index = logits.topk(top_k, dim=-1)
    probs = (logits - logits.max(-1, keepdim=True).values).exp()
    cdf = probs.cumsum(-1)
    draw = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device) * cdf[:, -1:]
    choice = torch.searchsorted(cdf, draw, right=True).clamp(max=logits.shape[-1] - 1)
    if index is not None:
        choice = index.gather(1, choice)
    return choice[:, 0]


def own_tokens(feed: Greedy | Sample, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """logits (rows, vocab) -> the feed's own token per row (argmax or a sample), never differentiated."""
    if isinstance(feed, Sample):
        return sample_tokens(logits, feed.temperature, feed.top_k, generator)
    return logits.detach().argmax(-1)


def gold_coins(feed: Mix, batch: int, time: int, generator=None, device=None) -> Tensor:
    """(batch, time) booleans, True where gold is fed, drawn as `feed.per` says."""
    shape = {"token": (batch, time), "sequence": (batch, 1), "batch": (1, 1)}[feed.per]
    coins = torch.rand(shape, generator=generator, device=device) < feed.gold_ratio
    return coins.expand(batch, time)


def soft_embedding(logits: Tensor, table: Tensor, temperature: float = 1.0) -> Tensor:
    """The expected input embedding softmax(logits / temperature) @ table: (..., vocab) -> (..., embedding)."""
    return (logits.float() / temperature).softmax(-1).to(table.dtype) @ table


def embedding_table(model, device=None) -> Tensor:
    """(vocab, embedding) every token's input embedding, scaled as `model.embed` scales it."""
    return model.embed(torch.arange(model.output_embedding().shape[0], device=device))


def _stop_lengths(tokens: Tensor) -> Tensor:
    """Length up to and including the first <eos> (the full width where there is none)."""
    is_eos = tokens == EOS
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(tokens[:, 0], tokens.shape[1] - 1))
    return first + 1


def rollout(model, memory, feed: Feed, gold: Tensor | None = None, max_len: int | None = None,
            soft: bool = False, detach_every: int | None = None, *, soft_temperature: float = 1.0,
            generator: torch.Generator | None = None, stop_at_eos: bool = True, keep_hidden: bool = True,
            keep_logits: bool = True, batch_size: int | None = None) -> Rollout:
    """Run the decoder for `max_len` steps (default: gold's width), feeding what `feed` chooses.

    gold: (batch, time) reference outputs y_1..y_T, <eos>, padded; the input at step t is <bos> for t = 0, then
    gold[t-1] or the model's own token of step t-1. With `stop_at_eos`, decoding ends when every row has emitted
    <eos>, and rows are masked after their first <eos> (gold's when gold is given, as `log_probs` score gold;
    else the model's own; a Prefix rollout's own sequence). Without it, every row runs the full width (the
    diagnostics do this, to score every gold position along the model's own path). A Prefix rollout may run past
    gold's width (gold is read on the prefix only).
    soft: own inputs are softmax(logits / soft_temperature) @ the embedding table, passed as `embeddings=` to
    `model.step` (gold inputs are gold's embedding); the gradient then flows through those choices.
    detach_every: detach the recurrent state every k steps (truncated BPTT); recurrent (tensor) states only. With
    soft feeds the softmax weights of an input across a cut are detached too, so no gradient crosses it.
    Gradients flow through the logits when called with grad enabled; hard token choices are never differentiated.
    keep_logits=False (and keep_hidden=False) keeps only the choices (`tokens`, `inputs`, `gold_fed`): `logits`
    and `log_probs` are None, and nothing of size (batch, time, vocab) is stacked or normalised. Scheduled
    sampling chooses its inputs so, without gradient, and scores them with one forced pass.
    """
    if gold is None and isinstance(feed, Gold | Mix | Prefix):
        raise UnforcedError(f"feed {type(feed).__name__} needs gold tokens")
    batch = gold.shape[0] if gold is not None else batch_size
    if batch is None:
        raise UnforcedError("rollout needs gold or batch_size")
    steps = max_len if max_len is not None else (gold.shape[1] if gold is not None else None)
    if steps is None:
        raise UnforcedError("rollout needs gold or max_len")
    if gold is not None and steps > gold.shape[1] and not isinstance(feed, Prefix):
        raise UnforcedError(f"max_len {steps} is longer than the gold tokens ({gold.shape[1]})")
    if detach_every is not None and (isinstance(detach_every, bool) or not isinstance(detach_every, int)
                                     or detach_every < 1):
        raise UnforcedError(f"rollout detach_every must be None or an integer >= 1, got {detach_every!r}")
    if soft and not (soft_temperature > 0 and math.isfinite(soft_temperature)):
        raise UnforcedError(f"rollout soft_temperature must be a positive number, got {soft_temperature}")
    device = next(model.parameters()).device
    is_gold, is_mix, is_prefix = isinstance(feed, Gold), isinstance(feed, Mix), isinstance(feed, Prefix)
    own_feed = feed.own if is_mix else feed.then if is_prefix else Greedy() if is_gold else feed
    coins = None  # (batch, steps) True where the input of that step is gold
    prefix, prefix_end = None, 0
    if is_mix:
        coins = gold_coins(feed, batch, steps, generator, device).clone()
        coins[:, 0] = True  # the first input is always <bos>
    elif is_prefix:
        prefix = feed.lengths.to(device)
        if prefix.shape != (batch,):
            raise UnforcedError(f"Prefix.lengths has {tuple(prefix.shape)} entries for a batch of {batch}")
        prefix_end = int(prefix.max()) if batch else 0
        if prefix_end > gold.shape[1]:
            raise UnforcedError(f"Prefix.lengths reach {prefix_end}, past the gold tokens ({gold.shape[1]})")
        coins = torch.arange(steps, device=device)[None, :] <= prefix[:, None]
    state = model.start(memory, batch)
    if detach_every is not None and not isinstance(state, Tensor):
        raise UnforcedError(f"rollout detach_every (truncated backpropagation) works on recurrent models only: the "
                            f"state of {type(model).__name__} is a {type(state).__name__}, not a recurrent tensor")
    table = embedding_table(model, device) if soft and not is_gold else None  # (vocab, embedding)
    stops_early = stop_at_eos and (gold is None or is_prefix)
    fed = torch.full((batch,), BOS, dtype=torch.long, device=device)
    embedded = None  # (batch, embedding) the soft input of this step, None for a token input
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, inputs, logits_all, hiddens = [], [], [], []
    for t in range(steps):
        if detach_every is not None and t and t % detach_every == 0:
            state = state.detach()
        inputs.append(fed)
        if embedded is None:
            logits, hidden, state = model.step(memory, state, fed)
        else:
            logits, hidden, state = model.step(memory, state, fed, embeddings=embedded)
        if keep_logits:
            logits_all.append(logits)
        if keep_hidden:
            hiddens.append(hidden)
        own = own_tokens(own_feed, logits, generator)
        if is_prefix and t < prefix_end:
            own = torch.where(t < prefix, gold[:, t], own)
        tokens.append(own)
        if stops_early:
            done = done | (own == EOS)
        if t + 1 < steps:
            if is_gold:
                fed = gold[:, t]
            elif is_mix:
                fed = torch.where(coins[:, t + 1], gold[:, t], own)
            else:
                fed = own
            if table is not None:
                weights = (logits.float() / soft_temperature).softmax(-1)  # (batch, vocab)
                if detach_every is not None and (t + 1) % detach_every == 0:
                    weights = weights.detach()
                embedded = weights.to(table.dtype) @ table  # (batch, embedding)
                if coins is not None and t < gold.shape[1]:
                    embedded = torch.where(coins[:, t + 1, None], model.embed(gold[:, t]), embedded)
        if stops_early and bool(done.all()):
            break
    tokens_t = torch.stack(tokens, 1)
    time = tokens_t.shape[1]
    scores_gold = gold is not None and not is_prefix
    logits_t = log_probs = None
    if keep_logits:
        logits_t = torch.stack(logits_all, 1)  # (batch, time, vocab)
        target = gold[:, :time] if scores_gold else tokens_t
        log_probs = logits_t.log_softmax(-1).gather(2, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    if not stop_at_eos:
        lengths = torch.full((batch,), time, dtype=torch.long, device=device)
    elif scores_gold:  # log_probs score the gold tokens, so gold decides where each row ends
        lengths = (gold[:, :time] != PAD).sum(1)
    else:
        lengths = _stop_lengths(tokens_t)
    mask = torch.arange(time, device=device)[None, :] < lengths[:, None]
    return Rollout(tokens=tokens_t, inputs=torch.stack(inputs, 1), logits=logits_t, log_probs=log_probs,
                   hidden=torch.stack(hiddens, 1) if keep_hidden else None, lengths=lengths, mask=mask,
                   gold_fed=coins[:, :time] if coins is not None else None)


@torch.no_grad()
def beam_search(model, memory, beam_size: int, max_len: int, batch_size: int,
                length_penalty: float = 0.0) -> tuple[Tensor, Tensor]:
    """Beam search; returns the best sequence per row (batch, time) and its score.

    Score = sum of log-probs / length**length_penalty (0 ranks by total log-prob, as exhaustive search does).
    A hypothesis ends at <eos>; finished hypotheses keep their score and take no further tokens.
    """
    sequences, scores = beam_nbest(model, memory, beam_size, max_len, batch_size, length_penalty)
    return sequences[:, 0], scores[:, 0]


def beam_nbest(model, memory, beam_size: int, max_len: int, batch_size: int,
               length_penalty: float = 0.0) -> tuple[Tensor, Tensor]:
    """Beam search's whole final beam, best first: sequences (batch, beam, time) and their total log-probs
    (batch, beam), ranked by `beam_search`'s score; a beam slot that never held a hypothesis (fewer candidates
    than slots) scores -inf. The N-best list of minimum-risk training."""
    if beam_size < 1:
        raise UnforcedError(f"beam_size must be at least 1, got {beam_size}")
    device = next(model.parameters()).device
    memory = select_rows(memory, torch.arange(batch_size, device=device).repeat_interleave(beam_size))
    state = model.start(memory, batch_size * beam_size)
    scores = torch.full((batch_size, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one so the first step has no duplicates
    finished = torch.zeros(batch_size, beam_size, dtype=torch.bool, device=device)
    sequences = torch.zeros(batch_size, beam_size, 0, dtype=torch.long, device=device)
    fed = torch.full((batch_size * beam_size,), BOS, dtype=torch.long, device=device)
    for _ in range(max_len):
        logits, _, state = model.step(memory, state, fed)
        log_probs = logits.float().log_softmax(-1).view(batch_size, beam_size, -1)
        vocab = log_probs.shape[-1]
        # A finished beam extends only by <pad> at no cost, so it competes with its frozen score.
        frozen = torch.full_like(log_probs, float("-inf"))
        frozen[..., PAD] = 0.0
        log_probs = torch.where(finished.unsqueeze(-1), frozen, log_probs)
        candidates = (scores.unsqueeze(-1) + log_probs).view(batch_size, -1)
        k = min(beam_size, candidates.shape[1])
        top_scores, top_index = candidates.topk(k, dim=1)
        if k < beam_size:
            pad = torch.full((batch_size, beam_size - k), float("-inf"), device=device)
            top_scores = torch.cat([top_scores, pad], 1)
            top_index = torch.cat([top_index, top_index[:, :1].expand(-1, beam_size - k)], 1)
        origin, token = top_index // vocab, top_index % vocab
        sequences = torch.cat([sequences.gather(1, origin.unsqueeze(-1).expand_as(sequences)),
                               token.unsqueeze(-1)], 2)
        finished = finished.gather(1, origin) | (token == EOS)
        scores = top_scores
        flat = (origin + torch.arange(batch_size, device=device)[:, None] * beam_size).view(-1)
        state = select_rows(state, flat)
        fed = token.view(-1)
        if bool(finished.all()):
            break
    lengths = torch.where(finished, (sequences == EOS).float().argmax(2) + 1,
                          torch.full_like(scores, sequences.shape[2], dtype=torch.long))
    ranked = scores / lengths.float() ** length_penalty if length_penalty else scores
    # A stable sort: ties keep beam order, so the best is the first maximum, as an argmax would pick it.
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    return (sequences.gather(1, order.unsqueeze(-1).expand_as(sequences)), scores.gather(1, order))

"""A small trainable synthesiser: characters to log-mel frames, for the ASR-TTS cycle (cycle.py).

An attention decoder over frames (Tacotron 2's shape, Shen et al. 2018, made small): a bidirectional GRU over
the characters; a decoder that emits `reduction` frames a step from its previous frame (through a prenet with
dropout), a GRU cell and location-sensitive attention (energies from the query, the keys and a convolution of the
summed earlier weights); a stop logit a step. No vocoder: the recogniser reads log-mel, so the synthesiser's
frames are its input as they are (per utterance normalised, as `AudioCodec` normalises real speech).

What the decoder is fed is a feed of `rollout` (its vocabulary, for frames):

    Gold()                  the reference's last frame of the previous step (teacher forcing)
    Greedy()                the decoder's own last frame of the previous step (free running)
    Mix(gold_ratio, per=)   gold with probability gold_ratio, else its own; one coin per step and row
                            ("token"), per row ("sequence") or per batch; scheduled sampling for frames

Sample and Prefix choose tokens and have no meaning for frames. An own frame is fed detached (Bengio et al.
2015 treat the sampled input as given). Alignment is learnt faster with the guided-attention loss of Tachibana
et al. 2018 (weights far from the diagonal cost), which `synthesis_loss` adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unforced.errors import UnforcedError
from unforced.rollout import Gold, Greedy, Mix, gold_coins
from unforced.vocab import PAD


@dataclass(frozen=True)
class SynthesiserConfig:
    """vocab: characters of the text (the speech task's target tokenizer). mels: frame width. reduction: frames
    a decoder step emits. max_steps: the longest free-running synthesis, in decoder steps."""

    vocab: int
    mels: int = 40
    embedding: int = 64
    hidden: int = 128
    attention: int = 64
    prenet: int = 64
    prenet_dropout: float = 0.5
    reduction: int = 4
    location_filters: int = 8
    location_kernel: int = 15
    max_steps: int = 150

    def __post_init__(self):
        for name in ("vocab", "mels", "embedding", "hidden", "attention", "prenet", "reduction",
                     "location_filters", "location_kernel", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UnforcedError(f"synthesiser.{name} must be a positive integer, got {value!r}")
        if self.hidden % 2:
            raise UnforcedError(f"synthesiser.hidden must be even (two directions), got {self.hidden}")
        if self.location_kernel % 2 == 0:
            raise UnforcedError(f"synthesiser.location_kernel must be odd, got {self.location_kernel}")
        if not 0.0 <= self.prenet_dropout < 1.0:
            raise UnforcedError(f"synthesiser.prenet_dropout must be in [0, 1), got {self.prenet_dropout}")


@dataclass
class Synthesis:
    """What a decoding of the synthesiser gives: frames (batch, steps * reduction, mels), one stop logit per
    step (batch, steps), attention weights (batch, steps, characters), and the number of steps each row ran to
    its stop (free running with stop) or the steps taken (else)."""

    frames: Tensor
    stop_logits: Tensor
    alignments: Tensor
    steps: Tensor


class Synthesiser(nn.Module):
    def __init__(self, config: SynthesiserConfig):
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab, c.embedding, padding_idx=PAD)
        self.encoder = nn.GRU(c.embedding, c.hidden // 2, batch_first=True, bidirectional=True)
        self.prenet = nn.Sequential(nn.Linear(c.mels, c.prenet), nn.ReLU(), nn.Linear(c.prenet, c.prenet),
                                    nn.ReLU())
        self.cell = nn.GRUCell(c.prenet + c.hidden, c.hidden)
        self.query = nn.Linear(c.hidden, c.attention, bias=False)
        self.keys = nn.Linear(c.hidden, c.attention)
        self.location = nn.Conv1d(1, c.location_filters, c.location_kernel, padding=c.location_kernel // 2,
                                  bias=False)
        self.location_projection = nn.Linear(c.location_filters, c.attention, bias=False)
        self.energy = nn.Linear(c.attention, 1, bias=False)
        self.frames_out = nn.Linear(2 * c.hidden, c.reduction * c.mels)
        self.stop_out = nn.Linear(2 * c.hidden, 1)

    def encode(self, text: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor]:
        lengths = text_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(text), lengths, batch_first=True,
                                                   enforce_sorted=False)
        memory, _ = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(memory, batch_first=True, total_length=text.shape[1])
        return memory, self.keys(memory)

    def _attend(self, memory: Tensor, keys: Tensor, mask: Tensor, state: Tensor, cumulative: Tensor):
        location = self.location_projection(self.location(cumulative.unsqueeze(1)).transpose(1, 2))
        energies = self.energy(torch.tanh(self.query(state).unsqueeze(1) + keys + location)).squeeze(-1)
        weights = energies.masked_fill(~mask, float("-inf")).softmax(-1)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights

    def decode(self, text: Tensor, text_mask: Tensor, feed=Gold(), gold_frames: Tensor | None = None,
               steps: int | None = None, until_stop: bool = False,
               generator: torch.Generator | None = None) -> Synthesis:
        """Run the decoder for `steps` steps (default: as many as `gold_frames` needs) with `feed`; with
        `until_stop`, stop once every row's stop probability passed 1/2 (each row's `steps` is where its own
        did). Gold and Mix read `gold_frames` (batch, frames, mels)."""
        c = self.config
        if not isinstance(feed, Gold | Greedy | Mix):
            raise UnforcedError(f"the synthesiser's frames are fed Gold(), Greedy() or Mix(...), not {feed!r}")
        needs_gold = not isinstance(feed, Greedy) or steps is None
        if needs_gold and gold_frames is None:
            raise UnforcedError("Gold and Mix feeds (and a decoding without `steps`) need the gold frames")
        batch = text.shape[0]
        if steps is None:
            steps = -(-gold_frames.shape[1] // c.reduction)
        if gold_frames is not None:
            padded = F.pad(gold_frames, (0, 0, 0, max(0, steps * c.reduction - gold_frames.shape[1])))
            previous_gold = torch.cat([torch.zeros_like(padded[:, :1]),
                                       padded[:, c.reduction - 1::c.reduction][:, :steps - 1]], 1)
        coins = None
        if isinstance(feed, Mix):
            coins = gold_coins(feed, batch, steps, generator, device=text.device)
        memory, keys = self.encode(text, text_mask)
        mask = text_mask.bool()
        state = memory.new_zeros(batch, c.hidden)
        context = memory.new_zeros(batch, c.hidden)
        cumulative = memory.new_zeros(batch, text.shape[1])
        own = memory.new_zeros(batch, c.mels)
        frames, stops, alignments = [], [], []
        stopped = torch.zeros(batch, dtype=torch.bool, device=text.device)
        ran = torch.full((batch,), steps, dtype=torch.long, device=text.device)
        for t in range(steps):
            if isinstance(feed, Gold):
                previous = previous_gold[:, t]
            elif isinstance(feed, Greedy):
                previous = own
            else:
                previous = torch.where(coins[:, t, None], previous_gold[:, t], own)
            state = self.cell(torch.cat([self._prenet(previous), context], -1), state)
            context, weights = self._attend(memory, keys, mask, state, cumulative)
            cumulative = cumulative + weights
            out = torch.cat([state, context], -1)
            step_frames = self.frames_out(out).view(batch, c.reduction, c.mels)
            stop = self.stop_out(out).squeeze(-1)
            frames.append(step_frames)
            stops.append(stop)
            alignments.append(weights)
            own = step_frames[:, -1].detach()
            if until_stop:
                newly = (stop.sigmoid() > 0.5) & ~stopped
                ran = torch.where(newly, torch.full_like(ran, t + 1), ran)
                stopped = stopped | newly
                if bool(stopped.all()):
                    break
        return Synthesis(torch.cat(frames, 1), torch.stack(stops, 1), torch.stack(alignments, 1), ran)

    def _prenet(self, frame: Tensor) -> Tensor:
        # Dropout in the prenet while training only: evaluation and synthesis are deterministic.
        x = self.prenet[1](self.prenet[0](frame))
        x = F.dropout(x, self.config.prenet_dropout, self.training)
        x = self.prenet[3](self.prenet[2](x))
        return F.dropout(x, self.config.prenet_dropout, self.training)

    @torch.no_grad()
    def synthesise(self, text: Tensor, text_mask: Tensor) -> list[Tensor]:
        """Free-running frames for each row, cut where its stop fired (at most `max_steps` steps), each
        normalised per mel bin to zero mean and unit variance as AudioCodec normalises real speech."""
        was_training = self.training
        self.eval()
        try:
            out = self.decode(text, text_mask, Greedy(), steps=self.config.max_steps, until_stop=True)
        finally:
            self.train(was_training)
        result = []
        for row, ran in enumerate(out.steps.tolist()):
            frames = out.frames[row, : max(ran, 1) * self.config.reduction]
            result.append((frames - frames.mean(0)) / (frames.std(0, unbiased=False) + 1e-5))
        return result


def guided_attention_cost(alignments: Tensor, text_mask: Tensor, step_mask: Tensor, width: float = 0.2) -> Tensor:
    """Tachibana et al.'s guided attention: the mean of the weights times 1 - exp(-(s/S - t/T)^2 / (2 width^2)),
    S and T each row's own characters and steps: attention far from the diagonal costs."""
    chars = text_mask.sum(1, keepdim=True).clamp(min=1).float()  # (batch, 1)
    steps = step_mask.sum(1, keepdim=True).clamp(min=1).float()
    s = torch.arange(alignments.shape[2], device=alignments.device)[None, None, :] / chars[:, :, None]
    t = torch.arange(alignments.shape[1], device=alignments.device)[None, :, None] / steps[:, :, None]
    penalty = 1.0 - torch.exp(-((s - t) ** 2) / (2 * width ** 2))
    valid = step_mask[:, :, None] & text_mask.bool()[:, None, :]
    return (alignments * penalty * valid).sum() / valid.sum().clamp(min=1)


def frame_targets(frames: Tensor, frame_mask: Tensor, reduction: int) -> tuple[Tensor, Tensor]:
    """Gold frames padded to whole decoder steps, and the mask of real steps (batch, steps)."""
    steps = -(-frames.shape[1] // reduction)
    padded = F.pad(frames, (0, 0, 0, steps * reduction - frames.shape[1]))
    lengths = -(-frame_mask.sum(1) // reduction)
    return padded, torch.arange(steps, device=frames.device)[None, :] < lengths[:, None]


def synthesis_loss(out: Synthesis, frames: Tensor, frame_mask: Tensor, text_mask: Tensor, reduction: int,
                   guided: float = 1.0) -> tuple[Tensor, dict]:
    """L1 on the real frames + binary cross-entropy of the stop (1 from each row's last step on) + `guided`
    times the guided-attention cost; the loss and its parts."""
    padded, step_mask = frame_targets(frames, frame_mask, reduction)
    real = F.pad(frame_mask, (0, padded.shape[1] - frame_mask.shape[1]))[:, :, None].float()
    l1 = ((out.frames[:, : padded.shape[1]] - padded).abs() * real).sum() / (real.sum() * frames.shape[2])
    last = step_mask.sum(1) - 1  # (batch,)
    stop_target = (torch.arange(step_mask.shape[1], device=frames.device)[None, :] >= last[:, None]).float()
    stop = F.binary_cross_entropy_with_logits(out.stop_logits[:, : step_mask.shape[1]], stop_target)
    attention = guided_attention_cost(out.alignments[:, : step_mask.shape[1]], text_mask, step_mask)
    loss = l1 + stop + guided * attention
    return loss, {"frame_l1": float(l1.detach()), "stop_bce": float(stop.detach()),
                  "guided_attention": float(attention.detach())}


def frame_error(out: Synthesis, frames: Tensor, frame_mask: Tensor) -> Tensor:
    """Mean absolute error per real frame and bin of each row (batch,): the decoding's frames against gold."""
    width = min(out.frames.shape[1], frames.shape[1])
    real = frame_mask[:, :width, None].float()
    error = ((out.frames[:, :width] - frames[:, :width]).abs() * real).sum((1, 2))
    return error / (frame_mask.sum(1).clamp(min=1) * frames.shape[2])


__all__ = ["Synthesis", "Synthesiser", "SynthesiserConfig", "frame_error", "frame_targets",
           "guided_attention_cost", "synthesis_loss"]

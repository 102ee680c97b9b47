"""GRU and LSTM encoder-decoders with global attention (Luong et al. 2015, "general" score, no input feeding).

Without input feeding the decoder RNN reads only token embeddings, so a teacher-forced pass is one fused
`nn.GRU`/`nn.LSTM` call over the whole target followed by attention for all positions at once; stepping runs the
same cell one position at a time. The two agree to floating-point error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from unforced.models.base import EncoderOutput, Forced, ModelConfig
from unforced.models.sources import build_front_end
from unforced.vocab import PAD


@dataclass
class RNNMemory:
    states: Tensor  # (batch, source, hidden) encoder states projected to the decoder size
    keys: Tensor  # (batch, source, hidden) states @ W_a, computed once for every decoder step
    mask: Tensor  # (batch, source) True on real tokens
    initial: Tensor  # (batch, layers, hidden) or (batch, layers, 2 * hidden) for LSTM (h and c side by side)


class RNNSeq2Seq(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        cell = nn.GRU if config.kind == "gru" else nn.LSTM
        self.is_lstm = config.kind == "lstm"
        h, e = config.hidden, config.embedding
        # The source front end (a token embedding for text, a conv stack for audio or images) feeds the encoder.
        self.source_embedding = build_front_end(config.source, e, config.source_vocab, config.source_features)
        self.target_embedding = nn.Embedding(config.target_vocab, e, padding_idx=PAD)
        self.encoder = cell(e, h // 2 if h > 1 else 1, config.layers, batch_first=True, bidirectional=True,
                            dropout=config.dropout if config.layers > 1 else 0.0)
        encoder_width = 2 * (h // 2 if h > 1 else 1)
        self.bridge = nn.Linear(encoder_width, h)
        self.init_state = nn.Linear(h, config.layers * h * (2 if self.is_lstm else 1))
        self.decoder = cell(e, h, config.layers, batch_first=True,
                            dropout=config.dropout if config.layers > 1 else 0.0)
        self.attention = nn.Linear(h, h, bias=False)
        self.combine = nn.Linear(2 * h, h)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(h, config.target_vocab)

    def embed(self, tokens: Tensor) -> Tensor:
        return self.target_embedding(tokens)

    def output_embedding(self) -> Tensor:
        return self.target_embedding.weight

    def encode_source(self, source: Tensor, source_mask: Tensor) -> EncoderOutput:
        """The encoder alone: front end, then the bidirectional RNN; states projected to the decoder size."""
        embedded, source_mask = self.source_embedding.encode(source, source_mask)  # (batch, S, embedding)
        lengths = source_mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.dropout(embedded), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=embedded.shape[1])
        return EncoderOutput(states=torch.tanh(self.bridge(out)), mask=source_mask)  # (batch, S, hidden)

    def encode(self, source: Tensor, source_mask: Tensor) -> RNNMemory:
        encoded = self.encode_source(source, source_mask)
        states = encoded.states
        # A source with no tokens still attends to position 0 (a padding state) rather than softmaxing nothing.
        mask = encoded.mask.bool().clone()
        mask[:, 0] |= ~mask.any(1)
        pooled = (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        initial = torch.tanh(self.init_state(pooled)).view(states.shape[0], self.config.layers, -1)
        return RNNMemory(states=states, keys=self.attention(states), mask=mask, initial=initial)

    def _initial_state(self, memory: RNNMemory):
        state = memory.initial.transpose(0, 1).contiguous()  # (layers, batch, hidden [* 2])
        if self.is_lstm:
            h, c = state.chunk(2, dim=-1)
            return (h.contiguous(), c.contiguous())
        return state

    def _attend(self, memory: RNNMemory, query: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """query (batch, time, hidden) -> logits (batch, time, vocab), hidden, attention (batch, time, source)."""
        scores = torch.einsum("bth,bsh->bts", query, memory.keys)
        scores = scores.masked_fill(~memory.mask.unsqueeze(1), float("-inf"))
        weights = scores.softmax(-1)
        context = torch.einsum("bts,bsh->bth", weights, memory.states)
        hidden = torch.tanh(self.combine(torch.cat([query, context], -1)))
        return self.output(self.dropout(hidden)), hidden, weights

    def forced(self, memory: RNNMemory, inputs: Tensor, embeddings: Tensor | None = None) -> Forced:
        embedded = self.embed(inputs) if embeddings is None else embeddings
        out, _ = self.decoder(self.dropout(embedded), self._initial_state(memory))  # one fused call
        logits, hidden, weights = self._attend(memory, out)
        return Forced(logits=logits, hidden=hidden, attention=weights)

    def start(self, memory: RNNMemory, batch_size: int) -> Tensor:
        return memory.initial

    def step(self, memory: RNNMemory, state: Tensor, tokens: Tensor, embeddings: Tensor | None = None):
        embedded = self.embed(tokens) if embeddings is None else embeddings  # (batch, embedding)
        rnn_state = state.transpose(0, 1).contiguous()
        if self.is_lstm:
            h, c = rnn_state.chunk(2, dim=-1)
            rnn_state = (h.contiguous(), c.contiguous())
        out, new_state = self.decoder(self.dropout(embedded).unsqueeze(1), rnn_state)
        if self.is_lstm:
            new_state = torch.cat(new_state, -1)
        logits, hidden, _ = self._attend(memory, out)
        return logits[:, 0], hidden[:, 0], new_state.transpose(0, 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["RNNMemory", "RNNSeq2Seq", "count_parameters"]

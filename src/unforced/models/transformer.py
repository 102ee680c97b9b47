"""Transformer encoder-decoder and decoder-only language model (pre-LayerNorm), stepping with a KV cache.

Stepping without a cache recomputes every earlier position at every step (11-15x slower at the reference size),
so `step` appends one key/value per layer to a cache and attends over it. Cross-attention keys and values of the
source are computed once, in `start`.

The decoder-only model reads the source as a prefix: `[source (right-padded), <bos>, y_1, ...]`, with position
ids that skip the padding, so every row's target starts right after its own source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unforced.errors import UnforcedError
from unforced.models.base import EncoderOutput, Forced, ModelConfig
from unforced.models.sources import build_front_end
from unforced.vocab import PAD


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        # No key bias: it adds q.b to every score of a query alike, which softmax cancels, so its gradient is zero
        # in exact arithmetic and only rounding noise (which AdamW would scale up into real updates).
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def split(self, x: Tensor) -> Tensor:  # (batch, time, width) -> (batch, heads, time, width / heads)
        b, t, w = x.shape
        return x.view(b, t, self.heads, w // self.heads).transpose(1, 2)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.split(self.key(x)), self.split(self.value(x))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q = self.split(self.query(x))
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        b, h, t, d = out.shape
        return self.out(out.transpose(1, 2).reshape(b, t, h * d))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, feedforward: int, dropout: float, cross: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.self_attention = Attention(width, heads, dropout)
        self.cross = cross
        if cross:
            self.norm2 = nn.LayerNorm(width)
            self.cross_attention = Attention(width, heads, dropout)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, feedforward), nn.GELU(), nn.Linear(feedforward, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask, cache=None, cross_kv=None, cross_mask=None):
        """cache: (keys, values) of earlier positions, or None; returns x and the keys/values to cache."""
        h = self.norm1(x)
        k, v = self.self_attention.keys_values(h)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        x = x + self.dropout(self.self_attention(h, k, v, mask))
        if self.cross:
            x = x + self.dropout(self.cross_attention(self.norm2(x), *cross_kv, cross_mask))
        x = x + self.dropout(self.mlp(self.norm3(x)))
        return x, (k, v)


@dataclass
class TransformerMemory:
    states: Tensor | None  # (batch, source, width) encoder output; None for decoder-only
    mask: Tensor  # (batch, source) True on real source tokens
    source: Tensor | None = None  # (batch, source) token ids, decoder-only only


@dataclass
class TransformerState:
    keys: list[Tensor]  # per layer (batch, heads, time, head width)
    values: list[Tensor]
    key_mask: Tensor  # (batch, time) True where a cached key may be attended to
    position: Tensor  # (batch,) position id of the next token
    cross: list[tuple[Tensor, Tensor]] | None = None


class Transformer(nn.Module):
    """Encoder-decoder (`kind="transformer"`) or decoder-only language model (`kind="decoder_only"`)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.decoder_only = config.kind == "decoder_only"
        w, ff = config.hidden, config.feedforward or 4 * config.hidden
        self.token_embedding = nn.Embedding(config.target_vocab, w, padding_idx=PAD)
        positions = config.max_target_len + 1 + (config.max_source_len if self.decoder_only else 0)
        self.position_embedding = nn.Embedding(positions, w)
        # The decoder-only model embeds its source prefix with a table of its own, so source and target
        # vocabularies may differ; everything after the embedding is the one causal stack.
        self.source_embedding = build_front_end(config.source, w, config.source_vocab, config.source_features)
        if not self.decoder_only:
            self.source_positions = nn.Embedding(config.max_source_len, w)
            self.encoder = nn.ModuleList(
                Block(w, config.heads, ff, config.dropout, cross=False) for _ in range(config.layers))
            self.encoder_norm = nn.LayerNorm(w)
        self.decoder = nn.ModuleList(
            Block(w, config.heads, ff, config.dropout, cross=not self.decoder_only) for _ in range(config.layers))
        self.norm = nn.LayerNorm(w)
        self.output = nn.Linear(w, config.target_vocab, bias=False)
        self.output.weight = self.token_embedding.weight  # tied, as in most Transformer LMs
        # N(0, 1/width) rather than nn.Embedding's N(0, 1): tied to the output, the default makes the first
        # logits' spread ~sqrt(width) (cross-entropy ~500 against ln V ~9 at the reference size).
        tables = [self.token_embedding, self.position_embedding]
        if isinstance(self.source_embedding, nn.Embedding):
            tables.append(self.source_embedding)
        for table in tables:
            nn.init.normal_(table.weight, std=w**-0.5)
            if table.padding_idx is not None:
                nn.init.zeros_(table.weight[table.padding_idx])
        self.dropout = nn.Dropout(config.dropout)
        self.scale = w**0.5

    def embed(self, tokens: Tensor) -> Tensor:
        return self.token_embedding(tokens) * self.scale

    def output_embedding(self) -> Tensor:
        return self.token_embedding.weight

    def encode_source(self, source: Tensor, source_mask: Tensor) -> EncoderOutput:
        """The encoder alone: front end, positions (unless the front end brings its own), the stack."""
        x, mask = self.source_embedding.encode(source, source_mask)  # (batch, S, width)
        length = x.shape[1]
        if isinstance(self.source_embedding, nn.Embedding):
            x = x * self.scale
        if not self.source_embedding.has_positions:
            if length > self.source_positions.num_embeddings:
                raise UnforcedError(f"source of {length} positions is longer than the model allows "
                                    f"({self.source_positions.num_embeddings}): raise model.max_source_len")
            x = x + self.source_positions(torch.arange(length, device=x.device))
        x = self.dropout(x)
        # Each query may attend to itself, so an all-padding row never softmaxes over nothing.
        attend = mask[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=x.device)
        for block in self.encoder:
            x, _ = block(x, attend)
        return EncoderOutput(states=self.encoder_norm(x), mask=mask)

    def encode(self, source: Tensor, source_mask: Tensor) -> TransformerMemory:
        if self.decoder_only:
            return TransformerMemory(states=None, mask=source_mask.bool(), source=source)
        encoded = self.encode_source(source, source_mask)
        return TransformerMemory(states=encoded.states, mask=encoded.mask)

    def _cross(self, memory: TransformerMemory) -> list[tuple[Tensor, Tensor]] | None:
        if self.decoder_only:
            return None
        return [block.cross_attention.keys_values(memory.states) for block in self.decoder]

    def _decode(self, x: Tensor, mask: Tensor, memory: TransformerMemory, cross, caches=None):
        cross_mask = None if self.decoder_only else memory.mask[:, None, None, :]
        new_caches = []
        for i, block in enumerate(self.decoder):
            x, kv = block(x, mask, None if caches is None else caches[i],
                          None if cross is None else cross[i], cross_mask)
            new_caches.append(kv)
        hidden = self.norm(x)
        return self.output(hidden), hidden, new_caches

    def _prefix(self, memory: TransformerMemory):
        """Decoder-only: embeddings, key mask and next position id of the source prefix."""
        mask = memory.mask
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        x = self.source_embedding(memory.source) * self.scale + self.position_embedding(positions)
        return x, mask, mask.long().sum(1)

    def forced(self, memory: TransformerMemory, inputs: Tensor, embeddings: Tensor | None = None) -> Forced:
        b, t = inputs.shape
        x = self.embed(inputs) if embeddings is None else embeddings
        steps = torch.arange(t, device=inputs.device)
        if self.decoder_only:
            prefix, key_mask, first = self._prefix(memory)
            x = torch.cat([prefix, x + self.position_embedding(first[:, None] + steps)], 1)
            s = prefix.shape[1]
            keys = torch.cat([key_mask, torch.ones(b, t, dtype=torch.bool, device=inputs.device)], 1)
        else:
            x = x + self.position_embedding(steps)
            s, keys = 0, torch.ones(b, t, dtype=torch.bool, device=inputs.device)
        n = s + t
        causal = torch.ones(n, n, dtype=torch.bool, device=inputs.device).tril()
        mask = (causal & keys[:, None, None, :]) | torch.eye(n, dtype=torch.bool, device=inputs.device)
        logits, hidden, _ = self._decode(self.dropout(x), mask, memory, self._cross(memory))
        return Forced(logits=logits[:, s:], hidden=hidden[:, s:])

    def start(self, memory: TransformerMemory, batch_size: int) -> TransformerState:
        device = memory.mask.device
        if not self.decoder_only:
            empty = torch.zeros(batch_size, self.config.heads, 0, self.config.hidden // self.config.heads,
                                device=device)
            return TransformerState(keys=[empty] * len(self.decoder), values=[empty] * len(self.decoder),
                                    key_mask=torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
                                    position=torch.zeros(batch_size, dtype=torch.long, device=device),
                                    cross=self._cross(memory))
        prefix, key_mask, first = self._prefix(memory)
        s = prefix.shape[1]
        causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()
        mask = (causal & key_mask[:, None, None, :]) | torch.eye(s, dtype=torch.bool, device=device)
        _, _, caches = self._decode(self.dropout(prefix), mask, memory, None)
        return TransformerState(keys=[k for k, _ in caches], values=[v for _, v in caches],
                                key_mask=key_mask, position=first)

    def step(self, memory: TransformerMemory, state: TransformerState, tokens: Tensor,
             embeddings: Tensor | None = None):
        if int(state.position.max()) >= self.position_embedding.num_embeddings:
            raise UnforcedError(f"decoding past the model's last position: raise model.max_target_len "
                                f"({self.config.max_target_len})")
        x = self.embed(tokens) if embeddings is None else embeddings  # (batch, width)
        x = (x + self.position_embedding(state.position))[:, None]
        key_mask = torch.cat([state.key_mask, state.key_mask.new_ones(tokens.shape[0], 1)], 1)
        mask = key_mask[:, None, None, :]
        logits, hidden, caches = self._decode(self.dropout(x), mask, memory, state.cross,
                                              list(zip(state.keys, state.values, strict=True)))
        new_state = TransformerState(keys=[k for k, _ in caches], values=[v for _, v in caches],
                                     key_mask=key_mask, position=state.position + 1, cross=state.cross)
        return logits[:, 0], hidden[:, 0], new_state

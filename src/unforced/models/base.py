"""The Model contract every model of the library keeps, and its config.

    encode(source, source_mask) -> Memory          once per batch
    forced(memory, inputs)      -> Forced          one parallel pass: logits (B,T,V), hidden (B,T,H)
    start(memory, batch_size)   -> State
    step(memory, state, tokens) -> (logits (B,V), hidden (B,H), State)

`forced` on gold inputs equals stepping with gold feeds (tests hold them equal to 1e-5). Every tensor inside a
Memory or a State has the batch on dimension 0, so `select_rows` can expand or reorder any of them (beam search,
K samples per source) without knowing the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.models.sources import SOURCE_KINDS

MODEL_KINDS = ("gru", "lstm", "transformer", "decoder_only", "hf")


@dataclass
class ModelConfig:
    """Architecture of a sequence model.

    Parameters:
        kind: one of "gru", "lstm" (encoder-decoder with Luong attention), "transformer" (encoder-decoder) or
            "decoder_only" (a Transformer language model that reads the source as a prefix).
        source: what the encoder reads: "text" (token ids), "audio" (log-mel frames) or "image" (pixels); the
            front end of that kind (`models.sources`) feeds the encoder body, so any source works with any
            encoder-decoder kind. Decoder-only and HF models read text.
        source_vocab: source vocabulary size (text sources). source_features: mel bins (audio) or channels
            (image). A task's codec gives both (`SourceCodec.model_options`).
        target_vocab: target vocabulary size (decoder-only models use one shared vocabulary).
        embedding: token embedding width (RNNs); Transformers use `hidden` for both.
        hidden: RNN hidden size, or Transformer d_model.
        layers: RNN layers, or Transformer layers on each side.
        heads: attention heads (Transformers).
        feedforward: Transformer feed-forward width (default 4 * hidden).
        dropout: dropout probability during training.
        max_source_len, max_target_len: the longest sequences the model accepts (positions for Transformers).
        path: for kind "hf", a local directory saved with `save_pretrained` (or a hub name already cached); the
            architecture fields above are then the saved model's own and are ignored.
    """

    kind: str = "gru"
    source: str = "text"
    source_vocab: int = 0
    source_features: int = 0
    target_vocab: int = 0
    embedding: int = 128
    hidden: int = 256
    layers: int = 1
    heads: int = 4
    feedforward: int | None = None
    dropout: float = 0.1
    max_source_len: int = 64
    max_target_len: int = 64
    path: str | None = None

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise UnforcedError(f"model.kind must be one of {', '.join(MODEL_KINDS)}, got {self.kind!r}")
        if self.kind == "hf":
            if not self.path:
                raise UnforcedError("model.path is required for kind 'hf' (--model hf:PATH)")
            return
        if self.feedforward is not None and self.feedforward < 1:
            raise UnforcedError(f"model.feedforward must be at least 1, got {self.feedforward}")
        if self.source not in SOURCE_KINDS:
            raise UnforcedError(f"model.source must be one of {', '.join(SOURCE_KINDS)}, got {self.source!r}")
        if self.source != "text" and self.kind == "decoder_only":
            raise UnforcedError(f"model.kind 'decoder_only' reads text sources only, not {self.source!r}: use "
                                f"an encoder-decoder kind (gru, lstm, transformer)")
        if self.source_features < 0:
            raise UnforcedError(f"model.source_features must not be negative, got {self.source_features}")
        source_size = "source_vocab" if self.source == "text" else "source_features"
        for name in (source_size, "target_vocab", "embedding", "hidden", "layers", "heads", "max_source_len",
                     "max_target_len"):
            if getattr(self, name) < 1:
                raise UnforcedError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UnforcedError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.kind in ("transformer", "decoder_only") and self.hidden % self.heads:
            raise UnforcedError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")


@dataclass
class Forced:
    logits: Tensor  # (batch, time, vocab)
    hidden: Tensor  # (batch, time, hidden)
    attention: Tensor | None = None  # (batch, time, source) where the model has cross-attention


@dataclass
class EncoderOutput:
    """What an encoder gives a decoder: one state per source position and which positions are real."""

    states: Tensor  # (batch, source, hidden)
    mask: Tensor  # (batch, source) True on real positions


class SequenceModel(Protocol):
    config: ModelConfig

    def encode(self, source: Tensor, source_mask: Tensor) -> Any: ...
    def forced(self, memory: Any, inputs: Tensor, embeddings: Tensor | None = None) -> Forced: ...
    def start(self, memory: Any, batch_size: int) -> Any: ...
    def step(self, memory: Any, state: Any, tokens: Tensor) -> tuple[Tensor, Tensor, Any]: ...
    def embed(self, tokens: Tensor) -> Tensor: ...
    def output_embedding(self) -> Tensor: ...


def select_rows(obj: Any, index: Tensor) -> Any:
    """Index dimension 0 of every tensor inside `obj` (tensors, tuples, lists, dicts, dataclasses, None)."""
    if obj is None:
        return None
    if isinstance(obj, Tensor):
        return obj.index_select(0, index)
    if isinstance(obj, tuple | list):
        return type(obj)(select_rows(item, index) for item in obj)
    if isinstance(obj, dict):
        return {key: select_rows(value, index) for key, value in obj.items()}
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(
            obj, **{f.name: select_rows(getattr(obj, f.name), index) for f in dataclasses.fields(obj)}
        )
    return obj


def repeat_rows(obj: Any, times: int) -> Any:
    """Each row repeated `times` times in place (row r becomes rows r*times .. r*times + times - 1)."""
    batch = _batch_size(obj)
    index = torch.arange(batch).repeat_interleave(times)
    return select_rows(obj, index)


def _batch_size(obj: Any) -> int:
    if isinstance(obj, Tensor):
        return obj.shape[0]
    if isinstance(obj, tuple | list):
        items = list(obj)
    elif isinstance(obj, dict):
        items = list(obj.values())
    elif dataclasses.is_dataclass(obj):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    else:
        items = []
    for item in items:
        if item is not None and not isinstance(item, int | float | str | bool):
            size = _batch_size(item)
            if size >= 0:
                return size
    return -1

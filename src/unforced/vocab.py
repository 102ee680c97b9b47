"""The bottom floor: the special token ids every tokenizer shares and the Tokenizer protocol.

Models, the rollout engine and the rewards import these from here, never from `tasks`, so no layer below the
tasks depends on them. pad = 0, bos = 1, eos = 2, unk = 3.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


class Tokenizer(Protocol):
    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def to_json(self) -> str: ...


__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "Tokenizer"]

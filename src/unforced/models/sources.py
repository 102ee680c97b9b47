"""Source front ends: the first layer of an encoder, one per source modality, all giving (batch, S, width) states.

    text    a token embedding table                                   ids (B,S)        -> (B,S,width)
    audio   two 1-D convolutions of stride 2 over log-mel frames      (B,T,mels)       -> (B,ceil(T/4),width)
            (time subsampled 4x, as the conv front ends of attention ASR: Dong et al. 2018, Speech-Transformer)
    image   three 3x3 convolutions of stride 2 with (x, y) channels   (B,3,H,W)        -> (B,(H/8)(W/8),width)
            (a small CNN whose grid cells are the states to attend over, as in Show, Attend and Tell)

Each front end's `encode(source, mask)` returns the states and their mask, so the body above it (a bidirectional
RNN or a Transformer stack) and every decoder work on any modality. The text front end is an `nn.Embedding`
itself, so text models keep their parameter names (and their checkpoints).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unforced.errors import UnforcedError
from unforced.vocab import PAD

SOURCE_KINDS = ("text", "audio", "image")


class TextFrontEnd(nn.Embedding):
    has_positions = False  # the body adds positions (Transformers) or reads order itself (RNNs)

    def __init__(self, vocab: int, width: int):
        super().__init__(vocab, width, padding_idx=PAD)

    def encode(self, source: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self(source), mask.bool()


class AudioFrontEnd(nn.Module):
    has_positions = False

    def __init__(self, mels: int, width: int):
        super().__init__()
        self.first = nn.Conv1d(mels, width, kernel_size=3, stride=2, padding=1)
        self.second = nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)

    @staticmethod
    def _halve(mask: Tensor) -> Tensor:
        # A conv of kernel 3, stride 2, padding 1 maps T frames to ceil(T / 2) outputs, output i centred on 2i.
        lengths = (mask.long().sum(1) + 1) // 2
        width = (mask.shape[1] + 1) // 2
        return torch.arange(width, device=mask.device)[None, :] < lengths[:, None]

    def encode(self, source: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x = (source * mask.unsqueeze(-1)).transpose(1, 2)  # (batch, mels, frames), padding zeroed
        half = self._halve(mask)
        x = F.gelu(self.first(x)) * half.unsqueeze(1)
        quarter = self._halve(half)
        x = F.gelu(self.second(x)).transpose(1, 2)  # (batch, frames / 4, width)
        return x * quarter.unsqueeze(-1), quarter


class ImageFrontEnd(nn.Module):
    has_positions = True  # the (x, y) channels tell each grid cell where it is

    def __init__(self, channels: int, width: int):
        super().__init__()
        middle = max(width // 2, 8)
        self.layers = nn.ModuleList([nn.Conv2d(channels + 2, middle, 3, stride=2, padding=1),
                                     nn.Conv2d(middle, middle, 3, stride=2, padding=1),
                                     nn.Conv2d(middle, width, 3, stride=2, padding=1)])

    def encode(self, source: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        b, _, h, w = source.shape
        ys = torch.linspace(-1, 1, h, device=source.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=source.device).view(1, 1, 1, w).expand(b, 1, h, w)
        x = torch.cat([source, xs.to(source.dtype), ys.to(source.dtype)], 1)
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index + 1 < len(self.layers):
                x = F.gelu(x)
        states = x.flatten(2).transpose(1, 2)  # (batch, cells, width)
        return states, torch.ones(b, states.shape[1], dtype=torch.bool, device=source.device)


def build_front_end(kind: str, width: int, vocab: int = 0, features: int = 0) -> nn.Module:
    """The front end of source kind `kind` producing states of `width`."""
    if kind == "text":
        return TextFrontEnd(vocab, width)
    if kind == "audio":
        return AudioFrontEnd(features, width)
    if kind == "image":
        return ImageFrontEnd(features, width)
    raise UnforcedError(f"model.source must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}")


__all__ = ["SOURCE_KINDS", "AudioFrontEnd", "ImageFrontEnd", "TextFrontEnd", "build_front_end"]

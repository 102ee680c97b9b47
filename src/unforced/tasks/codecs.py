"""Source codecs: a batch of sources of one modality -> (features, mask), what a model's encoder reads.

    TextCodec(tokenizer)   text            -> token ids (batch, source) long, mask (batch, source)
    AudioCodec(...)        WAV path/array  -> log-mel frames (batch, frames, mels) float, mask (batch, frames)
    ImageCodec(size)       image path/array-> pixels (batch, channels, size, size) float, mask (batch, 1)

`model_options()` gives the model config fields the matching encoder front end needs (`source`, and the
vocabulary, mel bins or channels), so a task and a model agree without the experiment knowing the modality.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from unforced.errors import UnforcedError
from unforced.vocab import PAD, Tokenizer


class SourceCodec(Protocol):
    kind: str  # "text" | "audio" | "image": the model's encoder front end of the same name reads it

    def encode(self, sources: list[Any], max_length: int | None = None) -> tuple[Tensor, Tensor]: ...
    def length(self, source: Any) -> int: ...
    def model_options(self) -> dict: ...


class TextCodec:
    """Text through a tokenizer: right-padded token ids and a mask of the real tokens."""

    kind = "text"

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def length(self, source: str) -> int:
        return len(self.tokenizer.encode(source))

    def encode(self, sources: list[str], max_length: int | None = None) -> tuple[Tensor, Tensor]:
        ids = [self.tokenizer.encode(s) for s in sources]
        _check_lengths(sources, [len(row) for row in ids], max_length, "tokens")
        width = max(1, max((len(row) for row in ids), default=1))
        features = torch.full((len(ids), width), PAD, dtype=torch.long)  # (batch, source)
        for i, row in enumerate(ids):
            features[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return features, features != PAD

    def model_options(self) -> dict:
        return {"source": "text", "source_vocab": self.tokenizer.vocab_size}


def _check_lengths(sources: list[Any], lengths: list[int], limit: int | None, unit: str) -> None:
    if limit is None:
        return
    for source, length in zip(sources, lengths, strict=True):
        if length > limit:
            shown = source[:60] if isinstance(source, str) else type(source).__name__
            raise UnforcedError(f"source of {length} {unit} is longer than the model allows ({limit}): {shown!r}")


# --- audio ------------------------------------------------------------------------------------------------------

def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate of a PCM WAV file (8, 16 or 32 bit; channels averaged).

    The standard library's `wave` reads it: torchaudio does not load beside torch 2.13 here, and PCM needs no
    decoder."""
    try:
        with wave.open(str(path), "rb") as handle:
            rate, width, channels = handle.getframerate(), handle.getsampwidth(), handle.getnchannels()
            frames = handle.readframes(handle.getnframes())
    except FileNotFoundError:
        raise UnforcedError(f"{path}: no such audio file") from None
    except (wave.Error, EOFError, OSError) as error:
        raise UnforcedError(f"{path}: not a readable PCM WAV file ({error})") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise UnforcedError(f"{path}: {8 * width}-bit samples are not supported (8, 16 or 32-bit PCM)")
    samples = np.frombuffer(frames, dtype=dtype).astype(np.float32)
    if width == 1:
        samples = (samples - 128.0) / 128.0
    else:
        samples /= float(2 ** (8 * width - 1))
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(1)
    return samples, rate


def mel_filterbank(mels: int, fft_size: int, sample_rate: int, low: float = 0.0,
                   high: float | None = None) -> Tensor:
    """(fft_size // 2 + 1, mels) triangular filters evenly spaced on the HTK mel scale, m = 2595 log10(1 + f/700),
    each peaking at 1 (as torchaudio's `melscale_fbanks` with norm=None, mel_scale="htk")."""
    high = sample_rate / 2 if high is None else high

    def to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    bins = np.linspace(0, sample_rate / 2, fft_size // 2 + 1)
    edges = to_hz(np.linspace(to_mel(low), to_mel(high), mels + 2))
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - left) / np.maximum(centre - left, 1e-10)
    falling = (right - bins[None, :]) / np.maximum(right - centre, 1e-10)
    return torch.from_numpy(np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32))


class LogMel:
    """Features already made, (frames, mels): a synthesiser's output (the ASR-TTS cycle). An audio codec takes
    them as they are, without a waveform."""

    __slots__ = ("features",)

    def __init__(self, features):
        features = torch.as_tensor(features, dtype=torch.float32).detach().cpu()
        if features.ndim != 2 or features.shape[0] < 1:
            raise UnforcedError(f"log-mel features are (frames, mels) with at least one frame, got shape "
                                f"{tuple(features.shape)}")
        self.features = features

    def __repr__(self) -> str:
        return f"LogMel({self.features.shape[0]} frames x {self.features.shape[1]} mels)"


class AudioCodec:
    """Log-mel spectrogram frames: a Hann-windowed `torch.stft`, power, an HTK mel filterbank, log(x + 1e-6).

    Defaults follow speech recognition practice: 16 kHz, 25 ms windows every 10 ms, 80 mel bins. A source is a
    path to a WAV file (at `sample_rate`), a 1-D array of samples at that rate, or `LogMel` features made
    elsewhere (taken as they are). Features are normalised per utterance to zero mean and unit variance on each
    bin (over its real frames).
    """

    kind = "audio"

    def __init__(self, sample_rate: int = 16000, mels: int = 80, window_ms: float = 25.0, hop_ms: float = 10.0):
        if sample_rate < 1000 or mels < 1 or window_ms <= 0 or hop_ms <= 0:
            raise UnforcedError("audio codec: sample_rate >= 1000, mels >= 1, positive window_ms and hop_ms")
        self.sample_rate, self.mels = sample_rate, mels
        self.window = round(sample_rate * window_ms / 1000)
        self.hop = round(sample_rate * hop_ms / 1000)
        self.fft_size = 2 ** math.ceil(math.log2(self.window))
        self.filters = mel_filterbank(mels, self.fft_size, sample_rate)  # (freq, mels)

    def samples(self, source: Any) -> np.ndarray:
        if isinstance(source, LogMel):
            raise UnforcedError("log-mel features have no waveform; the codec reads them as they are")
        if isinstance(source, str | Path):
            samples, rate = read_wav(source)
            if rate != self.sample_rate:
                raise UnforcedError(f"{source}: sampled at {rate} Hz, the task reads {self.sample_rate} Hz "
                                    f"(resample it, or give the task sample_rate={rate})")
            return samples
        samples = np.asarray(source, dtype=np.float32)
        if samples.ndim != 1:
            raise UnforcedError(f"an audio source is a WAV path or 1-D samples, got shape {samples.shape}")
        return samples

    def frames(self, count: int) -> int:
        """Frames of `count` samples (torch.stft, center=True)."""
        return count // self.hop + 1

    def length(self, source: Any) -> int:
        if isinstance(source, LogMel):
            return source.features.shape[0]
        if isinstance(source, str | Path):  # from the header alone: a task measures every file once at start
            try:
                with wave.open(str(source), "rb") as handle:
                    rate, count = handle.getframerate(), handle.getnframes()
            except FileNotFoundError:
                raise UnforcedError(f"{source}: no such audio file") from None
            except (wave.Error, EOFError, OSError) as error:
                raise UnforcedError(f"{source}: not a readable PCM WAV file ({error})") from None
            if rate != self.sample_rate:
                raise UnforcedError(f"{source}: sampled at {rate} Hz, the task reads {self.sample_rate} Hz "
                                    f"(resample it, or give the task sample_rate={rate})")
            return self.frames(count)
        return self.frames(len(self.samples(source)))

    def log_mel(self, samples: np.ndarray) -> Tensor:
        """(frames, mels) normalised log-mel features of one utterance."""
        signal = torch.from_numpy(np.ascontiguousarray(samples))
        if signal.numel() < 2:
            signal = torch.nn.functional.pad(signal, (0, 2 - signal.numel()))
        spectrum = torch.stft(signal, self.fft_size, hop_length=self.hop, win_length=self.window,
                              window=torch.hann_window(self.window), center=True, return_complex=True)
        power = spectrum.abs().square().T  # (frames, freq)
        features = (power @ self.filters + 1e-6).log()  # (frames, mels)
        return (features - features.mean(0)) / (features.std(0, unbiased=False) + 1e-5)

    def encode(self, sources: list[Any], max_length: int | None = None) -> tuple[Tensor, Tensor]:
        utterances = [self._features(s) for s in sources]
        _check_lengths(sources, [len(u) for u in utterances], max_length, "frames")
        width = max(1, max((len(u) for u in utterances), default=1))
        features = torch.zeros(len(utterances), width, self.mels)  # (batch, frames, mels)
        mask = torch.zeros(len(utterances), width, dtype=torch.bool)
        for i, u in enumerate(utterances):
            features[i, : len(u)] = u
            mask[i, : len(u)] = True
        return features, mask

    def _features(self, source: Any) -> Tensor:
        if isinstance(source, LogMel):
            if source.features.shape[1] != self.mels:
                raise UnforcedError(f"log-mel features of {source.features.shape[1]} mels, the task reads "
                                    f"{self.mels}")
            return source.features
        return self.log_mel(self.samples(source))

    def model_options(self) -> dict:
        return {"source": "audio", "source_features": self.mels}


# --- images -----------------------------------------------------------------------------------------------------

class ImageCodec:
    """Pixels: RGB, resized to `size` x `size` (bilinear, Pillow), scaled to [-1, 1]; optional flips.

    A source is a path to a PNG or JPEG file, a PIL image, or an (H, W, 3) uint8 array. The mask has one column:
    an image has no padding; the image encoder's states (a grid) come with their own mask.
    """

    kind = "image"

    def __init__(self, size: int = 64, augment: bool = False, seed: int = 0):
        if size < 8:
            raise UnforcedError(f"image codec: size must be at least 8, got {size}")
        self.size, self.augment = size, augment
        self.generator = np.random.default_rng(seed)

    def image(self, source: Any):
        from PIL import Image, UnidentifiedImageError

        if isinstance(source, str | Path):
            try:
                with Image.open(source) as opened:
                    return opened.convert("RGB")
            except FileNotFoundError:
                raise UnforcedError(f"{source}: no such image file") from None
            except (UnidentifiedImageError, OSError) as error:
                raise UnforcedError(f"{source}: not a readable image ({error})") from None
        if isinstance(source, Image.Image):
            return source.convert("RGB")
        array = np.asarray(source)
        if array.ndim != 3 or array.shape[2] != 3:
            raise UnforcedError(f"an image source is a path, a PIL image or an (H, W, 3) array, got {array.shape}")
        return Image.fromarray(array.astype(np.uint8), "RGB")

    def length(self, source: Any) -> int:
        return 1

    def pixels(self, source: Any) -> Tensor:
        from PIL import Image

        resized = self.image(source).resize((self.size, self.size), Image.Resampling.BILINEAR)
        array = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
        if self.augment and self.generator.random() < 0.5:
            array = array.flip(-1)
        return array  # (channels, size, size)

    def encode(self, sources: list[Any], max_length: int | None = None) -> tuple[Tensor, Tensor]:
        if not sources:
            return torch.zeros(0, 3, self.size, self.size), torch.zeros(0, 1, dtype=torch.bool)
        features = torch.stack([self.pixels(s) for s in sources])  # (batch, 3, size, size)
        return features, torch.ones(len(sources), 1, dtype=torch.bool)

    def model_options(self) -> dict:
        return {"source": "image", "source_features": 3}


__all__ = ["AudioCodec", "ImageCodec", "LogMel", "SourceCodec", "TextCodec", "mel_filterbank", "read_wav"]

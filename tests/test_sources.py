"""Sources of every modality: codecs (text, log-mel audio, images), front ends, and every encoder kind with every
decoder kind: trains a few steps, and `forced` equals stepping with gold feeds."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from unforced.errors import UnforcedError
from unforced.models import ModelConfig, build_model
from unforced.rollout import Gold, rollout
from unforced.strategies.teacher_forcing import TeacherForcing
from unforced.tasks.base import Example, Task
from unforced.tasks.codecs import AudioCodec, ImageCodec, TextCodec, mel_filterbank, read_wav
from unforced.tasks.tokenizers import VocabTokenizer

CAPTIONS = ["a red circle", "two blue squares", "a green star on the left", "three small dots"]


def write_wav(path, samples: np.ndarray, rate: int = 16000, channels: int = 1) -> None:
    data = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    if channels > 1:
        data = np.repeat(data[:, None], channels, 1)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(data.tobytes())


def tone(frequency: float, seconds: float = 0.25, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def test_wav_round_trip_and_stereo_average(tmp_path):
    samples = tone(440.0)
    write_wav(tmp_path / "mono.wav", samples)
    write_wav(tmp_path / "stereo.wav", samples, channels=2)
    mono, rate = read_wav(tmp_path / "mono.wav")
    stereo, _ = read_wav(tmp_path / "stereo.wav")
    assert rate == 16000 and mono.shape == samples.shape
    assert np.abs(mono - samples).max() < 1e-4 and np.abs(stereo - mono).max() < 1e-6


def test_bad_audio_is_refused_by_name(tmp_path):
    (tmp_path / "noise.wav").write_bytes(b"not a wav at all")
    with pytest.raises(UnforcedError, match="noise.wav: not a readable PCM WAV"):
        AudioCodec().encode([str(tmp_path / "noise.wav")])
    with pytest.raises(UnforcedError, match="no such audio file"):
        AudioCodec().length(str(tmp_path / "missing.wav"))
    write_wav(tmp_path / "fast.wav", tone(440.0, rate=22050), rate=22050)
    with pytest.raises(UnforcedError, match="22050 Hz"):
        AudioCodec().encode([str(tmp_path / "fast.wav")])


def test_mel_filters_are_triangles_that_tile_the_band():
    filters = mel_filterbank(40, 512, 16000)  # (freq, mels)
    assert filters.shape == (257, 40)
    # Sampled at the FFT bins, a triangle peaks at 1 only where its centre falls on a bin; it never exceeds 1.
    assert float(filters.max()) <= 1.0 and float(filters.max(0).values.min()) > 0.5
    peaks = filters.argmax(0)
    assert bool((peaks[1:] >= peaks[:-1]).all())  # centres rise with the filter index
    inside = filters[int(peaks[0]) + 1:int(peaks[-1])].sum(1)  # neighbours sum to 1 between the outer peaks
    assert torch.allclose(inside, torch.ones_like(inside), atol=1e-4)


def test_a_tone_lights_the_mel_bin_of_its_frequency():
    codec = AudioCodec(mels=40)
    assert codec.log_mel(tone(300.0)).shape == (tone(300.0).shape[0] // codec.hop + 1, 40)

    def mel_energy(samples):  # before the log and the per-bin normalisation (which flattens a steady tone)
        spectrum = torch.stft(torch.from_numpy(samples), codec.fft_size, hop_length=codec.hop,
                              win_length=codec.window, window=torch.hann_window(codec.window), center=True,
                              return_complex=True)
        return (spectrum.abs().square().T @ codec.filters).mean(0)

    low, high = mel_energy(tone(300.0)), mel_energy(tone(3000.0))
    assert int(low.argmax()) < int(high.argmax())
    centres = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 42)[1:-1] / 2595) - 1)
    assert abs(centres[int(high.argmax())] - 3000) < 300


def test_audio_batch_pads_and_masks(tmp_path):
    paths = []
    for index, seconds in enumerate((0.1, 0.3)):
        paths.append(str(tmp_path / f"{index}.wav"))
        write_wav(paths[-1], tone(500.0, seconds))
    codec = AudioCodec()
    features, mask = codec.encode(paths)
    assert features.shape == (2, codec.length(paths[1]), 80)
    assert mask.sum(1).tolist() == [codec.length(paths[0]), codec.length(paths[1])]
    assert float(features[0, ~mask[0]].abs().sum()) == 0.0


def test_image_codec_reads_files_and_arrays(tmp_path):
    from PIL import Image

    array = np.zeros((20, 30, 3), dtype=np.uint8)
    array[:, :15] = (255, 0, 0)
    Image.fromarray(array).save(tmp_path / "half.png")
    codec = ImageCodec(size=16)
    pixels, mask = codec.encode([str(tmp_path / "half.png"), array])
    assert pixels.shape == (2, 3, 16, 16) and mask.shape == (2, 1) and bool(mask.all())
    assert torch.allclose(pixels[0], pixels[1])
    assert float(pixels[0, 0, :, 0].mean()) > 0.9 and float(pixels[0, 0, :, -1].mean()) < -0.9
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UnforcedError, match="broken.png: not a readable image"):
        codec.encode([str(tmp_path / "broken.png")])


def test_examples_carry_every_reference_and_unpack_as_pairs():
    example = Example("src", ["first", "second"], difficulty=3)
    source, target = example
    assert (source, target) == ("src", "first") and example.references == ("first", "second")
    assert Example("a", "b") == ("a", "b") and hash(Example("a", "b")) == hash(("a", "b"))
    with pytest.raises(UnforcedError, match="at least one reference"):
        Example("a", [])
    import pickle

    again = pickle.loads(pickle.dumps(example))
    assert again.references == example.references and again.difficulty == 3


def sources_for(kind: str, count: int, generator: torch.Generator):
    if kind == "text":
        return [" ".join(["w"] * (1 + i % 3)) for i in range(count)]
    if kind == "audio":
        return [torch.randn(1600 + 400 * i, generator=generator).numpy() * 0.1 for i in range(count)]
    return [(torch.rand(24, 24, 3, generator=generator) * 255).numpy().astype(np.uint8) for _ in range(count)]


def codec_for(kind: str):
    if kind == "text":
        return TextCodec(VocabTokenizer.train(["w"], "word"))
    return AudioCodec(mels=16) if kind == "audio" else ImageCodec(size=16)


@pytest.mark.parametrize("source", ["text", "audio", "image"])
@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer"])
def test_every_encoder_kind_trains_with_every_decoder_kind(source, kind):
    generator = torch.Generator().manual_seed(0)
    target = VocabTokenizer.train(CAPTIONS, "word")
    codec = codec_for(source)
    examples = [Example(s, [CAPTIONS[i % 4], CAPTIONS[(i + 1) % 4]])
                for i, s in enumerate(sources_for(source, 4, generator))]
    task = Task("sources", examples, examples, examples, None, target, metric="bleu", source_codec=codec)
    longest_source, longest_target = task.longest()
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, target_vocab=target.vocab_size, embedding=16, hidden=16, heads=2,
                                    dropout=0.0, max_source_len=longest_source, max_target_len=longest_target,
                                    **codec.model_options()))
    batch = task.collate(task.train)
    assert batch.references[0] == [CAPTIONS[0], CAPTIONS[1]]
    model.eval()
    memory = model.encode(batch.source, batch.source_mask)
    forced = model.forced(memory, batch.inputs).logits
    stepped = rollout(model, memory, Gold(), gold=batch.gold, stop_at_eos=False).logits
    real = batch.gold_mask  # past a row's <eos> the two feed different padding
    assert torch.allclose(forced[real], stepped[real], atol=1e-5), (source, kind)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(8):
        output = TeacherForcing().loss(model, batch, step)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(float(output.loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses
    front = model.source_embedding
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in front.parameters()), source


def test_non_text_sources_need_their_sizes_and_an_encoder():
    with pytest.raises(UnforcedError, match="source_features"):
        ModelConfig(kind="gru", source="audio", target_vocab=5)
    with pytest.raises(UnforcedError, match="decoder_only"):
        ModelConfig(kind="decoder_only", source="image", source_features=3, target_vocab=5)
    with pytest.raises(UnforcedError, match="model.source must be one of"):
        ModelConfig(kind="gru", source="video", source_vocab=5, target_vocab=5)

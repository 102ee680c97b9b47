"""The spoken corpus (espeak-ng, unpacked by the project's own set-up), the `speech` task, and a tiny attention ASR
trained, evaluated and reported on it and on a user's manifest of WAVs."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from unforced.diagnostics import evaluate
from unforced.experiment import run_experiment
from unforced.models import ModelConfig, build_model
from unforced.report import build_report
from unforced.run_config import RunConfig
from unforced.strategies.teacher_forcing import TeacherForcing
from unforced.tasks import speech
from unforced.tasks.codecs import read_wav


@pytest.fixture(scope="module")
def espeak() -> speech.Espeak:
    return speech.obtain_espeak()  # the set-up itself: unpacks espeak-ng into the cache when it is missing


VARIANTS = ["f1", "f2", "f3", "klatt", "m1", "m2", "m3", "m4", "m5", "m6"]


def test_the_plan_is_seeded_and_holds_valid_and_test_speakers_out():
    first, again, other = (speech.plan(400, seed, VARIANTS) for seed in (0, 0, 1))
    assert first == again and first != other
    by_split = {split: {u.speaker for u in first if u.split == split} for split in ("train", "valid", "test")}
    assert all(by_split.values())
    assert not by_split["train"] & (by_split["valid"] | by_split["test"])
    assert not by_split["valid"] & by_split["test"]
    shares = {split: sum(u.split == split for u in first) / 400 for split in by_split}
    assert shares == {"train": 0.8, "valid": 0.1, "test": 0.1}, shares
    assert [u.split for u in speech.plan(3, 0, VARIANTS)].count("train") == 1
    assert {u.snr for u in first} == set(speech.SNRS)
    assert all(130 <= u.rate <= 200 and 25 <= u.pitch <= 75 for u in first)
    words = {w for u in first for w in u.text.split()}
    assert all(w.isalpha() and w.islower() for w in words) and 60 < len(words) < 200


def test_resampling_keeps_a_tone_and_its_level():
    rate, tone = 22050, 440.0
    samples = np.sin(2 * np.pi * tone * np.arange(rate) / rate).astype(np.float32)  # one second
    out = speech.resample(samples, rate)
    assert len(out) == 16000
    spectrum = np.abs(np.fft.rfft(out))
    assert int(np.argmax(spectrum)) == 440  # 1 Hz bins over one second
    assert abs(float(np.sqrt(np.mean(out ** 2))) - np.sqrt(0.5)) < 1e-3


def test_noise_is_added_at_the_utterance_snr(espeak):
    clean = speech.Utterance(7, "the red cup is on the table", "train", "en-us+m3", 160, 50, None)
    noisy = speech.Utterance(7, clean.text, "train", clean.speaker, 160, 50, 10.0)
    a, b = speech.speak(espeak, clean, seed=0), speech.speak(espeak, noisy, seed=0)
    assert len(a) == len(b) and 0.5 < len(a) / speech.SAMPLE_RATE < 4.0
    scale = float(np.dot(a, b) / np.dot(a, a))  # a peak normalisation may have scaled the noisy one
    noise = b / scale - a
    snr = 10 * np.log10(np.mean(a.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.5, snr


def test_the_corpus_is_deterministic_whatever_the_workers_and_resumes(tmp_path, espeak):
    one = speech.synthesise(9, seed=5, cache_dir=tmp_path / "one", workers=1, espeak=espeak)
    two = speech.synthesise(9, seed=5, cache_dir=tmp_path / "two", workers=2, espeak=espeak)
    files = sorted(p.name for p in (one.manifest.parent / "wav").iterdir())
    assert len(files) == 9 and one.made == 9
    for name in files:
        assert (one.manifest.parent / "wav" / name).read_bytes() == (two.manifest.parent / "wav" / name).read_bytes()
    assert one.manifest.read_text() == two.manifest.read_text()
    samples, rate = read_wav(one.manifest.parent / "wav" / files[0])
    assert rate == 16000 and samples.std() > 0.01
    lost = one.manifest.parent / "wav" / files[4]
    kept = (one.manifest.parent / "wav" / files[0]).stat().st_mtime_ns
    expected = lost.read_bytes()
    lost.unlink()  # an interrupted build: one utterance missing
    seen = []
    again = speech.synthesise(9, seed=5, cache_dir=tmp_path / "one", espeak=espeak,
                              progress=lambda done, total: seen.append((done, total)))
    assert again.made == 1 and lost.read_bytes() == expected
    assert (one.manifest.parent / "wav" / files[0]).stat().st_mtime_ns == kept
    assert seen[0] == (8, 9) and seen[-1] == (9, 9)
    records = [json.loads(line) for line in one.manifest.read_text().splitlines()]
    assert [r["audio"] for r in records] == [f"wav/{name}" for name in files]


def test_the_speech_task_has_character_targets_wer_and_held_out_speakers(tmp_path, espeak):
    task = speech.speech_task(size=30, corpus_seed=2, cache_dir=str(tmp_path), mels=40)
    assert task.name == "speech" and task.metric == "wer" and task.settings["tokenizer"] == "char"
    assert task.train and task.valid and task.test
    manifest = [json.loads(line) for line in (speech.corpus_dir(30, 2, tmp_path) / "manifest.jsonl").open()]
    speaker = {str((tmp_path / speech.corpus_dir(30, 2, tmp_path).name / r["audio"]).resolve()): r["speaker"]
               for r in manifest}
    train_speakers = {speaker[e.source] for e in task.train}
    assert not train_speakers & {speaker[e.source] for e in task.valid + task.test}
    batch = task.collate(task.train[:3])
    assert batch.source.shape[0] == 3 and batch.source.shape[2] == 40
    word_task = speech.speech_task(size=30, corpus_seed=2, cache_dir=str(tmp_path), tokenizer="word", mels=40)
    assert len(word_task.target_tokenizer.encode(word_task.train[0].target)) == len(word_task.train[0].target.split())


@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer"])
def test_a_tiny_attention_asr_trains_and_evaluates_on_the_corpus(tmp_path, espeak, kind):
    stats = speech.synthesise(16, seed=1, cache_dir=tmp_path, espeak=espeak)
    from unforced.tasks.manifests import manifest_task

    task = manifest_task(stats.manifest, tokenizer="char", mels=24)
    longest_source, longest_target = task.longest()
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, target_vocab=task.target_tokenizer.vocab_size, embedding=16,
                                    hidden=24, heads=2, dropout=0.0, max_source_len=longest_source,
                                    max_target_len=longest_target, **task.source_codec.model_options()))
    batch = task.collate(task.train[:8])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(6):
        output = TeacherForcing().loss(model, batch, step)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(float(output.loss.detach()))
    assert losses[-1] < losses[0] - 0.2, losses
    figures = evaluate(model.eval(), task, split="test", batch_size=8)
    assert figures["metric"]["name"] == "wer" and figures["fr_nll"] > 0 and figures["tf_nll"] > 0
    assert len(figures["per_position"]["fr_error"]) > 5  # characters: a long per-position curve


def test_attention_maps_of_an_audio_task(tmp_path, espeak):
    from unforced.diagnostics import attention_maps
    from unforced.tasks.manifests import manifest_task

    task = manifest_task(speech.synthesise(6, seed=1, cache_dir=tmp_path, espeak=espeak).manifest, mels=8)
    longest_source, longest_target = task.longest()
    model = build_model(ModelConfig(kind="gru", target_vocab=task.target_tokenizer.vocab_size, embedding=8,
                                    hidden=8, dropout=0.0, max_source_len=longest_source,
                                    max_target_len=longest_target, **task.source_codec.model_options()))
    maps = attention_maps(model, task, "test", 0)
    # One label per encoder state (the front end subsamples the frames), one weight per label in every row.
    assert maps is not None and len(maps["source_tokens"]) == len(maps["teacher_forced"][0])
    assert maps["source_tokens"][0] == "audio[0]" and abs(sum(maps["teacher_forced"][0]) - 1.0) < 1e-4


def _user_manifest(folder: Path, espeak: speech.Espeak) -> Path:
    """A user's own audio: a few WAVs anywhere and a JSONL manifest with paths relative to it."""
    (folder / "clips").mkdir(parents=True)
    texts = ["open the door", "close the window", "find the red key", "the dog is at home",
             "bring the blue cup", "where is the cat", "the car is in the park", "wash the bed"]
    lines = []
    for index, text in enumerate(texts):
        utterance = speech.Utterance(index, text, "train", "en-us+m1" if index % 2 else "en-gb+f2", 170, 50, None)
        speech.write_wav(folder / "clips" / f"{index}.wav", speech.speak(espeak, utterance, seed=0))
        split = "test" if index >= 6 else "valid" if index == 5 else "train"
        lines.append(json.dumps({"audio": f"clips/{index}.wav", "text": text, "split": split}))
    manifest = folder / "mine.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_a_user_manifest_runs_through_the_main_job_and_the_report(tmp_path, espeak):
    manifest = _user_manifest(tmp_path / "data", espeak)
    with wave.open(str(tmp_path / "data" / "clips" / "0.wav")) as handle:
        assert handle.getframerate() == 16000 and handle.getsampwidth() == 2
    config = RunConfig(task=str(manifest), task_options={"tokenizer": "char", "mels": 24},
                       strategies=["teacher_forcing", "teacher_forcing:6>reinforce:2"], preset="quick",
                       model={"kind": "gru", "embedding": 16, "hidden": 24, "dropout": 0.0},
                       train={"steps": 6, "batch_size": 4, "eval_every": 3, "eval_limit": 4, "checkpoint_every": 3,
                              "log_every": 1},
                       test_limit=4, diagnostics_limit=0)  # see the attention-map test below
    out = tmp_path / "run"
    results = run_experiment(config, out)
    for entry in config.strategies:
        figures = results["strategies"][entry]
        assert figures["metric"]["name"] == "wer" and 0 <= figures["metric"]["fr"]
        assert figures["gap_nll"] == pytest.approx(figures["fr_nll"] - figures["tf_nll"])
    assert "WER" in results["signature"]["metric"].upper()
    report = build_report(out)
    page = report.read_text()
    assert "wer" in page.lower()
    # CER beside WER, and the teacher-forced vs free-running character error (overall and per position)
    assert "<th>FR cer</th>" in page and "Character error over all positions" in page
    figures = results["strategies"]["teacher_forcing"]
    assert f"{1 - figures['tf_token_acc']:.1%} teacher-forced, {1 - figures['fr_token_acc']:.1%} free-running" in page
    assert 0 <= figures["metric"]["companions"]["cer"]["fr"]

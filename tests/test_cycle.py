"""The synthesiser, its training and frame gap, LogMel sources, the labelled share, the cycle-consistency term and
the resumable ASR-TTS cycle (`unforced cycle`)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from cli_helper import call

from unforced.cycle import CycleConfig, run_cycle, split_for_cycle
from unforced.errors import UnforcedError
from unforced.models.tts import Synthesiser, SynthesiserConfig, frame_error, synthesis_loss
from unforced.rollout import Gold, Greedy, Mix, Sample
from unforced.strategies.cycle_consistency import CycleConsistency, CycleConsistencyConfig
from unforced.strategies.synthesis import SynthesisTraining, frame_gap
from unforced.tasks import get_task, speech, task_options, with_labelled_share
from unforced.tasks.codecs import AudioCodec, LogMel

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_synthesiser(seed: int = 0, **options) -> Synthesiser:
    torch.manual_seed(seed)
    return Synthesiser(SynthesiserConfig(**{"vocab": 12, "mels": 6, "embedding": 8, "hidden": 16, "attention": 8,
                                            "prenet": 8, "reduction": 2, "max_steps": 12, **options}))


def text_and_frames(rows: int = 3, chars: int = 5, frames: int = 9, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(4, 12, (rows, chars), generator=generator)
    text_mask = torch.ones(rows, chars, dtype=torch.bool)
    text_mask[0, 3:] = False
    text = text.masked_fill(~text_mask, 0)
    gold = torch.randn(rows, frames, 6, generator=generator)
    frame_mask = torch.ones(rows, frames, dtype=torch.bool)
    frame_mask[1, 6:] = False
    return text, text_mask, gold, frame_mask


@pytest.fixture(scope="module")
def speech_corpus(tmp_path_factory):
    return str(tmp_path_factory.mktemp("corpus"))


def test_bad_synthesiser_settings_are_refused_by_name():
    for options, name in (({"hidden": 15}, "hidden"), ({"reduction": 0}, "reduction"),
                          ({"location_kernel": 4}, "location_kernel"), ({"prenet_dropout": 1.0}, "prenet_dropout"),
                          ({"mels": True}, "mels")):
        with pytest.raises(UnforcedError, match=name):
            SynthesiserConfig(vocab=12, **options)


def test_the_frame_feeds_are_rollouts_feeds_for_frames():
    model = tiny_synthesiser().eval()
    text, text_mask, gold, frame_mask = text_and_frames()
    forced = model.decode(text, text_mask, Gold(), gold_frames=gold)
    assert forced.frames.shape == (3, 10, 6) and forced.stop_logits.shape == (3, 5)
    assert forced.alignments.shape == (3, 5, 5)
    assert torch.allclose(forced.alignments.sum(-1), torch.ones(3, 5))  # weights over the characters
    assert float(forced.alignments[0, :, 3:].detach().abs().max()) == 0.0  # no weight on padding
    free = model.decode(text, text_mask, Greedy(), steps=5)
    assert not torch.allclose(free.frames, forced.frames)  # its own frames are not the gold ones
    # Gold with probability 1 is teacher forcing; with probability 0 free running.
    always = model.decode(text, text_mask, Mix(1.0), gold_frames=gold, generator=torch.Generator().manual_seed(1))
    never = model.decode(text, text_mask, Mix(0.0), gold_frames=gold, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(always.frames, forced.frames, atol=1e-6) and torch.allclose(never.frames, free.frames, atol=1e-6)
    # The first step is fed the zero frame either way; the second already differs.
    assert torch.allclose(free.frames[:, :2], forced.frames[:, :2])
    with pytest.raises(UnforcedError, match="Gold"):
        model.decode(text, text_mask, Sample())
    with pytest.raises(UnforcedError, match="gold frames"):
        model.decode(text, text_mask, Gold())


def test_synthesis_stops_per_row_and_its_frames_are_normalised():
    model = tiny_synthesiser()
    with torch.no_grad():
        model.stop_out.bias.fill_(-50.0)  # never stops: runs to max_steps
    text, text_mask, _, _ = text_and_frames()
    made = model.synthesise(text, text_mask)
    assert [len(f) for f in made] == [24, 24, 24] and model.training  # its mode comes back
    assert torch.allclose(made[0].mean(0), torch.zeros(6), atol=1e-4)
    with torch.no_grad():
        model.stop_out.bias.fill_(50.0)  # stops after its first step
    assert [len(f) for f in model.synthesise(text, text_mask)] == [2, 2, 2]


def test_the_loss_counts_real_frames_only_and_training_lowers_it():
    model = tiny_synthesiser()
    text, text_mask, gold, frame_mask = text_and_frames()
    out = model.decode(text, text_mask, Gold(), gold_frames=gold)
    loss, parts = synthesis_loss(out, gold, frame_mask, text_mask, 2, guided=0.0)
    noisy = gold.clone()
    noisy[1, 6:] += 100.0  # beyond row 1's real frames: no change
    assert synthesis_loss(out, noisy, frame_mask, text_mask, 2, guided=0.0)[1]["frame_l1"] == parts["frame_l1"]
    assert float(loss.detach()) == pytest.approx(parts["frame_l1"] + parts["stop_bce"], rel=1e-5)
    error = frame_error(out, gold, frame_mask)
    assert error.shape == (3,)
    assert float(error[1]) == pytest.approx(float((out.frames[1, :6] - gold[1, :6]).abs().mean()), rel=1e-5)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    strategy = SynthesisTraining()
    batch = dataclasses.make_dataclass("B", ["gold", "gold_mask", "source", "source_mask"])(text, text_mask, gold,
                                                                                            frame_mask)
    first = float(strategy.loss(model, batch, 0).loss)
    for step in range(30):
        output = strategy.loss(model, batch, step)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    assert float(strategy.loss(model, batch, 30).loss) < 0.8 * first


def test_scheduled_sampling_over_frames_follows_its_schedule_and_resumes():
    model = tiny_synthesiser()
    text, text_mask, gold, frame_mask = text_and_frames()
    batch = dataclasses.make_dataclass("B", ["gold", "gold_mask", "source", "source_mask"])(text, text_mask, gold,
                                                                                            frame_mask)
    strategy = SynthesisTraining(schedule=lambda step: 1.0 - step / 10, seed=3)
    assert strategy.loss(model, batch, 4).logs["gold_ratio"] == pytest.approx(0.6)
    state = strategy.state_dict()
    again = SynthesisTraining(schedule=lambda step: 1.0 - step / 10, seed=99)
    again.load_state_dict(state)
    model.eval()  # no dropout: the same coins give the same loss
    assert float(strategy.loss(model, batch, 5).loss) == float(again.loss(model, batch, 5).loss)
    with pytest.raises(UnforcedError, match="guided"):
        SynthesisTraining(guided=-1.0)


def test_log_mel_sources_pass_the_audio_codec_as_they_are():
    codec = AudioCodec(mels=6)
    features = torch.randn(7, 6)
    encoded, mask = codec.encode([LogMel(features), LogMel(features[:3])])
    assert torch.equal(encoded[0], features) and mask.sum(1).tolist() == [7, 3]
    assert codec.length(LogMel(features)) == 7
    with pytest.raises(UnforcedError, match="6 mels"):
        AudioCodec(mels=8).encode([LogMel(features)])
    with pytest.raises(UnforcedError, match="no waveform"):
        codec.samples(LogMel(features))
    with pytest.raises(UnforcedError, match="frames, mels"):
        LogMel(torch.zeros(3))


def test_the_labelled_share_moves_sources_to_unlabelled_and_nothing_else():
    whole = get_task("reverse", size=100, seed=4)
    task = get_task("reverse", size=100, seed=4, labelled=0.2)
    assert len(task.train) == round(0.2 * len(whole.train)) and task.valid == whole.valid
    assert sorted(task.unlabelled + [e.source for e in task.train]) == sorted(e.source for e in whole.train)
    assert task.settings["labelled_share"] == 0.2 and whole.unlabelled == []
    assert get_task("reverse", size=100, seed=4, labelled=0.2).train == task.train  # seeded
    assert task_options("reverse")["labelled"] == 1.0
    for bad in (0, 1.5, True, "half"):
        with pytest.raises(UnforcedError, match="labelled"):
            get_task("reverse", size=100, labelled=bad)
    assert with_labelled_share(whole, 1.0) is whole and whole.unlabelled == []


def test_unlabelled_sources_count_in_the_longest_source():
    task = get_task("reverse", size=60, seed=1)
    longest = task.longest()[0]
    task.unlabelled = ["a " * (longest + 5)]
    assert task.longest()[0] > longest


def test_the_cycle_split_is_seeded_and_no_utterance_gives_both_sides(speech_corpus):
    task = speech.speech_task(size=40, mels=6, cache_dir=speech_corpus)
    paired, speech_only, texts = split_for_cycle(task, 0.25, seed=3)
    assert len(paired) == round(0.25 * len(task.train))
    assert abs(len(speech_only) - len(texts)) <= 1 and len(paired) + len(speech_only) + len(texts) == len(task.train)
    rest = [e for e in task.train if e not in paired]
    assert {e.source for e in rest if e.source in speech_only}.isdisjoint(
        {e.source for e in rest if e.target in texts and e.source not in speech_only})
    assert split_for_cycle(task, 0.25, seed=3) == (paired, speech_only, texts)
    assert split_for_cycle(task, 0.25, seed=4)[0] != paired


def test_the_cycle_term_rewards_transcripts_by_reconstruction_and_resumes(speech_corpus):
    from unforced.cycle import build_recogniser

    task = speech.speech_task(size=40, mels=6, cache_dir=speech_corpus)
    config = CycleConfig(paired=0.5, asr_hidden=16, asr_embedding=8)
    task = dataclasses.replace(task, unlabelled=[e.source for e in task.train[:5]])
    asr = build_recogniser(task, config)
    synthesiser = tiny_synthesiser(vocab=task.target_tokenizer.vocab_size)
    strategy = CycleConsistency(synthesiser, CycleConsistencyConfig(weight=0.5, samples=2, unpaired_batch=3),
                                seed=1).bind(task)
    assert all(not p.requires_grad for p in synthesiser.parameters())  # frozen here
    batch = task.collate(task.train[:4])
    output = strategy.loss(asr, batch, 0)
    assert output.loss.requires_grad and 0 < output.logs["reconstruction_error"]
    output.loss.backward()
    assert all(p.grad is None for p in synthesiser.parameters())
    state = strategy.state_dict()
    again = CycleConsistency(tiny_synthesiser(vocab=task.target_tokenizer.vocab_size), seed=1).bind(task)
    again.config = strategy.config
    again.load_state_dict(state)
    assert [str(s) for s in again.next_sources()] == [str(s) for s in strategy.next_sources()]
    # Five sources, three a step: the walk crosses into a reshuffled second pass and covers each source once a pass.
    fresh = CycleConsistency(tiny_synthesiser(vocab=task.target_tokenizer.vocab_size),
                             CycleConsistencyConfig(unpaired_batch=5), seed=1).bind(task)
    assert sorted(map(str, fresh.next_sources())) == sorted(map(str, task.unlabelled))
    with pytest.raises(UnforcedError, match="unlabelled"):
        CycleConsistency(synthesiser).bind(dataclasses.replace(task, unlabelled=[]))
    for bad, name in (({"samples": 1}, "samples"), ({"weight": 2.0}, "weight"), ({"unpaired_batch": 0},
                                                                                 "unpaired_batch")):
        with pytest.raises(UnforcedError, match=name):
            CycleConsistencyConfig(**bad)


TINY = {"paired": 0.3, "rounds": 1, "asr_steps": 6, "tts_steps": 6, "round_asr_steps": 4, "round_tts_steps": 4,
        "batch_size": 4, "asr_hidden": 16, "asr_embedding": 8, "tts_hidden": 16, "eval_limit": 6, "log_every": 2,
        "samples": 2, "unpaired_batch": 2}


def test_a_killed_cycle_resumes_to_the_figures_of_an_uninterrupted_one(speech_corpus, tmp_path):
    task = speech.speech_task(size=40, mels=6, cache_dir=speech_corpus)
    config = CycleConfig(**TINY)
    whole = run_cycle(task, config, tmp_path / "whole")

    class Killed(Exception):
        pass

    def kill(event):
        if event.get("phase") == "round-1/asr" and event.get("step") == 2:
            raise Killed

    with pytest.raises(Killed):
        run_cycle(task, config, tmp_path / "killed", progress=kill)
    assert (tmp_path / "killed" / "round-1" / "synthetic-0000.pt").exists()
    assert not (tmp_path / "killed" / "results.json").exists()
    resumed = run_cycle(task, config, tmp_path / "killed")
    assert resumed["rounds"] == whole["rounds"]
    assert json.loads((tmp_path / "killed" / "results.json").read_text())["rounds"] == whole["rounds"]
    first, last = whole["rounds"]
    assert set(last) == {"round", "asr", "tts", "reconstruction_error"} and last["reconstruction_error"] > 0
    assert set(last["tts"]) >= {"tf", "fr", "gap"} and last["tts"]["gap"] == pytest.approx(
        last["tts"]["fr"] - last["tts"]["tf"])
    assert whole["split"]["synthetic_per_round"] == whole["split"]["paired"]


def test_frame_gap_is_teacher_forced_against_free_running_on_the_split(speech_corpus):
    task = speech.speech_task(size=40, mels=6, cache_dir=speech_corpus)
    model = tiny_synthesiser(vocab=task.target_tokenizer.vocab_size)
    figures = frame_gap(model, task, "test", limit=3)
    batch = task.collate(task.test[:3])
    model.eval()
    forced = model.decode(batch.gold, batch.gold_mask, Gold(), gold_frames=batch.source)
    expected = float(frame_error(forced, batch.source, batch.source_mask).mean())
    assert figures["utterances"] == 3 and figures["tf"] == pytest.approx(expected, rel=1e-5)
    assert figures["gap"] == pytest.approx(figures["fr"] - figures["tf"])


def test_bad_cycle_settings_are_refused_by_name():
    for options, name in (({"paired": 1.0}, "paired"), ({"rounds": -1}, "rounds"), ({"tts_feed": "x"}, "tts_feed"),
                          ({"asr_steps": 0}, "asr_steps"), ({"samples": 1}, "samples"),
                          ({"synthetic_per_paired": -1.0}, "synthetic_per_paired")):
        with pytest.raises(UnforcedError, match=name):
            CycleConfig(**options)


def test_unforced_cycle_runs_resumes_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "cycle"
    code, stdout, stderr = call(["cycle", "--quick", "--out", str(out), "--json"], capsys)
    assert code == 0, stderr
    figures = json.loads(stdout)
    assert figures["settings"]["paired"] == 0.1 and [r["round"] for r in figures["rounds"]] == [0, 1]
    assert {"wer", "cer"} <= set(figures["rounds"][1]["asr"])
    code, stdout, _ = call(["cycle", "--quick", "--out", str(out), "--json"], capsys)  # finished: read back
    assert code == 0 and json.loads(stdout)["rounds"] == figures["rounds"]
    code, _, stderr = call(["cycle", "--quick", "--out", str(out), "--paired", "0.2"], capsys)
    assert code == 2 and "other settings (paired)" in " ".join(stderr.split())
    code, _, stderr = call(["cycle", "--quick", "--out", str(tmp_path / "bad"), "--paired", "1.5"], capsys)
    assert code == 2 and "cycle.paired" in stderr

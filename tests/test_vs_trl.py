"""benchmarks/vs_trl.py: its shared pieces, the unforced half, and (only where TRL is installed) the whole run.

TRL and datasets are dev dependencies (and the optional `bench` extra for users), so the whole quick run, TRL half
included, runs wherever the tests do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import vs_trl  # noqa: E402


def test_target_fraction_counts_the_target_word():
    assert vs_trl.target_fraction("s0 s1 s0 s2") == 0.5
    assert vs_trl.target_fraction("s1 s2") == 0.0
    assert vs_trl.target_fraction("") == 0.0
    assert vs_trl.target_fraction("s00 s0") == 0.5  # whole words, not substrings


def test_both_reward_wrappers_agree():
    texts = ["s0 s0 s1", "s3", "", "s0"]
    ours = vs_trl.unforced_reward(texts, [[""]] * len(texts))
    theirs = vs_trl.trl_reward(prompts=["p"] * len(texts), completions=texts, completion_ids=None)
    np.testing.assert_allclose(ours, [2 / 3, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(ours, theirs)


def test_prompts_are_seeded_of_one_length_and_free_of_specials():
    prompts = vs_trl.build_prompts(10, 8, seed=3)
    assert prompts == vs_trl.build_prompts(10, 8, seed=3)
    assert prompts != vs_trl.build_prompts(10, 8, seed=4)
    assert all(len(p.split()) == 8 and set(p.split()) <= set(vs_trl.SYMBOLS) for p in prompts)


def test_tokenizer_uses_the_library_special_ids():
    from unforced.vocab import BOS, EOS, PAD

    tokenizer = vs_trl.build_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (PAD, BOS, EOS)
    ids = tokenizer("s0 s5 <bos>", add_special_tokens=False)["input_ids"]
    assert ids == [vs_trl.VOCABULARY.index("s0"), vs_trl.VOCABULARY.index("s5"), BOS]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "s0 s5"


def test_vocabulary_and_model_have_the_stated_shape():
    words = vs_trl.vocabulary(8000)
    assert len(words) == 8000 and words[:4] == vs_trl.SPECIALS and len(set(words)) == 8000
    assert vs_trl.build_tokenizer(8000)("s7995", add_special_tokens=False)["input_ids"] == [7999]
    assert set(vs_trl.build_prompts(5, 8, seed=0, size=8000)[0].split()) <= set(words[4:])
    full = vs_trl.FULL
    assert full["layers"] >= 4 and full["width"] >= 256 and full["vocabulary"] >= 8000
    assert full["new_tokens"] == 32 and full["steps"] >= 50
    config = vs_trl.build_gpt2(vs_trl.QUICK).config
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)


def test_unforced_half_runs_full_length_samples():
    settings = {**vs_trl.QUICK, "prompts": 8, "prompts_per_step": 2, "steps": 1, "new_tokens": 6}
    result = vs_trl.measure_unforced(settings)
    assert result["samples"] == 1 * 2 * settings["samples_per_prompt"]
    assert result["samples_per_second"] > 0 and len(result["step_seconds"]) == 1
    assert result["mean_completion_length"] == 6.0  # <eos> is unreachable: every sample runs to new_tokens
    assert 0.0 <= result["mean_reward"] <= 1.0


def test_quick_run_against_trl():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "vs_trl.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout)
    assert {"commit", "cpu", "threads", "load", "date"} <= set(measured["provenance"])
    assert measured["trl_trainer"] in ("RLOO", "GRPO")
    assert measured["unforced_samples_per_second"] > 0 and measured["trl_samples_per_second"] > 0
    assert measured["ratio"] == pytest.approx(
        measured["unforced_samples_per_second"] / measured["trl_samples_per_second"], rel=0.01)
    # TRL's extra forward was seen and timed: without it TRL is faster, so the ratio without it is smaller.
    assert measured["trl_extra_forward"]["median_seconds_per_step"] > 0
    assert measured["trl_samples_per_second_without_extra_forward"] > measured["trl_samples_per_second"]
    assert measured["ratio_without_trl_extra_forward"] == pytest.approx(
        measured["unforced_samples_per_second"] / measured["trl_samples_per_second_without_extra_forward"],
        rel=0.01)
    assert measured["mean_completion_length"] == {"unforced": 16.0, "trl": 16.0}
    assert set(measured["goals"]) == {"samples_per_second_over_trl_without_extra_forward",
                                      "samples_per_second_over_trl_raw"}
    assert all(isinstance(entry["met"], bool) for entry in measured["goals"].values())
    assert "extra no-grad forward" in measured["how_made_equal"]

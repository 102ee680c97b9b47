"""Tasks: synthetic targets and oracles, the registry, collation, and pairs files (good and malformed)."""

import json
import random
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unforced.errors import UnforcedError
from unforced.tasks import TASKS, get_task, task_options
from unforced.tasks.base import deterministic_split
from unforced.tasks.files import file_task, read_pairs
from unforced.tasks.synthetic import sort_task
from unforced.vocab import BOS, EOS, PAD, UNK

SETTINGS = settings(derandomize=True, deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow])

SOLVERS = {
    "copy": lambda source: source,
    "reverse": lambda source: " ".join(source.split()[::-1]),
    "sort": lambda source: " ".join(sorted(source.split())),
    "addition": lambda source: " ".join(str(sum(int(n.replace(" ", "")) for n in source.split("+")))),
}


def small_task(name, seed=0):
    options = {"size": 40, "length": 4, "seed": seed}
    if name != "addition":
        options.update(min_length=1, symbols=5)
    return get_task(name, **options)


def all_pairs(task):
    return task.train + task.valid + task.test


# ---------------------------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_synthetic_targets_are_correct(name):
    task = small_task(name)
    pairs = all_pairs(task)
    assert len(pairs) == 40
    assert task.valid and task.test
    assert len({source for source, _ in pairs}) == len(pairs)  # no source twice, so splits cannot leak
    for source, target in pairs:
        assert target == SOLVERS[name](source)
        assert UNK not in task.source_tokenizer.encode(source)
        assert UNK not in task.target_tokenizer.encode(target)
        assert 1 <= len(source.replace("+", "").split()) <= (8 if name == "addition" else 4)


def test_addition_numbers_have_no_leading_zeros():
    for source, _ in all_pairs(small_task("addition")):
        for number in source.split("+"):
            digits = number.split()
            assert digits[0] != "0" or len(digits) == 1


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_oracle_on_the_gold_prefix_returns_the_next_gold_token(name):
    task = small_task(name)
    for source, target in all_pairs(task):
        ids = task.target_tokenizer.encode(target)
        for position in range(len(ids)):
            assert task.oracle(source, ids[:position]) == {ids[position]}
        assert task.oracle(source, ids) == {EOS}


def test_sort_oracle_repairs_a_mistaken_prefix():
    task = sort_task(size=10, length=5, min_length=1, symbols=5)
    a, b, c, d = (task.target_tokenizer.encode(s)[0] for s in "abcd")
    assert task.oracle("c a b", []) == {a}
    assert task.oracle("c a b", [b]) == {a}  # skipped a: emit it now
    assert task.oracle("c a b", [b, a]) == {c}
    assert task.oracle("c a b", [a, a]) == {b}  # a duplicated: go on with what is left
    assert task.oracle("c a b", [d]) == {a}  # a symbol not in the source is ignored
    assert task.oracle("c a b", [c, b, a]) == {EOS}
    assert task.oracle("b a b", [b]) == {a}
    assert task.oracle("b a b", [a, b]) == {b}


@given(source=st.lists(st.sampled_from("abcde"), min_size=1, max_size=6),
       prefix=st.lists(st.sampled_from("abcdef"), max_size=6))
@SETTINGS
def test_sort_oracle_completes_any_prefix_with_the_missing_symbols_in_order(source, prefix):
    task = sort_task(size=3, length=5, min_length=1, symbols=6)
    encode = task.target_tokenizer.encode
    text = " ".join(source)
    path = encode(" ".join(prefix)) if prefix else []
    completion = []
    for _ in range(len(source) + 1):
        (token,) = task.oracle(text, path + completion)
        if token == EOS:
            break
        completion.append(token)
    missing = Counter(source) - Counter(prefix)
    assert completion == encode(" ".join(sorted(missing.elements()))) if missing else completion == []
    assert task.oracle(text, path + completion) == {EOS}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_synthetic_tasks_are_deterministic_for_a_seed(name):
    first, again, other = small_task(name), small_task(name), small_task(name, seed=1)
    assert (first.train, first.valid, first.test) == (again.train, again.valid, again.test)
    assert first.train != other.train


def test_toy_translation_builds_and_is_deterministic():
    first = get_task("toy-translation", size=60, seed=3)
    again = get_task("toy-translation", size=60, seed=3)
    other = get_task("toy-translation", size=60, seed=4)
    assert (first.train, first.valid, first.test) == (again.train, again.valid, again.test)
    assert first.target_tokenizer.to_json() == again.target_tokenizer.to_json()
    assert first.source_tokenizer.to_json() == again.source_tokenizer.to_json()
    assert first.train != other.train
    pairs = all_pairs(first)
    assert len(pairs) == 60 and first.valid and first.test
    for source, target in pairs:
        assert source and target
        assert UNK not in first.source_tokenizer.encode(source)
        assert UNK not in first.target_tokenizer.encode(target)
        # SOV: the target ends with the verb, plural subjects take a plural verb.
        assert target.split()[-1].rstrip("n") in {"ve", "gusta", "encuentra", "sigue", "llama", "oye"}
    batch = first.collate(pairs[:8])
    assert batch.gold.shape[0] == 8


@pytest.mark.parametrize(("name", "options", "fragment"), [
    ("no-such-task", {}, "no-such-task"),
    ("copy", {"colour": 3}, "colour"),
    ("addition", {"symbols": 5}, "symbols"),
    ("toy-translation", {"length": 5}, "length"),
    ("copy", {"size": 2}, "size"),
    ("sort", {"length": 3, "min_length": 4}, "min_length"),
    ("reverse", {"symbols": 27}, "symbols"),
    ("missing-file.tsv", {}, "missing-file.tsv"),
])
def test_get_task_bad_names_and_options_are_errors(name, options, fragment):
    with pytest.raises(UnforcedError) as error:
        get_task(name, **options)
    assert fragment in str(error.value)


def test_task_options_list_the_builders_defaults():
    assert set(task_options("copy")) == {"length", "min_length", "symbols", "size", "seed", "labelled"}
    assert set(task_options("addition")) == {"length", "min_length", "size", "seed", "labelled"}
    assert "copy" in TASKS and "toy-translation" in TASKS


# ---------------------------------------------------------------------------------------------- collate


def test_collate_shapes_and_masks():
    task = small_task("copy")
    pairs = [("a b c", "a b c"), ("d", "d"), ("e a", "e a")]
    batch = task.collate(pairs)
    encode = task.target_tokenizer.encode
    assert batch.source.shape == (3, 3)
    assert batch.gold.shape == batch.inputs.shape == batch.gold_mask.shape == (3, 4)
    assert torch.equal(batch.source_mask, batch.source != PAD)
    assert batch.source_mask.sum(1).tolist() == [3, 1, 2]
    assert torch.equal(batch.inputs[:, 0], torch.full((3,), BOS))
    assert batch.gold_mask.sum(1).tolist() == [4, 2, 3]
    for row, (_, target) in enumerate(pairs):
        ids = encode(target)
        length = len(ids) + 1
        assert batch.gold[row, :length].tolist() == ids + [EOS]  # gold ends with <eos>
        assert bool((batch.gold[row, length:] == PAD).all())
        assert batch.inputs[row, :length].tolist() == [BOS] + ids  # inputs are gold shifted right
        assert bool((batch.inputs[row, length:] == PAD).all())
    assert not bool((batch.inputs == EOS).any())
    assert batch.sources == [s for s, _ in pairs]
    assert batch.references == [[t] for _, t in pairs]
    assert len(batch) == 3


def test_collate_length_limits():
    task = small_task("copy")
    pairs = [("a b c", "a b c")]
    task.collate(pairs, max_source_len=3, max_target_len=4)  # exactly at the limits: fine
    with pytest.raises(UnforcedError, match="target"):
        task.collate(pairs, max_target_len=3)  # three symbols and <eos>
    with pytest.raises(UnforcedError, match="source"):
        task.collate(pairs, max_source_len=2)


def test_batches_cover_every_pair_once_and_shuffle_deterministically():
    task = small_task("reverse")
    def order(**options):
        return [source for batch in task.batches("train", 7, **options) for source in batch.sources]
    plain, shuffled, again = order(), order(shuffle=True, seed=5), order(shuffle=True, seed=5)
    assert plain == [s for s, _ in task.train]
    assert sorted(shuffled) == sorted(plain) and shuffled != plain
    assert shuffled == again
    with pytest.raises(UnforcedError, match="split"):
        task.split("dev")


@given(n=st.integers(0, 60), seed=st.integers(0, 5))
@SETTINGS
def test_deterministic_split_partitions_the_pairs(n, seed):
    pairs = [(f"s{i}", f"t{i}") for i in range(n)]
    train, valid, test = deterministic_split(pairs, seed)
    assert sorted(train + valid + test) == sorted(pairs)
    assert (train, valid, test) == deterministic_split(pairs, seed)
    if n >= 3:
        assert train and valid and test


# ---------------------------------------------------------------------------------------------- files

# Text that survives a pairs file: no tab or line break (nor the other separators `str.splitlines` breaks at),
# not blank after stripping.
SAFE_ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,!?'\"-éßçñ中文ü"
safe_text = st.text(alphabet=SAFE_ALPHABET, min_size=1, max_size=15).filter(lambda s: s.strip())
pair_lists = st.lists(st.tuples(safe_text, safe_text), min_size=3, max_size=12)


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@given(pairs=pair_lists, crlf=st.booleans(), blank_lines=st.booleans())
@SETTINGS
def test_tsv_round_trip(pairs, crlf, blank_lines):
    ending = "\r\n" if crlf else "\n"
    lines = [f"{s}\t{t}" for s, t in pairs]
    if blank_lines:
        lines = ["", *lines[:1], "   ", *lines[1:]]
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), "pairs.tsv", ending.join(lines) + ending)
        read, splits = read_pairs(path)
    assert read == [(s.strip(), t.strip()) for s, t in pairs]
    assert splits == [None] * len(pairs)


@given(pairs=pair_lists, ascii_only=st.booleans())
@SETTINGS
def test_jsonl_round_trip(pairs, ascii_only):
    lines = [json.dumps({"source": s, "target": t, "extra": 1}, ensure_ascii=ascii_only) for s, t in pairs]
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), "pairs.jsonl", "\n".join(lines))
        read, splits = read_pairs(path)
    assert read == [(s.strip(), t.strip()) for s, t in pairs]
    assert splits == [None] * len(pairs)


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_explicit_split_column(suffix, tmp_path):
    rows = [("a b", "x y", "train"), ("c", "z", "valid"), ("d e", "w", "test"), ("f", "v", "train"),
            ("g", "u", "test")]
    if suffix == ".tsv":
        text = "".join(f"{s}\t{t}\t{split}\n" for s, t, split in rows)
    else:
        text = "".join(json.dumps({"source": s, "target": t, "split": split}) + "\n" for s, t, split in rows)
    task = get_task(str(write(tmp_path, "pairs" + suffix, text)))
    assert task.train == [("a b", "x y"), ("f", "v")]
    assert task.valid == [("c", "z")]
    assert task.test == [("d e", "w"), ("g", "u")]
    assert task.target_tokenizer.encode("x y v") != [UNK] * 3


def test_file_task_split_is_deterministic_and_complete(tmp_path):
    pairs = [(f"source {i}", f"target {i % 7}") for i in range(30)]
    path = write(tmp_path, "pairs.tsv", "".join(f"{s}\t{t}\n" for s, t in pairs))
    first, again, other = file_task(path, seed=0), get_task(str(path), seed=0), file_task(path, seed=1)
    assert (first.train, first.valid, first.test) == (again.train, again.valid, again.test)
    assert sorted(first.train + first.valid + first.test) == sorted(pairs)
    assert (len(first.train), len(first.valid), len(first.test)) == (24, 3, 3)
    assert first.test != other.test
    assert first.settings["seed"] == 0
    batch = first.collate(first.train[:4])
    assert batch.gold.shape[0] == 4


@pytest.mark.parametrize("tokenizer", ["char", "word", "bpe"])
def test_file_task_tokenizers(tokenizer, tmp_path):
    pairs = [(f"the dog {i}", f"el perro {i}") for i in range(12)]
    path = write(tmp_path, "pairs.jsonl", "".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in pairs))
    task = get_task(str(path), tokenizer=tokenizer, vocab_size=40)
    assert task.target_tokenizer.kind == tokenizer
    assert task.target_tokenizer.vocab_size <= 40
    source, target = task.train[0]
    assert task.target_tokenizer.decode(task.target_tokenizer.encode(target)) == target


def test_file_task_with_too_few_pairs_or_an_empty_split(tmp_path):
    with pytest.raises(UnforcedError) as error:
        file_task(write(tmp_path, "two.tsv", "a\tb\nc\td\n"))
    assert str(tmp_path / "two.tsv") in str(error.value)
    with pytest.raises(UnforcedError) as error:
        file_task(write(tmp_path, "nosplit.tsv", "a\tb\ttrain\nc\td\tvalid\n"))
    assert "test" in str(error.value)


def test_unreadable_or_misnamed_files(tmp_path):
    with pytest.raises(UnforcedError) as error:
        read_pairs(write(tmp_path, "pairs.csv", "a,b\n"))
    assert "pairs.csv" in str(error.value)
    directory = tmp_path / "folder.tsv"
    directory.mkdir()
    with pytest.raises(UnforcedError) as error:
        read_pairs(directory)
    assert str(directory) in str(error.value)


# Each maker returns (bad line content, suffix); the line is at fault.
BAD_TSV_LINES = st.one_of(
    safe_text.map(lambda s: s.replace("\t", "")),  # one field
    st.lists(safe_text, min_size=4, max_size=6).map("\t".join),  # four fields or more
    st.tuples(safe_text, safe_text, safe_text.filter(lambda s: s not in ("train", "valid", "test")))
    .map("\t".join),  # an unknown split
    st.tuples(st.sampled_from(["", " ", "  "]), safe_text).map("\t".join),  # empty source
    st.tuples(safe_text, st.sampled_from(["", " "])).map("\t".join),  # empty target
)
BAD_JSONL_LINES = st.one_of(
    safe_text.filter(lambda s: not _is_json(s)),  # not JSON
    st.sampled_from(['{"source": "a", "target": "b"', "{'source': 'a', 'target': 'b'}", "[1, 2", "nul"]),
    st.sampled_from(['[]', '"text"', '3', 'null', '["a", "b"]']),  # JSON but not an object
    st.sampled_from(['{}', '{"source": "a"}', '{"target": "b"}', '{"Source": "a", "Target": "b"}']),
    st.tuples(st.sampled_from([1, 2.5, None, True, ["a"], {"a": "b"}]), st.booleans()).map(
        lambda v: json.dumps({"source": v[0], "target": "b"} if v[1] else {"source": "a", "target": v[0]})),
    st.sampled_from(['{"source": " ", "target": "b"}', '{"source": "", "target": "b"}',
                     '{"source": "a", "target": "\\t"}']),
    safe_text.filter(lambda s: s not in ("train", "valid", "test")).map(
        lambda split: json.dumps({"source": "a", "target": "b", "split": split})),
    st.sampled_from([json.dumps({"source": "a", "target": "b", "split": s}) for s in (1, None, ["train"])])
    .filter(lambda line: '"split": null' not in line),
)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@given(suffix=st.sampled_from([".tsv", ".jsonl"]), data=st.data(), good=pair_lists, position=st.integers(0, 12))
@SETTINGS
def test_malformed_line_names_the_file_and_line(suffix, data, good, position):
    bad = data.draw(BAD_TSV_LINES if suffix == ".tsv" else BAD_JSONL_LINES, label="bad line")
    good_lines = ([f"{s}\t{t}" for s, t in good] if suffix == ".tsv"
                  else [json.dumps({"source": s, "target": t}) for s, t in good])
    position = min(position, len(good_lines))
    lines = good_lines[:position] + [bad] + good_lines[position:]
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), "data" + suffix, "\n".join(lines) + "\n")
        with pytest.raises(UnforcedError) as error:
            get_task(str(path))
    message = str(error.value)
    assert f"{path}:{position + 1}:" in message, message


@given(suffix=st.sampled_from([".tsv", ".jsonl"]), good=pair_lists, position=st.integers(0, 12),
       bad_bytes=st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\x80abc"]))
@SETTINGS
def test_invalid_utf8_names_the_file_and_line(suffix, good, position, bad_bytes):
    good_lines = ([f"{s}\t{t}".encode() for s, t in good] if suffix == ".tsv"
                  else [json.dumps({"source": s, "target": t}).encode() for s, t in good])
    position = min(position, len(good_lines))
    bad_line = good_lines[position] if position < len(good_lines) else good_lines[0]
    bad_line = bad_line[:2] + bad_bytes + bad_line[2:]
    lines = good_lines[:position] + [bad_line] + good_lines[position + 1:]
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), "data" + suffix, b"\n".join(lines) + b"\n")
        with pytest.raises(UnforcedError) as error:
            get_task(str(path))
    assert f"{path}:{position + 1}:" in str(error.value)
    assert "UTF-8" in str(error.value)


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
@pytest.mark.parametrize("content", ["", "\n", "\n\n   \n", "\r\n"])
def test_empty_file_is_an_error_naming_the_file(suffix, content, tmp_path):
    path = write(tmp_path, "empty" + suffix, content)
    with pytest.raises(UnforcedError) as error:
        get_task(str(path))
    assert str(path) in str(error.value)
    assert "empty" in str(error.value) or "no pairs" in str(error.value)


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_split_named_on_some_lines_only_is_an_error(suffix, tmp_path):
    if suffix == ".tsv":
        text = "a\tb\ttrain\nc\td\ne\tf\n"
    else:
        text = '{"source": "a", "target": "b", "split": "train"}\n{"source": "c", "target": "d"}\n'
    path = write(tmp_path, "mixed" + suffix, text)
    with pytest.raises(UnforcedError) as error:
        get_task(str(path))
    assert str(path) in str(error.value) and "split" in str(error.value)


@given(content=st.binary(max_size=200), suffix=st.sampled_from([".tsv", ".jsonl"]))
@SETTINGS
def test_arbitrary_bytes_give_a_task_or_an_unforced_error(content, suffix):
    """Never a traceback of another type, whatever the file holds."""
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), "any" + suffix, content)
        try:
            task = get_task(str(path))
        except UnforcedError as error:
            assert str(path) in str(error)
        else:
            assert task.train and task.valid and task.test


def test_random_lines_shuffled_into_a_file():
    """A fixed-seed smoke test over many lines: the first bad line is the one reported."""
    rng = random.Random(0)
    lines = [f"s{i}\tt{i}" for i in range(200)]
    bad = sorted(rng.sample(range(200), 3))
    for index in bad:
        lines[index] = f"only one field {index}"
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), "many.tsv", "\n".join(lines))
        with pytest.raises(UnforcedError, match=rf":{bad[0] + 1}:"):
            read_pairs(path)


# --- every reference, and manifests of audio and images ---------------------------------------------------


def test_jsonl_target_lists_train_on_the_first_and_score_against_all(tmp_path):
    from unforced.diagnostics import evaluate
    from unforced.models import ModelConfig, build_model

    lines = [json.dumps({"source": f"s{i} s{i % 3}", "target": [f"t{i % 4} x y z", f"t{i % 5} other words here",
                                                                 f"u{i % 2} v w"][: 1 + i % 3]})
             for i in range(30)]
    task = get_task(str(write(tmp_path, "multi.jsonl", "\n".join(lines) + "\n")))
    every = task.train + task.valid + task.test
    assert sorted(len(e.references) for e in every) == sorted(1 + i % 3 for i in range(30))
    batch = task.collate(task.test)
    assert batch.references == [list(e.references) for e in task.test]
    first = task.target_tokenizer.decode(batch.gold[0].tolist())
    assert first == task.test[0].references[0]  # teacher forcing trains on the first reference
    source, target = task.longest()
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="gru", source_vocab=task.source_tokenizer.vocab_size,
                                    target_vocab=task.target_tokenizer.vocab_size, embedding=8, hidden=8,
                                    max_source_len=source, max_target_len=target))
    figures = evaluate(model, task, "test")
    assert figures["metric"]["nrefs"] == max(len(e.references) for e in task.test) > 1
    ragged = len({len(e.references) for e in task.test}) > 1  # sacrebleu's own signature then says "var"
    nrefs = "var" if ragged else figures["metric"]["nrefs"]
    assert f"nrefs:{nrefs}" in figures["metric"]["signature"]
    assert [row["references"] for row in figures["examples"]] == [len(e.references) for e in task.test[:5]]


def test_a_reference_list_must_hold_strings(tmp_path):
    path = write(tmp_path, "bad.jsonl", json.dumps({"source": "a", "target": ["ok", 3]}) + "\n")
    with pytest.raises(UnforcedError, match="bad.jsonl:1: 'target' must be a string or a non-empty list"):
        get_task(str(path))


def _wav(path, seconds: float, rate: int = 16000) -> None:
    import wave

    import numpy as np

    samples = (0.3 * np.sin(np.arange(int(rate * seconds)) * 0.1) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())


def test_speech_manifest_reads_audio_relative_to_itself(tmp_path):
    (tmp_path / "clips").mkdir()
    rows = []
    for i in range(6):
        _wav(tmp_path / "clips" / f"{i}.wav", 0.1 + 0.05 * i)
        rows.append(json.dumps({"audio": f"clips/{i}.wav", "text": f"word{i} and more",
                                "split": ("train", "train", "train", "train", "valid", "test")[i]}))
    task = get_task(str(write(tmp_path, "speech.jsonl", "\n".join(rows) + "\n")))
    assert task.metric == "wer" and task.source_codec.kind == "audio" and len(task.train) == 4
    batch = task.collate(task.train)
    assert batch.source.shape[0] == 4 and batch.source.shape[2] == 80 and batch.source.dtype == torch.float32
    assert batch.source_mask.sum(1).tolist() == [task.source_codec.length(e.source) for e in task.train]
    csv_rows = "audio,text\n" + "".join(f"clips/{i}.wav,word{i}\n" for i in range(6))
    assert get_task(str(write(tmp_path, "speech.csv", csv_rows))).source_codec.kind == "audio"
    missing = write(tmp_path, "missing.jsonl", json.dumps({"audio": "clips/none.wav", "text": "x"}) + "\n")
    with pytest.raises(UnforcedError, match="missing.jsonl:1: audio file clips/none.wav not found"):
        get_task(str(missing))


def test_caption_manifest_has_every_caption_as_a_reference(tmp_path):
    from PIL import Image

    rows = []
    for i in range(5):
        Image.new("RGB", (12, 10), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
        rows.append(json.dumps({"image": f"{i}.png", "captions": [f"a red square {i}", f"square number {i}"]}))
    task = get_task(str(write(tmp_path, "captions.jsonl", "\n".join(rows) + "\n")), image_size=16)
    assert task.metric == "cider_d" and task.source_codec.kind == "image"
    batch = task.collate(task.train)
    assert batch.source.shape[1:] == (3, 16, 16) and all(len(r) == 2 for r in batch.references)


def test_swapping_the_source_tokenizer_swaps_what_the_codec_encodes():
    from unforced.tasks.tokenizers import VocabTokenizer
    task = get_task("copy", size=20, length=4, seed=0)
    other = VocabTokenizer(list("zyxwvutsrqponmlkjihgfedcba"), "char")
    task.source_tokenizer = other
    batch = task.collate(task.train[:1])
    assert batch.source[0, : len(task.train[0][0])].tolist() == other.encode(task.train[0][0])


def test_synthetic_examples_carry_their_own_difficulty():
    addition = get_task("addition", size=50, length=4, seed=0)
    for example in addition.train[:20]:
        left, right = example.source.split(" + ")
        assert example.difficulty == max(len(left.split()), len(right.split()))
    batch = addition.collate(addition.train[:8])
    assert batch.difficulty.tolist() == [float(e.difficulty) for e in addition.train[:8]]
    assert all(e.difficulty == len(e.source.split()) for e in get_task("reverse", size=30).train)
    pairs = get_task("toy-translation", size=30).train
    assert all(e.difficulty == len(e.source.split()) for e in pairs)

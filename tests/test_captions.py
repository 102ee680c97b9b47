"""The composed caption corpus (emoji scenes, five references, held-out combinations), the `captions` task, a tiny
CNN-attention captioner trained a few steps and scored with CIDEr-D against all five references, and a user's
caption manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unforced.diagnostics import evaluate
from unforced.models import ModelConfig, build_model
from unforced.rewards import get_reward
from unforced.rewards.corpus import corpus_score
from unforced.strategies.teacher_forcing import TeacherForcing
from unforced.tasks import captions, emoji
from unforced.tasks.manifests import manifest_task

SIZE, OBJECTS = 30, 12  # a corpus of 36 images: 30 train, 3 valid, 3 test


@pytest.fixture(scope="module")
def font() -> Path:
    return emoji.obtain_font()  # the project's own set-up: unpacks the Debian package into the cache if missing


@pytest.fixture(scope="module")
def corpus(font, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / "emoji"
    captions.build_corpus(folder, font, size=SIZE, objects=OBJECTS, corpus_seed=3)
    return folder


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def digest(folder: Path) -> str:
    hashed = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "corpus.json":  # corpus.json records the build's timing
            hashed.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return hashed.hexdigest()


def test_the_font_names_its_pictures(font):
    names = emoji.emoji_names(font)
    assert names[0x26F5] == "sailboat" and names[0x1F408] == "cat"
    assert len(names) > 500
    # Symbols and words the grammar uses for colours, shapes and places are left out; so are plural names.
    assert not any(word in name.split() for name in names.values() for word in ("red", "square", "left"))
    assert "fireworks" not in names.values() and 0x1F1E6 not in names  # a regional indicator letter


def test_plurals_and_articles():
    assert [captions.plural(n) for n in ("cat", "fox", "cherry", "monkey", "woman", "hot dog", "bus")] == [
        "cats", "foxes", "cherries", "monkeys", "women", "hot dogs", "buses"]
    assert captions.article("owl") == "an owl" and captions.article("cat") == "a cat"


def test_the_corpus_is_deterministic_and_holds_out_combinations(corpus, font, tmp_path):
    rows = records(corpus)
    splits = [row["split"] for row in rows]
    assert (splits.count("train"), splits.count("valid"), splits.count("test")) == (SIZE, 3, 3)
    for row in rows:
        assert len(row["captions"]) == 5 and len(set(row["captions"])) == 5
        assert (corpus / row["image"]).is_file()
    train = {row["combination"] for row in rows if row["split"] == "train"}
    test = {row["combination"] for row in rows if row["split"] == "test"}
    assert not train & test
    assert all(captions.held_out(c, 3) for c in test) and not any(captions.held_out(c, 3) for c in train)
    again = tmp_path / "emoji"
    captions.build_corpus(again, font, size=SIZE, objects=OBJECTS, corpus_seed=3)
    assert digest(again) == digest(corpus)  # the same seed gives the same bytes, images included
    other = tmp_path / "other"
    captions.build_corpus(other, font, size=SIZE, objects=OBJECTS, corpus_seed=4)
    assert records(other)[0]["captions"] != rows[0]["captions"]
    info = json.loads((corpus / "corpus.json").read_text())
    assert info["images"] == 36 and info["ms_per_image_total"] > 0 and len(info["objects"]) == OBJECTS


def test_captions_say_what_is_drawn(font):
    import random

    from PIL import Image

    painter = emoji.Painter(font)
    generator = random.Random(0)
    objects = [(0x1F408, "cat"), (0x26F5, "sailboat")]
    seen = set()
    for _ in range(60):
        scene = captions.compose(generator, objects)
        seen.add(scene.kind)
        references = captions.captions(scene, generator)
        for reference in references:
            words = reference.split()
            if scene.kind == "count" and len(scene.items) > 1:
                assert captions.COUNT_WORDS[len(scene.items) - 1] in words and scene.items[0].name + "s" in words
            if scene.kind == "relation":
                assert {"cat", "sailboat"} <= set(words)
            if scene.kind == "shapes":
                assert any(synonym in words for item in scene.items for synonym in captions.SHAPES[item.name])
            if scene.kind == "position" and scene.place != "middle":
                assert scene.place.split()[1] in words
        image = painter.draw(scene)
        assert isinstance(image, Image.Image) and image.size == (emoji.CANVAS, emoji.CANVAS)
        if scene.kind == "shapes":  # a shape's colour is at its centre
            x, y = scene.items[0].centre
            pixel = image.getpixel((round(x * emoji.CANVAS), round(y * emoji.CANVAS)))
            assert pixel == emoji.COLOURS[scene.items[0].colour], (scene, pixel)
    assert seen == set(captions.KIND_WEIGHTS)


def train_captioner(task, steps: int = 25):
    longest_source, longest_target = task.longest()
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="gru", target_vocab=task.target_tokenizer.vocab_size, embedding=24,
                                    hidden=32, dropout=0.0, max_source_len=longest_source,
                                    max_target_len=longest_target, **task.source_codec.model_options()))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batches = list(task.batches("train", 16, shuffle=True, seed=0))
    losses = []
    model.train()
    for step in range(steps):
        output = TeacherForcing().loss(model, batches[step % len(batches)], step)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(float(output.loss.detach()))
    return model.eval(), losses


def test_the_captions_task_trains_a_captioner_scored_on_all_five_references(font, tmp_path):
    (tmp_path / emoji.PACKAGE).symlink_to(font.parents[5], target_is_directory=True)  # the font, not refetched
    task = captions.captions_task(size=SIZE, objects=OBJECTS, image_size=32, corpus_seed=3, cache_dir=str(tmp_path))
    assert task.name == "captions" and task.metric == "cider_d" and task.source_codec.kind == "image"
    assert all(len(example.references) == 5 for split in (task.train, task.valid, task.test) for example in split)
    assert len(task.train) == SIZE and task.settings["corpus"] == captions.corpus_name(SIZE, OBJECTS, 3)
    # A second build reads the cache: no new folder appears.
    assert captions.captions_task(size=SIZE, objects=OBJECTS, image_size=32, corpus_seed=3,
                                  cache_dir=str(tmp_path)).train == task.train
    model, losses = train_captioner(task)
    assert losses[-1] < losses[0] - 1.0, losses
    batch = task.collate(task.test)
    assert batch.source.shape == (3, 3, 32, 32) and len(batch.references[0]) == 5
    figures = evaluate(model, task, "test")
    assert figures["metric"]["name"] == "cider_d" and np.isfinite(figures["metric"]["fr"])
    assert figures["gap_nll"] == pytest.approx(figures["fr_nll"] - figures["tf_nll"])
    # CIDEr-D against every reference: a reference scores better against its image's other four than a
    # reference of another image does.
    references = [list(example.references) for example in task.test]
    own = corpus_score("cider_d", [refs[0] for refs in references], [refs[1:] for refs in references])
    shifted = corpus_score("cider_d", [refs[0] for refs in references[1:] + references[:1]],
                           [refs[1:] for refs in references])
    assert own.value > shifted.value and "nrefs:4" in own.signature
    reward = get_reward("cider_d", task.references_corpus("train"))
    scores = reward([refs[0] for refs in references], references)
    assert scores.shape == (3,) and bool((scores > 0).all())


def test_a_user_caption_manifest_is_a_task(corpus, tmp_path):
    lines = []
    for index, row in enumerate(records(corpus)[:12]):
        image = tmp_path / "pictures" / f"{index}.png"
        image.parent.mkdir(exist_ok=True)
        image.write_bytes((corpus / row["image"]).read_bytes())
        lines.append(json.dumps({"image": f"pictures/{index}.png", "captions": row["captions"][:3]}))
    manifest = tmp_path / "my_captions.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = manifest_task(manifest, image_size=32)
    assert task.metric == "cider_d" and len(task.train) + len(task.valid) + len(task.test) == 12
    assert all(len(example.references) == 3 for example in task.train)
    model, losses = train_captioner(task, steps=12)
    assert losses[-1] < losses[0]
    figures = evaluate(model, task, "test")
    assert figures["metric"]["name"] == "cider_d"


def test_a_run_on_a_caption_manifest_trains_measures_and_reports(corpus, tmp_path):
    from unforced.experiment import run_experiment
    from unforced.run_config import RunConfig

    config = RunConfig(task=str(corpus / "manifest.jsonl"), task_options={"image_size": 32},
                       strategies=["teacher_forcing", "reinforce"], preset="quick",
                       model={"kind": "gru", "embedding": 16, "hidden": 24},
                       train={"steps": 6, "batch_size": 8, "eval_every": 6, "eval_limit": 3, "checkpoint_every": 6,
                              "log_every": 3},
                       test_limit=3, diagnostics_limit=0)
    results = run_experiment(config, tmp_path / "run")
    assert set(results["strategies"]) == {"teacher_forcing", "reinforce"}
    for entry in results["strategies"].values():
        assert entry["metric"]["name"] == "cider_d" and np.isfinite(entry["gap_nll"])
        assert all(example["references"] == 5 for example in entry["examples"])
    assert "nrefs:5" in results["signature"]["metric"]
    from unforced.report.html import build_report

    page = build_report(tmp_path / "run").read_text(encoding="utf-8")
    assert "cider_d" in page.lower()
    assert "<th>FR bleu</th>" in page and "<th>FR chrf beam</th>" in page  # BLEU-4 and chrF beside CIDEr-D
    # The test images are shown beside their captions, copied into the run directory.
    shown = [example["image"] for example in results["strategies"]["teacher_forcing"]["examples"][:3]]
    assert len(shown) == 3 and all((tmp_path / "run" / image).is_file() for image in shown)
    assert all(f'<img src="{image}"' in page for image in shown)

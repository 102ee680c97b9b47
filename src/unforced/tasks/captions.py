"""The composed caption corpus `captions`: scenes of Noto colour emoji and plain shapes, five references an image.

No caption corpus ships in a package, so we compose one from real artwork: Debian's `fonts-noto-color-emoji`
(Apache 2.0 / OFL), unpacked into the cache and drawn by `emoji.py`. The names of
the objects are the glyphs' Unicode names (`unicodedata.name`: U+26F5 is "sailboat").

A scene is one of four kinds, on a background of a colour and a pattern (plain, striped, checkered, gradient):
    count     one to four copies of one object                  "three cats on a blue background"
    relation  two objects left/right of or above/below another  "a small dog to the left of a big cat"
    position  one object in a corner or the middle              "a cat in the top left corner"
    shapes    one or two coloured shapes                        "a red circle to the left of a blue square"
Each image gets five different references from a grammar with synonyms and word-order variation ("left of" /
"to the left of", converse relations, "there are three cats" / "three cats"). The test split holds out object
combinations (pairs of objects, an object with a count or a place, a colour with a shape) that training never
shows: a seeded hash of the combination decides. Everything is deterministic from `corpus_seed`; the corpus is
written once to the cache (PNG files and a caption manifest, `tasks/manifests.py`'s format) and read from there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from unforced.errors import UnforcedError
from unforced.tasks.base import Task
from unforced.tasks.cache import default_cache_dir
from unforced.tasks.emoji import COLOURS, Painter, emoji_names, obtain_font
from unforced.tasks.manifests import manifest_task

FORMAT_VERSION = 1  # bump when drawing or captions change, so stale corpora are rebuilt under a new name
HELD_OUT_PERCENT = 12  # share of object combinations kept for the test split
COLOUR_SYNONYMS = {"grey": ("grey", "gray")}
PATTERNS = ("plain", "striped", "checkered", "gradient")
PATTERN_WORDS = {"plain": ("plain", ""), "striped": ("striped",), "checkered": ("checkered", "chequered"),
                 "gradient": ("shaded", "gradient")}
SHAPES = {"circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",),
          "star": ("star",)}
SIZES = {"small": (30, ("small", "little", "tiny")), "big": (54, ("big", "large"))}
COUNT_SIZE = 34
COUNT_WORDS = ("one", "two", "three", "four")
PLACES = {"top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75),
          "bottom right": (0.75, 0.75), "middle": (0.5, 0.5)}
RELATIONS = {"left": ("to the left of", "left of", "on the left of"),
             "right": ("to the right of", "right of", "on the right of"),
             "above": ("above", "over"), "below": ("below", "under", "beneath")}
CONVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
KIND_WEIGHTS = {"count": 0.3, "relation": 0.35, "position": 0.15, "shapes": 0.2}
IRREGULAR = {"man": "men", "woman": "women", "mouse": "mice", "person": "people", "child": "children",
             "foot": "feet", "tooth": "teeth", "goose": "geese", "fish": "fish", "sheep": "sheep", "deer": "deer",
             "knife": "knives", "leaf": "leaves", "wolf": "wolves", "loaf": "loaves"}


def plural(name: str) -> str:
    """English plural of an object name (its last word): cat -> cats, fox -> foxes, cherry -> cherries."""
    *head, last = name.split()
    if last in IRREGULAR:
        last = IRREGULAR[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*head, last])


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class Item:
    """One thing drawn: an emoji (code point) or a shape (name and colour), its size in pixels and centre."""

    name: str  # the object's name, or the shape's ("circle")
    point: int | None  # the emoji's code point; None for a shape
    colour: str | None  # a shape's colour
    pixels: int
    centre: tuple[float, float]  # (x, y) in [0, 1]
    size: str | None = None  # "small" | "big" where the captions may say it


@dataclass(frozen=True)
class Scene:
    kind: str  # count | relation | position | shapes
    background: str  # a colour name
    pattern: str
    items: tuple[Item, ...]
    relation: str | None = None  # left | right | above | below: items[0] relative to items[1]
    place: str | None = None

    def combination(self) -> str:
        """What the test split holds out: the objects (or colour-shapes) together, with the count or place."""
        if self.kind == "count":
            return f"count:{self.items[0].name}:{len(self.items)}"
        if self.kind == "position":
            return f"position:{self.items[0].name}:{self.place}"
        return f"{self.kind}:" + "+".join(sorted(f"{i.colour or ''} {i.name}" for i in self.items))


def compose(rng: random.Random, objects: list[tuple[int, str]]) -> Scene:
    """A random scene of emoji `objects` ((code point, name) pairs) or plain shapes."""
    kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    background, pattern = rng.choice(list(COLOURS)), rng.choice(PATTERNS)
    if kind == "count":
        point, name = rng.choice(objects)
        count = rng.randint(1, 4)
        spots = rng.sample([(x, y) for x in (0.2, 0.5, 0.8) for y in (0.2, 0.5, 0.8)], count)
        items = tuple(Item(name, point, None, COUNT_SIZE, _jitter(rng, spot, 0.04)) for spot in sorted(spots))
        return Scene(kind, background, pattern, items)
    if kind == "position":
        point, name = rng.choice(objects)
        place, size = rng.choice(list(PLACES)), rng.choice(list(SIZES))
        item = Item(name, point, None, SIZES[size][0] - (8 if place != "middle" and size == "big" else 0),
                    _jitter(rng, PLACES[place], 0.03), size)
        return Scene(kind, background, pattern, (item,), place=place)
    relation = rng.choice(list(RELATIONS))
    first, second = _relation_spots(rng, relation)
    if kind == "relation":
        (point_a, name_a), (point_b, name_b) = rng.sample(objects, 2)
        size_a, size_b = rng.choice(list(SIZES)), rng.choice(list(SIZES))
        items = (Item(name_a, point_a, None, SIZES[size_a][0], first, size_a),
                 Item(name_b, point_b, None, SIZES[size_b][0], second, size_b))
        return Scene(kind, background, pattern, items, relation=relation)
    colours = [c for c in COLOURS if c != background]
    count = rng.randint(1, 2)
    shapes = rng.sample(list(SHAPES), count)
    if count == 1:
        return Scene(kind, background, pattern, (Item(shapes[0], None, rng.choice(colours), 56,
                                                      _jitter(rng, (0.5, 0.5), 0.1)),))
    tints = rng.sample(colours, 2)
    items = (Item(shapes[0], None, tints[0], 44, first), Item(shapes[1], None, tints[1], 44, second))
    return Scene(kind, background, pattern, items, relation=relation)


def _jitter(rng: random.Random, spot: tuple[float, float], amount: float) -> tuple[float, float]:
    return (round(spot[0] + rng.uniform(-amount, amount), 3), round(spot[1] + rng.uniform(-amount, amount), 3))


def _relation_spots(rng: random.Random, relation: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centres of the first and the second item when the first is `relation` of the second."""
    near, far, across = rng.uniform(0.24, 0.32), rng.uniform(0.68, 0.76), rng.uniform(0.35, 0.65)
    first, second = {"left": ((near, across), (far, across)), "right": ((far, across), (near, across)),
                     "above": ((across, near), (across, far)), "below": ((across, far), (across, near))}[relation]
    return _jitter(rng, first, 0.03), _jitter(rng, second, 0.03)


# --- captions ---------------------------------------------------------------------------------------------------

def captions(scene: Scene, rng: random.Random, count: int = 5) -> list[str]:
    """`count` different references of `scene`, drawn from every sentence the grammar gives it."""
    options = sorted(set(_sentences(scene, rng)))
    rng.shuffle(options)
    if len(options) < count:
        raise UnforcedError(f"the caption grammar gives only {len(options)} sentences for a {scene.kind} scene")
    return options[:count]


def _background(scene: Scene, rng: random.Random) -> str:
    colour = rng.choice(COLOUR_SYNONYMS.get(scene.background, (scene.background,)))
    pattern = rng.choice(PATTERN_WORDS[scene.pattern])
    return " ".join(word for word in (pattern, colour, "background") if word)


def _thing(item: Item, rng: random.Random, sized: bool, plural_of: int = 1) -> str:
    """A noun phrase for an item: "a big cat", "three cats", "a red circle"."""
    if item.point is None:
        colour = rng.choice(COLOUR_SYNONYMS.get(item.colour, (item.colour,)))
        return article(f"{colour} {rng.choice(SHAPES[item.name])}")
    if plural_of > 1:
        return f"{COUNT_WORDS[plural_of - 1]} {plural(item.name)}"
    if sized and item.size:
        return article(f"{rng.choice(SIZES[item.size][1])} {item.name}")
    return article(item.name)


def _sentences(scene: Scene, rng: random.Random) -> list[str]:
    """Many sentences for a scene (synonyms drawn with `rng`, so each call varies), every one of them true."""
    out = []
    for _ in range(4):  # each round draws other synonyms
        on = f"on {article(_background(scene, rng))}"
        if scene.kind == "count":
            n, item = len(scene.items), scene.items[0]
            phrase = _thing(item, rng, False, n)
            if n == 1:
                phrase = rng.choice((article(item.name), f"one {item.name}", f"a single {item.name}"))
            there = "there is" if n == 1 else "there are"
            out += [phrase, f"{phrase} {on}", f"{there} {phrase} {on}", f"a picture of {phrase}",
                    f"{phrase} shown {on}", f"{on} {there} {phrase}", f"an image of {phrase} {on}"]
        elif scene.kind == "position":
            item, place = scene.items[0], scene.place
            phrase = _thing(item, rng, rng.random() < 0.6)
            where = ("in the middle", "in the centre", "in the center") if place == "middle" else (
                f"in the {place} corner", f"at the {place}", f"in the {place}")
            at = rng.choice(where)
            out += [f"{phrase} {at}", f"{phrase} {at} {on}", f"{at} there is {phrase}", f"{at} {phrase}",
                    f"a picture of {phrase} {at}", f"{phrase} {on} {at}"]
        elif len(scene.items) == 1:
            phrase = _thing(scene.items[0], rng, False)
            out += [phrase, f"{phrase} {on}", f"there is {phrase} {on}", f"a picture of {phrase}",
                    f"{phrase} in the middle {on}", f"a single {phrase.split(' ', 1)[1]} {on}"]
        else:
            first, second = scene.items
            sized = scene.kind == "relation" and first.size != second.size and rng.random() < 0.7
            a, b = _thing(first, rng, sized), _thing(second, rng, sized)
            relation, converse = rng.choice(RELATIONS[scene.relation]), rng.choice(
                RELATIONS[CONVERSE[scene.relation]])
            out += [f"{a} {relation} {b}", f"{b} {converse} {a}", f"{a} {relation} {b} {on}",
                    f"there is {a} {relation} {b}", f"a picture of {b} {converse} {a}", f"{a} and {b} {on}",
                    f"{b} and {a}", f"{a} {relation} {b} shown {on}"]
    return out


# --- the corpus -------------------------------------------------------------------------------------------------

def corpus_name(size: int, objects: int, corpus_seed: int) -> str:
    return f"emoji-v{FORMAT_VERSION}-seed{corpus_seed}-objects{objects}-size{size}"


def choose_objects(names: dict[int, str], objects: int, corpus_seed: int) -> list[tuple[int, str]]:
    """`objects` emoji drawn (seeded) from the font's named pictures, one per distinct name, in code point order."""
    by_name = {}
    for point, name in names.items():
        by_name.setdefault(name, point)
    pool = sorted((point, name) for name, point in by_name.items())
    if not 2 <= objects <= len(pool):
        raise UnforcedError(f"captions: objects must be between 2 and {len(pool)} (the font's named pictures), "
                            f"got {objects}")
    return sorted(random.Random(f"objects-{corpus_seed}").sample(pool, objects))


def held_out(combination: str, corpus_seed: int) -> bool:
    """Whether a combination belongs to the test split: a seeded hash, the same on every machine."""
    digest = hashlib.sha256(f"{corpus_seed}:{combination}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < HELD_OUT_PERCENT


def build_corpus(folder: Path | str, font_path: Path | str, size: int = 2000, objects: int = 40,
                 corpus_seed: int = 0) -> dict:
    """Write `size` training images, `size // 10` validation and `size // 10` test images with their five
    references into `folder` (`images/*.png`, `manifest.jsonl`); returns the counts and the milliseconds per image.

    Scenes are drawn one after another from a generator seeded with `corpus_seed`; a scene whose combination is
    held out goes to test (until it is full), any other to train, then to valid; the rest are dropped. Valid is
    thus from the training distribution and test from combinations training never saw."""
    if size < 10:
        raise UnforcedError(f"captions: size must be at least 10, got {size}")
    folder, font_path = Path(folder), Path(font_path)
    started = time.perf_counter()
    chosen = choose_objects(emoji_names(font_path), objects, corpus_seed)
    painter = Painter(font_path)
    rng = random.Random(corpus_seed)
    wanted = {"train": size, "valid": max(1, size // 10), "test": max(1, size // 10)}
    made = dict.fromkeys(wanted, 0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records, drawn, tries = [], 0.0, 0
    while made != wanted:
        tries += 1
        if tries > 100 * sum(wanted.values()):
            raise UnforcedError("captions: could not fill the splits (too few objects for the held-out share?)")
        scene = compose(rng, chosen)
        references = captions(scene, rng)
        if held_out(scene.combination(), corpus_seed):
            split = "test" if made["test"] < wanted["test"] else None
        else:
            split = next((name for name in ("train", "valid") if made[name] < wanted[name]), None)
        if split is None:
            continue
        made[split] += 1
        name = f"images/{len(records):06d}.png"
        start = time.perf_counter()
        painter.draw(scene).save(folder / name, compress_level=1)
        drawn += time.perf_counter() - start
        records.append({"image": name, "captions": references, "split": split, "kind": scene.kind,
                        "objects": sorted({item.name for item in scene.items}),
                        "combination": scene.combination()})
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    info = {"name": folder.name, "images": len(records), "splits": made, "objects": [n for _, n in chosen],
            "code_points": [f"U+{p:04X}" for p, _ in chosen], "corpus_seed": corpus_seed,
            "format_version": FORMAT_VERSION, "held_out_percent": HELD_OUT_PERCENT,
            "ms_per_image_drawn_and_written": round(1000 * drawn / len(records), 3),
            "ms_per_image_total": round(1000 * (time.perf_counter() - started) / len(records), 3)}
    (folder / "corpus.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def caption_corpus(size: int = 2000, objects: int = 40, corpus_seed: int = 0,
                   cache_dir: Path | str | None = None) -> Path:
    """The manifest of the composed corpus, built once into `cache_dir/captions/<name>/` (font fetched if absent).

    Built in a scratch folder and renamed into place in one step, so a half-written corpus is never read."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / "captions" / corpus_name(size, objects, corpus_seed)
    if (target / "corpus.json").is_file():
        return target / "manifest.jsonl"
    font = obtain_font(cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=target.parent) as scratch:
        staging = Path(scratch) / target.name
        build_corpus(staging, font, size, objects, corpus_seed)
        if target.exists():
            shutil.rmtree(target)  # a folder without corpus.json is an interrupted copy left by hand
        try:
            staging.rename(target)
        except OSError:
            if not (target / "corpus.json").is_file():  # else another process finished first, which is fine
                raise
    return target / "manifest.jsonl"


def captions_task(size: int = 2000, objects: int = 40, image_size: int = 64, tokenizer: str = "word",
                  vocab_size: int | None = None, seed: int = 0, corpus_seed: int = 0,
                  cache_dir: str | None = None) -> Task:
    """The composed caption corpus as a task: `size` training images (valid and test a tenth each) of `objects`
    emoji, five references an image, metric CIDEr-D. `seed` is the run's (it changes no data); `corpus_seed`
    draws the objects, the scenes and the held-out combinations."""
    manifest = caption_corpus(size, objects, corpus_seed, cache_dir)
    task = manifest_task(manifest, tokenizer=tokenizer, vocab_size=vocab_size, seed=seed, image_size=image_size)
    info = json.loads((manifest.parent / "corpus.json").read_text(encoding="utf-8"))
    task.name = "captions"
    task.description = (f"emoji scenes (Noto Color Emoji, {objects} objects) and shapes, 5 references an image, "
                        f"held-out object combinations in test")
    task.settings = {"size": size, "objects": objects, "image_size": image_size, "tokenizer": tokenizer,
                     "vocab_size": vocab_size, "seed": seed, "corpus_seed": corpus_seed, "corpus": info["name"],
                     "manifest": str(manifest), "format_version": FORMAT_VERSION}
    return task


def main(argv: list[str] | None = None) -> None:
    """`python -m unforced.tasks.captions`: fetch the font, build the corpus once, print its counts and speed."""
    parser = argparse.ArgumentParser(description="build the composed caption corpus into the cache")
    parser.add_argument("--size", type=int, default=2000, help="training images (valid and test: a tenth each)")
    parser.add_argument("--objects", type=int, default=40, help="emoji objects drawn from the font")
    parser.add_argument("--corpus-seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        manifest = caption_corpus(args.size, args.objects, args.corpus_seed)
    except UnforcedError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    info = json.loads((manifest.parent / "corpus.json").read_text(encoding="utf-8"))
    print(f"captions: {info['images']} images {info['splits']}, {len(info['objects'])} objects, "
          f"{info['ms_per_image_total']} ms per image when built ({info['ms_per_image_drawn_and_written']} ms "
          f"drawing and writing), {time.perf_counter() - started:.1f} s now, manifest {manifest}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The embedded English->Spanish corpus `bible-en-es`: King James Version and Reina-Valera 1909, verse by verse.

Both texts are public-domain SWORD modules packaged by Debian (`sword-text-kjv`, `sword-text-sparv`). We fetch the
packages with apt-get, read their "ztext" files in pure Python (no libsword) and pair verses by reference. Sources,
licences and the verse table: DATA.md beside this file.

A ztext module stores each testament (`ot`, `nt`) in three files:
  .bzs  per compressed block: uint32 LE offset in .bzz, compressed size, uncompressed size
  .bzv  per index slot: uint32 block, uint32 offset in the uncompressed block, uint16 size (uint32 for zText4)
  .bzz  the zlib-compressed blocks
Slots follow the versification: 0 module heading, 1 testament heading, then for each book a book heading and, for
each chapter, a chapter heading followed by its verses.
"""

import gzip
import html
import json
import os
import re
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from unforced.errors import UnforcedError
from unforced.tasks.cache import default_cache_dir, unpack_packages

PACKAGES = ("sword-text-kjv", "sword-text-sparv")
# Module ids, the current Debian ones first; older releases shipped the short ids.
ENGLISH_MODULES = ("engKJV2006eb", "KJV")
SPANISH_MODULES = ("spaRV1909eb", "SpaRV")
CACHE_NAME = "bible-en-es.jsonl.gz"
# First line of the cache; bump the version when reading or pairing changes, so stale caches are rebuilt.
_CACHE_HEADER = {"format": "bible-en-es", "version": 1}
# How many verses a misnumbered Spanish verse may sit from its English one (Job 40 is off by 5).
_SHIFT_WINDOW = 5

Key = tuple[str, int, int]  # (OSIS book, chapter, verse); chapter 0 or verse 0 mark a book or chapter heading


@dataclass(frozen=True)
class VersePair:
    """One verse in both languages."""

    book: str
    chapter: int
    verse: int
    english: str
    spanish: str


def obtain_modules(cache_dir: Path | None = None) -> Path:
    """The SWORD library root (holding `mods.d/` and `modules/`) with both modules, fetched with apt-get if absent.

    The packages are unpacked into a scratch folder and renamed to `cache_dir/sword` in one step, so a half-done
    extraction is never taken for a finished one.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    library = cache_dir / "sword" / "usr" / "share" / "sword"
    unpack_packages(lambda: PACKAGES, cache_dir / "sword", lambda root: _has_modules(root / "usr" / "share" / "sword"),
                    lambda reason: _how_to_get(reason, cache_dir), "the packages hold no KJV or RV1909 module")
    return library


def read_module(module_root: Path, name: str) -> dict[Key, str]:
    """Every non-empty verse of a ztext Bible module, as plain text, in canonical order."""
    return {key: text for key, (text, _) in _read_verses(module_root, name).items()}


def bible_pairs(cache_dir: Path | None = None) -> list[VersePair]:
    """Verses present and non-empty in both the KJV and the RV1909, in canonical order, cached after the first call.

    The RV1909 module numbers a dozen chapters the Spanish way (its Jonah 2:1 is the KJV's 1:17, its Job 39:1 the
    KJV's 38:39) yet stores them in KJV slots, so pairing by reference alone would set nearly 200 verses beside the
    wrong English. Both modules tag words with Strong's numbers of the same Hebrew and Greek source, so we drop a pair
    when its Spanish verse shares more of them (Jaccard) with an English verse up to `_SHIFT_WINDOW` verses away
    than with its own English verse.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache = cache_dir / CACHE_NAME
    if cache.exists():
        pairs = _load_pairs(cache)
        if pairs is not None:
            return pairs
    library = obtain_modules(cache_dir)
    english = _read_verses(library, _installed(library, ENGLISH_MODULES))
    spanish = _read_verses(library, _installed(library, SPANISH_MODULES))
    keys = list(english)
    pairs = []
    for position, key in enumerate(keys):
        if key not in spanish:
            continue
        spanish_text, spanish_numbers = spanish[key]
        own = _jaccard(english[key][1], spanish_numbers)
        nearby = keys[max(0, position - _SHIFT_WINDOW) : position + _SHIFT_WINDOW + 1]
        if all(_jaccard(english[other][1], spanish_numbers) <= own for other in nearby):
            pairs.append(VersePair(*key, english=english[key][0], spanish=spanish_text))
    _save_pairs(pairs, cache)
    return pairs


# Elements whose content is not verse text: footnotes and cross-references (OSIS, ThML), editors' headings (a
# title not marked canonical; canonical psalm titles stay, as the Spanish has them in verse 1), GBF notes and
# headings.
_DROPPED = re.compile(
    r'<note\b[^>]*(?<!/)>.*?</note>|<title\b(?![^>]*canonical="true")[^>]*(?<!/)>.*?</title>|<RF>.*?<Rf>|<TS>.*?<Ts>',
    re.DOTALL,
)
# Milestones and block tags separate words; inline tags (<w>, <transChange>, GBF <WH0430>) sit inside words.
_SEPARATING_TAG = re.compile(r"<[^>]*/>|</?(?:div|p|l|lg|lb|br|title|chapter|verse|CM|CL)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")
# Character-style markers (\nd, \+nd*) that the USFM->OSIS conversion left in a few KJV verses, and the KJV's
# paragraph sign, which is typography rather than text.
_LEFTOVER = re.compile(r"\\\+?[a-z]+\d*\*?|¶")
_LEMMA = re.compile(r'lemma="([^"]*)"')
_STRONG = re.compile(r"\b([GH])0*(\d+)")  # in lemma="strong:H0430" or lemma="strong:G2424 G5547"


def plain_text(markup: str) -> str:
    """Verse markup (OSIS, ThML or GBF) to plain text: notes and headings dropped, tags (and with them Strong's
    numbers) removed, entities unescaped, whitespace collapsed."""
    text = _DROPPED.sub("", markup)
    text = _SEPARATING_TAG.sub(" ", text)
    text = _LEFTOVER.sub("", _TAG.sub("", text))
    return " ".join(html.unescape(text).split())  # unescape last, so an escaped "&lt;" is never read as a tag


def _strong_numbers(markup: str) -> frozenset[str]:
    """The Strong's numbers an OSIS verse tags its words with, notes excluded: e.g. {"H430", "G2424"}."""
    lemmas = _LEMMA.findall(_DROPPED.sub("", markup))
    return frozenset(letter + number for lemma in lemmas for letter, number in _STRONG.findall(lemma))


def _jaccard(first: frozenset[str], second: frozenset[str]) -> float:
    union = len(first | second)
    return len(first & second) / union if union else 0.0


def _read_verses(module_root: Path, name: str) -> dict[Key, tuple[str, frozenset[str]]]:
    """Every non-empty verse of a module: its plain text and its Strong's numbers."""
    verses = {}
    for key, markup in _entries(module_root, name):
        if key[1] and key[2]:
            text = plain_text(markup)
            if text:
                verses[key] = (text, _strong_numbers(markup))
    return verses


def _entries(module_root: Path, name: str) -> Iterator[tuple[Key, str]]:
    """Every non-empty index slot of a module under the KJV versification, headings included, as raw markup."""
    conf = _read_conf(module_root, name)
    driver = conf.get("ModDrv", "").lower()
    if driver not in ("ztext", "ztext4"):
        raise UnforcedError(f"SWORD module {name}: ModDrv={conf.get('ModDrv')}, only zText Bibles are read")
    for field, default, supported in (("Versification", "KJV", "KJV"), ("CompressType", "LZSS", "ZIP")):
        if conf.get(field, default).upper() != supported:
            raise UnforcedError(
                f"SWORD module {name}: {field}={conf.get(field, default)}, only {supported} is read"
            )
    # SWORD reads a module without an Encoding line as Latin-1.
    encoding = "utf-8" if conf.get("Encoding", "").upper() == "UTF-8" else "latin-1"
    record = struct.Struct("<IIH" if driver == "ztext" else "<III")
    folder = module_root / conf.get("DataPath", "").removeprefix("./")
    for testament, books in (("ot", _CANON[:39]), ("nt", _CANON[39:])):
        paths = [folder / f"{testament}.{suffix}" for suffix in ("bzv", "bzs", "bzz")]
        if not all(path.exists() for path in paths):
            raise UnforcedError(f"SWORD module {name}: {testament}.bzv, .bzs or .bzz missing under {folder}")
        index, blocks, data = (path.read_bytes() for path in paths)
        slots = [key for book, chapters in books for key in _book_slots(book, chapters)]
        if len(index) != (len(slots) + 2) * record.size:
            raise UnforcedError(
                f"SWORD module {name}: {testament}.bzv holds {len(index) / record.size:g} entries, "
                f"the KJV versification needs {len(slots) + 2}"
            )
        unpacked: dict[int, bytes] = {}
        for slot, key in enumerate(slots, start=2):
            block, offset, size = record.unpack_from(index, slot * record.size)
            if size == 0:
                continue
            if block not in unpacked:
                start, compressed_size, _ = struct.unpack_from("<III", blocks, block * 12)
                unpacked[block] = zlib.decompress(data[start : start + compressed_size])
            yield key, unpacked[block][offset : offset + size].decode(encoding, errors="replace")


def _book_slots(book: str, chapters: tuple[int, ...]) -> Iterator[Key]:
    yield (book, 0, 0)
    for chapter, verses in enumerate(chapters, start=1):
        yield (book, chapter, 0)
        yield from ((book, chapter, verse) for verse in range(1, verses + 1))


def _read_conf(module_root: Path, name: str) -> dict[str, str]:
    """The `Key=Value` lines of the module's `mods.d/*.conf` (section `[name]`, any case)."""
    for path in sorted((module_root / "mods.d").glob("*.conf")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        sections = [line.strip() for line in lines if line.strip().startswith("[")]
        if sections and sections[0].lower() == f"[{name.lower()}]":
            fields = (
                line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#")
            )
            return {key.strip(): value.strip() for key, value in fields}
    raise UnforcedError(f"SWORD module {name} not found under {module_root / 'mods.d'}")


def _installed(library: Path, candidates: tuple[str, ...]) -> str:
    """The first of the candidate module ids that the library holds."""
    for name in candidates:
        try:
            _read_conf(library, name)
            return name
        except UnforcedError:
            continue
    raise UnforcedError(f"none of the SWORD modules {', '.join(candidates)} is under {library}")


def _has_modules(library: Path) -> bool:
    try:
        for candidates in (ENGLISH_MODULES, SPANISH_MODULES):
            _installed(library, candidates)
    except UnforcedError:
        return False
    return True


def _how_to_get(reason: str, cache_dir: Path) -> str:
    return (
        f"cannot fetch the bible-en-es data ({reason}): run `apt-get download {' '.join(PACKAGES)}` and "
        f"`dpkg-deb -x <package>.deb {cache_dir / 'sword'}` for each, or set UNFORCED_CACHE to a folder that "
        "holds them; `--task toy-translation` needs no data"
    )


def _load_pairs(cache: Path) -> list[VersePair] | None:
    """The cached pairs, or None when the file is of another format version or unreadable (then we rebuild)."""
    try:
        with gzip.open(cache, "rt", encoding="utf-8") as lines:
            if json.loads(next(lines, "null")) != _CACHE_HEADER:
                return None
            return [VersePair(**json.loads(line)) for line in lines]
    except (OSError, EOFError, ValueError, TypeError):
        return None


def _save_pairs(pairs: list[VersePair], cache: Path) -> None:
    """Write through a temporary file and rename, so readers see the old cache or the whole new one."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{cache.name}.", dir=cache.parent)
    try:
        with os.fdopen(handle, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
            for record in (_CACHE_HEADER, *(asdict(pair) for pair in pairs)):
                packed.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the cache is plain public data
        os.replace(temporary, cache)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main() -> None:
    """`python -m unforced.tasks.sword`: fetch both modules, build the cache, print counts (used by `make data`)."""
    started = time.perf_counter()
    try:
        pairs = bible_pairs()
    except UnforcedError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    short = sum(len(p.english.split()) <= 30 and len(p.spanish.split()) <= 30 for p in pairs)
    print(
        f"bible-en-es: {len(pairs)} verse pairs, {short} with at most 30 words a side, "
        f"{time.perf_counter() - started:.1f} s, cache {default_cache_dir() / CACHE_NAME}",
        file=sys.stderr,
    )


# Verses per chapter of the 66 books in the KJV versification, SWORD's default ("KJV" v11n, the `otbooks`,
# `ntbooks` and `vm` tables of SWORD's canon.h): an OSIS book id, then one count per chapter.
_KJV_VERSES = """
Gen 31 25 24 26 32 22 24 22 29 32 32 20 18 24 21 16 27 33 38 18 34 24 20 67 34 35 46 22 35 43 55 32 20 31 29
    43 36 30 23 23 57 38 34 34 28 34 31 22 33 26
Exod 22 25 22 31 23 30 25 32 35 29 10 51 22 31 27 36 16 27 25 26 36 31 33 18 40 37 21 43 46 38 18 35 23 35
    35 38 29 31 43 38
Lev 17 16 17 35 19 30 38 36 24 20 47 8 59 57 33 34 16 30 37 27 24 33 44 23 55 46 34
Num 54 34 51 49 31 27 89 26 23 36 35 16 33 45 41 50 13 32 22 29 35 41 30 25 18 65 23 31 40 16 54 42 56 29 34
    13
Deut 46 37 29 49 33 25 26 20 29 22 32 32 18 29 23 22 20 22 21 20 23 30 25 22 19 19 26 68 29 20 30 52 29 12
Josh 18 24 17 24 15 27 26 35 27 43 23 24 33 15 63 10 18 28 51 9 45 34 16 33
Judg 36 23 31 24 31 40 25 35 57 18 40 15 25 20 20 31 13 31 30 48 25
Ruth 22 23 18 22
1Sam 28 36 21 22 12 21 17 22 27 27 15 25 23 52 35 23 58 30 24 42 15 23 29 22 44 25 12 25 11 31 13
2Sam 27 32 39 12 25 23 29 18 13 19 27 31 39 33 37 23 29 33 43 26 22 51 39 25
1Kgs 53 46 28 34 18 38 51 66 28 29 43 33 34 31 34 34 24 46 21 43 29 53
2Kgs 18 25 27 44 27 33 20 29 37 36 21 21 25 29 38 20 41 37 37 21 26 20 37 20 30
1Chr 54 55 24 43 26 81 40 40 44 14 47 40 14 17 29 43 27 17 19 8 30 19 32 31 31 32 34 21 30
2Chr 17 18 17 22 14 42 22 18 31 19 23 16 22 15 19 14 19 34 11 37 20 12 21 27 28 23 9 27 36 27 21 33 25 33 27
    23
Ezra 11 70 13 24 17 22 28 36 15 44
Neh 11 20 32 23 19 19 73 18 38 39 36 47 31
Esth 22 23 15 17 14 14 10 17 32 3
Job 22 13 26 21 27 30 21 22 35 22 20 25 28 22 35 22 16 21 29 29 34 30 17 25 6 14 23 28 25 31 40 22 33 37 16
    33 24 41 30 24 34 17
Ps 6 12 8 8 12 10 17 9 20 18 7 8 6 7 5 11 15 50 14 9 13 31 6 10 22 12 14 9 11 12 24 11 22 22 28 12 40 22 13
    17 13 11 5 26 17 11 9 14 20 23 19 9 6 7 23 13 11 11 17 12 8 12 11 10 13 20 7 35 36 5 24 20 28 23 10 12
    20 72 13 19 16 8 18 12 13 17 7 18 52 17 16 15 5 23 11 13 12 9 9 5 8 28 22 35 45 48 43 13 31 7 10 10 9 8
    18 19 2 29 176 7 8 9 4 8 5 6 5 6 8 8 3 18 3 3 21 26 9 8 24 13 10 7 12 15 21 10 20 14 9 6
Prov 33 22 35 27 23 35 27 36 18 32 31 28 25 35 33 33 28 24 29 30 31 29 35 34 28 28 27 28 27 33 31
Eccl 18 26 22 16 20 12 29 17 18 20 10 14
Song 17 17 11 16 16 13 13 14
Isa 31 22 26 6 30 13 25 22 21 34 16 6 22 32 9 14 14 7 25 6 17 25 18 23 12 21 13 29 24 33 9 20 24 17 10 22 38
    22 8 31 29 25 28 28 25 13 15 22 26 11 23 15 12 17 13 12 21 14 21 22 11 12 19 12 25 24
Jer 19 37 25 31 31 30 34 22 26 25 23 17 27 22 21 21 27 23 15 18 14 30 40 10 38 24 22 17 32 24 40 44 26 22 19
    32 21 28 18 16 18 22 13 30 5 28 7 47 39 46 64 34
Lam 22 22 66 22 22
Ezek 28 10 27 17 17 14 27 18 11 22 25 28 23 23 8 63 24 32 14 49 32 31 49 27 17 21 36 26 21 26 18 32 33 31 15
    38 28 23 29 49 26 20 27 31 25 24 23 35
Dan 21 49 30 37 31 28 28 27 27 21 45 13
Hos 11 23 5 19 15 11 16 14 17 15 12 14 16 9
Joel 20 32 21
Amos 15 16 15 13 27 14 17 14 15
Obad 21
Jonah 17 10 10 11
Mic 16 13 12 13 15 16 20
Nah 15 13 19
Hab 17 20 19
Zeph 18 15 20
Hag 15 23
Zech 21 13 10 14 11 15 14 23 17 12 17 14 9 21
Mal 14 17 18 6
Matt 25 23 17 25 48 34 29 34 38 42 30 50 58 36 39 28 27 35 30 34 46 46 39 51 46 75 66 20
Mark 45 28 35 41 43 56 37 38 50 52 33 44 37 72 47 20
Luke 80 52 38 44 39 49 50 56 62 42 54 59 35 35 32 31 37 43 48 47 38 71 56 53
John 51 25 36 54 47 71 53 59 41 42 57 50 38 31 27 33 26 40 42 31 25
Acts 26 47 26 37 42 15 60 40 43 48 30 25 52 28 41 40 34 28 41 38 40 30 35 27 27 32 44 31
Rom 32 29 31 25 21 23 25 39 33 21 36 21 14 23 33 27
1Cor 31 16 23 21 13 20 40 13 27 33 34 31 13 40 58 24
2Cor 24 17 18 18 21 18 16 24 15 18 33 21 14
Gal 24 21 29 31 26 18
Eph 23 22 21 32 33 24
Phil 30 30 21 23
Col 29 23 25 18
1Thess 10 20 13 18 28
2Thess 12 17 18
1Tim 20 15 16 16 25 21
2Tim 18 26 17 22
Titus 16 15 15
Phlm 25
Heb 14 18 19 16 14 20 28 13 28 39 40 29 25
Jas 27 26 18 17 20
1Pet 25 25 22 19 14
2Pet 21 22 18
1John 10 29 24 21 21
2John 13
3John 14
Jude 25
Rev 20 29 22 11 14 17 17 13 21 11 19 17 18 20 8 21 18 24 21 15 27 21
"""


def _parse_canon(table: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    books: list[tuple[str, list[int]]] = []
    for token in table.split():
        if token.isdigit():
            books[-1][1].append(int(token))
        else:
            books.append((token, []))
    return tuple((book, tuple(chapters)) for book, chapters in books)


_CANON = _parse_canon(_KJV_VERSES)

if __name__ == "__main__":
    main()

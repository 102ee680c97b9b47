"""Tests for the SWORD ztext reader and the bible-en-es corpus: synthetic modules written here, real ones on demand."""

import gzip
import os
import struct
import zlib
from pathlib import Path

import pytest

from unforced.errors import UnforcedError
from unforced.tasks import cache, sword
from unforced.tasks.sword import VersePair, bible_pairs, obtain_modules, plain_text, read_module

# Index slots worked out by hand from the KJV verse table, independently of the reader's own layout code:
# 0 module heading, 1 testament heading, 2 Genesis heading, 3 Genesis 1 heading, 4 Gen 1:1; Genesis 2's heading
# follows Gen 1's 31 verses (slot 35); Exodus' heading follows Genesis' 50 chapter headings and 1533 verses.
OT_SLOTS, NT_SLOTS = 24115, 8246  # 2 + 39 books + 929 chapters + 23145 verses; 2 + 27 + 260 + 7957
SLOT = {
    ("Gen", 1, 1): ("ot", 4),
    ("Gen", 1, 2): ("ot", 5),
    ("Gen", 1, 3): ("ot", 6),
    ("Gen", 2, 1): ("ot", 36),
    ("Exod", 1, 1): ("ot", 2 + 1 + 50 + 1533 + 2),
    ("Mal", 4, 6): ("ot", OT_SLOTS - 1),
    ("Matt", 1, 1): ("nt", 4),
    ("Rev", 22, 21): ("nt", NT_SLOTS - 1),
}


def write_module(library: Path, name: str, slots: dict[tuple[str, int], str], driver: str = "zText") -> None:
    """A ztext module holding `slots` ((testament, slot) -> markup), its verses spread over two blocks."""
    folder = library / "modules" / "texts" / "ztext" / name.lower()
    folder.mkdir(parents=True)
    record = struct.Struct("<IIH" if driver == "zText" else "<III")
    for testament, count in (("ot", OT_SLOTS), ("nt", NT_SLOTS)):
        blocks, index = [bytearray(), bytearray()], bytearray(record.size * count)
        for position, slot in enumerate(sorted(s for t, s in slots if t == testament)):
            text, block = slots[(testament, slot)].encode(), position % 2
            record.pack_into(index, slot * record.size, block, len(blocks[block]), len(text))
            blocks[block] += text
        compressed = [zlib.compress(bytes(block)) for block in blocks]
        starts = [0, len(compressed[0])]
        bzs = b"".join(
            struct.pack("<III", s, len(c), len(b)) for s, c, b in zip(starts, compressed, blocks, strict=True)
        )
        (folder / f"{testament}.bzs").write_bytes(bzs)
        (folder / f"{testament}.bzv").write_bytes(bytes(index))
        (folder / f"{testament}.bzz").write_bytes(b"".join(compressed))
    (library / "mods.d").mkdir(exist_ok=True)
    (library / "mods.d" / f"{name.lower()}.conf").write_text(
        f"[{name}]\nDataPath=./modules/texts/ztext/{name.lower()}/\nModDrv={driver}\nSourceType=OSIS\n"
        "Encoding=UTF-8\nCompressType=ZIP\nBlockType=BOOK\nVersification=KJV\n"
    )


def test_verse_table_totals() -> None:
    """66 books, 1189 chapters, 31102 verses: the KJV versification's well-known totals."""
    chapters = [count for _, book in sword._CANON for count in book]
    assert (len(sword._CANON), len(chapters), sum(chapters)) == (66, 1189, 31102)
    assert sword._CANON[18][0] == "Ps" and sword._CANON[18][1][118] == 176  # Psalm 119
    assert sum(sum(book) for _, book in sword._CANON[:39]) == 23145


@pytest.mark.parametrize("driver", ["zText", "zText4"])
def test_reader_returns_exactly_the_verses_written(tmp_path: Path, driver: str) -> None:
    texts = {key: "verse {} {}:{}".format(*key) for key in SLOT}
    slots = {SLOT[key]: f'<w lemma="strong:H1">{text}</w>' for key, text in texts.items()}
    slots[SLOT[("Gen", 1, 3)]] = '<div type="x-p"/> <note>only a note</note>'  # nothing left after cleaning
    slots[("ot", 3)] = '<chapter osisID="Gen.1"/> a chapter heading, not a verse'
    write_module(tmp_path, "Synthetic", slots, driver)
    del texts[("Gen", 1, 3)]
    verses = read_module(tmp_path, "synthetic")
    assert verses == texts
    assert list(verses) == list(texts)  # canonical order


def test_reader_rejects_a_module_of_another_versification(tmp_path: Path) -> None:
    write_module(tmp_path, "Short", {("ot", 4): "x"})
    (tmp_path / "modules/texts/ztext/short/nt.bzv").write_bytes(bytes(10 * (NT_SLOTS - 1)))
    with pytest.raises(UnforcedError, match="versification needs 8246"):
        read_module(tmp_path, "Short")


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        (
            'And <w lemma="strong:H0430">God</w> <w lemma="strong:H7200">saw</w> the light, that <transChange '
            'type="added">it was</transChange> good.<note placement="foot"><reference type="annotateRef">1.4 '
            "</reference>the light from…: Heb. between</note> ",
            "And God saw the light, that it was good.",
        ),
        (
            '<div type="x-milestone" subType="x-preverse" sID="pv1"/><title canonical="true" type="psalm">A Psalm '
            'of <w lemma="strong:H1732">David</w>.</title> <lg sID="g1"/><l level="1"/>LORD, how are they '
            "increased",
            "A Psalm of David. LORD, how are they increased",
        ),
        ("<title><foreign>ב BETH.</foreign></title> <l/>Wherewithal", "Wherewithal"),
        ('the \\nd <w lemma="strong:H3068">LORD</w></divineName> spake', "the LORD spake"),
        ('¶ And <q marker="" who="Jesus">he said</q>', "And he said"),
        ("In<WH07225> God<WH0430> created<WH01254><WTH8804><RF>a GBF note<Rf> it.<CM>", "In God created it."),
        (
            '<sync type="Strongs" value="H07225"/>Tom &amp; Jerry &lt;b&gt;\n  spaced',
            "Tom & Jerry <b> spaced",
        ),
    ],
)
def test_plain_text_strips_markup(markup: str, text: str) -> None:
    assert plain_text(markup) == text


def test_strong_numbers_ignore_notes_and_zero_padding() -> None:
    markup = '<w lemma="strong:G2424 G5547">Jesucristo</w><note><w lemma="strong:G1">x</w></note>'
    assert sword._strong_numbers(markup) == {"G2424", "G5547"}


def library_pair(library: Path) -> None:
    """An English and a Spanish module: Gen 1:2 English only, Gen 1:3 empty in Spanish, Exod 1:1 misnumbered."""
    english = {
        SLOT[("Gen", 1, 1)]: '<w lemma="strong:H7225">In the beginning</w>',
        SLOT[("Gen", 1, 2)]: "And the earth",
        SLOT[("Gen", 1, 3)]: "And God said",
        SLOT[("Exod", 1, 1)]: '<w lemma="strong:H8034 H1121">Now these are the names</w>',
        ("ot", SLOT[("Exod", 1, 1)][1] + 1): '<w lemma="strong:H7205">Reuben</w>',
        SLOT[("Matt", 1, 1)]: '<w lemma="strong:G0976">The book</w>',
    }
    spanish = {
        SLOT[("Gen", 1, 1)]: '<w lemma="strong:H7225">EN el principio</w>',
        SLOT[("Gen", 1, 3)]: "<note>nada</note>",
        # The Spanish Exod 1:1 holds the English 1:2 (a Spanish numbering): its Strong's numbers say so.
        SLOT[("Exod", 1, 1)]: '<w lemma="strong:H7205">Rubén</w>',
        SLOT[("Matt", 1, 1)]: '<w lemma="strong:G976">El libro</w>',
    }
    write_module(library, "engKJV2006eb", english)
    write_module(library, "spaRV1909eb", spanish)


def test_pairs_are_aligned_ordered_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library_pair(tmp_path / "sword" / "usr" / "share" / "sword")
    expected = [
        VersePair("Gen", 1, 1, "In the beginning", "EN el principio"),
        VersePair("Matt", 1, 1, "The book", "El libro"),
    ]
    assert bible_pairs(tmp_path) == expected
    with gzip.open(tmp_path / sword.CACHE_NAME, "rt", encoding="utf-8") as cache:
        assert len(cache.read().splitlines()) == 1 + len(expected)  # a format header, then one line a pair

    def no_parsing(*_: object) -> Path:
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(sword, "obtain_modules", no_parsing)
    assert bible_pairs(str(tmp_path)) == expected


def test_a_cache_of_another_version_is_rebuilt(tmp_path: Path) -> None:
    library_pair(tmp_path / "sword" / "usr" / "share" / "sword")
    with gzip.open(tmp_path / sword.CACHE_NAME, "wt", encoding="utf-8") as stale:
        stale.write('{"format": "bible-en-es", "version": 0}\n')
    assert len(bible_pairs(tmp_path)) == 2


def test_obtain_modules_uses_an_existing_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library = tmp_path / "sword" / "usr" / "share" / "sword"
    library_pair(library)

    def no_download(*_: object, **__: object) -> None:
        raise AssertionError("nothing should be downloaded")

    monkeypatch.setattr(cache.subprocess, "run", no_download)
    assert obtain_modules(tmp_path) == library


def test_missing_tools_give_a_one_line_way_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache.shutil, "which", lambda _: None)
    with pytest.raises(UnforcedError) as error:
        obtain_modules(tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "apt-get download sword-text-kjv sword-text-sparv" in message and "dpkg-deb -x" in message
    assert "UNFORCED_CACHE" in message and "--task toy-translation" in message


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNFORCED_CACHE", str(tmp_path))
    assert sword.default_cache_dir() == tmp_path
    monkeypatch.delenv("UNFORCED_CACHE")
    assert sword.default_cache_dir() == Path.home() / ".cache" / "unforced"


@pytest.mark.skipif(
    os.environ.get("UNFORCED_REAL_DATA") != "1",
    reason="real SWORD modules: run with UNFORCED_REAL_DATA=1 (fetches ~5.5 MB with apt-get into the cache)",
)
def test_real_modules() -> None:
    """Runs only with UNFORCED_REAL_DATA=1; then it fails (never skips) if the modules cannot be had.

    It proves the embedded verse table against the data: every book and chapter heading slot of both modules
    carries the osisID that the table puts there.
    """
    library = obtain_modules()
    for name in ("engKJV2006eb", "spaRV1909eb"):
        for (book, chapter, verse), markup in sword._entries(library, name):
            if not verse:
                heading = f'osisID="{book}.{chapter}"' if chapter else f'osisID="{book}"'
                assert heading in markup, (name, book, chapter)
    english = read_module(library, "engKJV2006eb")
    assert len(english) == 31102
    assert english[("Gen", 1, 1)] == "In the beginning God created the heaven and the earth."
    pairs = bible_pairs()
    by_key = {(p.book, p.chapter, p.verse): p for p in pairs}
    assert by_key[("Gen", 1, 1)].spanish == "EN el principio crió Dios los cielos y la tierra."
    assert ("Jonah", 2, 1) not in by_key  # the Spanish 2:1 is the English 1:17
    assert 30_500 < len(pairs) < 31_102

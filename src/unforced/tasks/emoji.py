"""Noto Color Emoji: the font unpacked from Debian's `fonts-noto-color-emoji` into the cache, the names of its
pictures, and the painter that draws the composed caption corpus's scenes (`captions.py`).

The package is fetched with `apt-get download` and unpacked with `dpkg-deb -x` (no system install). Pillow draws a
glyph at 109 px, the font's one bitmap size, with `embedded_color=True`; we crop and resize it.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from unforced.errors import UnforcedError
from unforced.tasks.cache import default_cache_dir, unpack_packages

if TYPE_CHECKING:
    from unforced.tasks.captions import Scene

PACKAGE = "fonts-noto-color-emoji"
FONT_FILE = Path("usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
GLYPH_PIXELS = 109  # the bitmap size of the CBDT font: Pillow draws it at exactly this size
CANVAS = 128  # pixels a side of a written image; the image codec resizes it for the model
# Emoji blocks of pictures (not the symbol, arrow and letter blocks); names with these words are left out: symbols,
# and words the grammar uses for colours, sizes, shapes and places.
EMOJI_BLOCKS = ((0x2600, 0x27BF), (0x1F300, 0x1F5FF), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF))
EXCLUDED_WORDS = frozenset(
    "SIGN SYMBOL ARROW BUTTON KEYCAP LETTER DIGIT REGIONAL MODIFIER SQUARED CIRCLED TAG FLAG CLOCK BLACK WHITE "
    "SQUARE CIRCLE TRIANGLE DIAMOND STAR LARGE MEDIUM SMALL BIG TINY LEFT RIGHT UP DOWN TOP BOTTOM MIDDLE RED "
    "BLUE GREEN YELLOW PURPLE ORANGE PINK BROWN GREY GRAY AND OF ON WITH IN HEAVY MARK".split())

COLOURS = {"red": (214, 39, 40), "blue": (31, 90, 220), "green": (44, 160, 44), "yellow": (245, 205, 30),
           "purple": (140, 70, 190), "orange": (250, 135, 20), "pink": (245, 150, 200), "white": (245, 245, 245),
           "black": (25, 25, 25), "grey": (128, 128, 128)}

def obtain_font(cache_dir: Path | str | None = None) -> Path:
    """NotoColorEmoji.ttf, unpacked from Debian's package into `cache_dir/fonts-noto-color-emoji` if absent.

    The package is unpacked into a scratch folder and renamed into place in one step, so a half-done extraction is
    never taken for a finished one."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / PACKAGE
    unpack_packages(lambda: [PACKAGE], target, lambda root: (root / FONT_FILE).is_file(),
                    lambda reason: _how_to_get(reason, cache_dir), f"the package holds no {FONT_FILE.name}")
    return target / FONT_FILE


def _how_to_get(reason: str, cache_dir: Path) -> str:
    return (f"cannot fetch the emoji font ({reason}): run `apt-get download {PACKAGE}` and `dpkg-deb -x "
            f"<package>.deb {cache_dir / PACKAGE}`, or set UNFORCED_CACHE to a folder that holds it; a caption "
            "manifest of your own (`--task my_captions.jsonl`) needs no font")


def emoji_names(font_path: Path) -> dict[int, str]:
    """Code point -> lower-case name of every single-code-point picture emoji the font draws, in code point order.

    The font's character map is read with fontTools (a dependency of matplotlib)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(font_path), lazy=True) as font:
        mapped = font.getBestCmap()
    names = {}
    for point in sorted(mapped):
        if not any(low <= point <= high for low, high in EMOJI_BLOCKS):
            continue
        name = unicodedata.name(chr(point), "")
        words = name.split()
        # A name that is already plural ("fireworks", "paw prints") would read "a fireworks" and "two fireworkses".
        already_plural = bool(words) and words[-1].endswith("S") and not words[-1].endswith(("SS", "US", "IS"))
        if name and len(words) <= 3 and not EXCLUDED_WORDS & set(words) and not already_plural:
            names[point] = name.lower()
    return names


# --- drawing --------------------------------------------------------------------------------------------------------

class Painter:
    """Draws scenes: emoji glyphs rendered once at the font's size, cropped, then resized per size (cached)."""

    def __init__(self, font_path: Path):
        from PIL import ImageFont

        self.font = ImageFont.truetype(str(font_path), GLYPH_PIXELS)
        self.glyphs: dict[int, object] = {}
        self.resized: dict[tuple[int, int], object] = {}

    def glyph(self, point: int, pixels: int):
        from PIL import Image, ImageDraw

        if point not in self.glyphs:
            canvas = Image.new("RGBA", (GLYPH_PIXELS * 3 // 2, GLYPH_PIXELS * 3 // 2), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((0, 0), chr(point), font=self.font, embedded_color=True)
            box = canvas.getbbox()
            if box is None:
                raise UnforcedError(f"the emoji font draws nothing for U+{point:04X}")
            self.glyphs[point] = canvas.crop(box)
        key = (point, pixels)
        if key not in self.resized:
            glyph = self.glyphs[point]
            scale = pixels / max(glyph.size)
            self.resized[key] = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
                                             Image.Resampling.LANCZOS)
        return self.resized[key]

    def draw(self, scene: Scene):
        from PIL import ImageDraw

        image = _background_image(scene.background, scene.pattern)
        pen = ImageDraw.Draw(image)
        for item in scene.items:
            x, y = item.centre[0] * CANVAS, item.centre[1] * CANVAS
            if item.point is not None:
                glyph = self.glyph(item.point, item.pixels)
                image.paste(glyph, (round(x - glyph.width / 2), round(y - glyph.height / 2)), glyph)
                continue
            r, fill = item.pixels / 2, COLOURS[item.colour]
            outline = (0, 0, 0) if item.colour != "black" else (255, 255, 255)
            if item.name == "circle":
                pen.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline)
            elif item.name == "square":
                pen.rectangle((x - r * 0.85, y - r * 0.85, x + r * 0.85, y + r * 0.85), fill=fill, outline=outline)
            elif item.name == "triangle":
                pen.polygon([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], fill=fill, outline=outline)
            else:
                pen.polygon(_star(x, y, r), fill=fill, outline=outline)
        return image.convert("RGB") if image.mode != "RGB" else image


def _star(x: float, y: float, r: float) -> list[tuple[float, float]]:
    return [(x + (r if k % 2 == 0 else r * 0.45) * math.sin(math.pi * k / 5),
             y - (r if k % 2 == 0 else r * 0.45) * math.cos(math.pi * k / 5)) for k in range(10)]


def _background_image(colour: str, pattern: str):
    from PIL import Image, ImageDraw

    base = COLOURS[colour]
    # The pattern's second tone: the colour lightened (or darkened when it is already light).
    light = sum(base) > 500
    other = tuple(max(0, c - 50) if light else min(255, c + 60) for c in base)
    image = Image.new("RGB", (CANVAS, CANVAS), base)
    pen = ImageDraw.Draw(image)
    if pattern == "striped":
        for left in range(0, CANVAS, 16):
            pen.rectangle((left, 0, left + 7, CANVAS), fill=other)
    elif pattern == "checkered":
        for top in range(0, CANVAS, 16):
            for left in range((top // 16) % 2 * 16, CANVAS, 32):
                pen.rectangle((left, top, left + 15, top + 15), fill=other)
    elif pattern == "gradient":
        for row in range(CANVAS):
            share = row / (CANVAS - 1)
            pen.line((0, row, CANVAS, row), fill=tuple(round(b + (o - b) * share) for b, o in zip(base, other,
                                                                                                    strict=True)))
    return image



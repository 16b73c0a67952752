"""Check what a picture shows: its most common colour, and how much of it that colour covers."""

from __future__ import annotations

from collections import Counter
from typing import IO

from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def dominant(source: str | IO[bytes]) -> tuple[tuple[int, ...], float]:
    """The most common colour (channels rounded to multiples of 32, capped at 255) and its share."""
    with Image.open(source) as image:
        small = image.convert("RGB").resize((40, 25))
    counts: Counter[tuple[int, ...]] = Counter()
    for count, pixel in small.getcolors(40 * 25) or []:
        counts[tuple(min(255, 32 * round(c / 32)) for c in pixel)] += count
    colour, count = counts.most_common(1)[0]
    return colour, count / (40 * 25)

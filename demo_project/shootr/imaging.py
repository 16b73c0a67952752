"""Thumbnails: the top of a screenshot, small enough for a grid of them on one page."""

from __future__ import annotations

import io

from PIL import Image

THUMBNAIL_SIZE = (400, 250)  # the 16:10 of the 1280x800 viewport


def make_thumbnail(png: bytes, size: tuple[int, int] = THUMBNAIL_SIZE) -> bytes:
    """A JPEG of the first screenful of ``png``, scaled down to ``size``."""
    width, height = size
    with Image.open(io.BytesIO(png)) as image:
        image = image.convert("RGB")
        top = image.crop((0, 0, image.width, min(image.height, image.width * height // width)))
        top.thumbnail(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        top.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()

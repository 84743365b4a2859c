"""What a downloaded file really is, judged from its bytes, within pixel limits.

Names and Content-Type headers lie (a ``.png`` that is an SVG document, a thumbnail that is an
HTML error page); the bytes decide. Pillow decodes rasters only after the header's pixel count
has been checked, so a decompression bomb (a small file that expands to gigapixels) is refused
before it can take the memory.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

_SVG_PROLOG = re.compile(rb"^(?:<\?xml[^>]*>|<!--.*?-->|<!DOCTYPE[^>]*>|\s)*<svg[\s>:]", re.S | re.I)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError, Image.DecompressionBombError,
                 Image.DecompressionBombWarning)


class TooManyPixels(Exception):
    """A raster whose header promises more pixels than allowed (a decompression bomb, or just too big)."""


def is_svg(body: bytes) -> bool:
    """An SVG document, possibly after a byte-order mark, an XML declaration, comments, a DOCTYPE."""
    head = body[:8192].removeprefix(b"\xef\xbb\xbf")
    return bool(_SVG_PROLOG.match(head))


SVG_SUFFIXES = (".svg", ".svgz")


def svg_by_name(file_name: str) -> bool:
    return file_name.lower().endswith(SVG_SUFFIXES)


@dataclass(frozen=True)
class ImageFacts:
    format: str | None  # JPEG, PNG, GIF, WEBP, ..., SVG; None when the bytes are not recognised
    width: int | None  # None for SVG and for undecodable bytes
    height: int | None
    problem: str  # "" when the bytes decode (or are SVG, which the raster decoder does not judge)


def max_pixels_problem(max_pixels: int) -> str | None:
    """Pillow refuses above 2x its own limit on its own; ours must stay below so ours decides."""
    if not 1 <= max_pixels <= (Image.MAX_IMAGE_PIXELS or max_pixels):
        return f"max_pixels={max_pixels} must be between 1 and Pillow's limit {Image.MAX_IMAGE_PIXELS}"
    return None


def inspect_image(body: bytes, max_pixels: int) -> ImageFacts:
    """Format, size and decodability of ``body``; raises ``TooManyPixels`` for bombs."""
    if is_svg(body):
        return ImageFacts("SVG", None, None, "")
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice that: any warning is a refusal here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(body))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise TooManyPixels(str(exc)) from None
        except DECODE_ERRORS as exc:
            return ImageFacts(None, None, None, f"not a recognised image ({type(exc).__name__})")
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise TooManyPixels(f"{width}x{height} pixels exceed max_pixels={max_pixels}")
            try:
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise TooManyPixels(str(exc)) from None
            except DECODE_ERRORS as exc:
                return ImageFacts(image.format, None, None, f"{image.format} does not decode ({type(exc).__name__}: {exc})"[:200])
            return ImageFacts(image.format, width, height, "")

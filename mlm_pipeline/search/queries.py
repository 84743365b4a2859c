"""What a query may be, checked before any model sees it; each refusal has its HTTP status.

Uploaded images are judged by their bytes, with the same pixel-limited inspection the image
download uses (``download.validate.inspect_image``): the header's pixel count is checked
before anything is decoded, so a decompression bomb (a few kilobytes promising gigapixels) is
refused without taking the memory. Only a few raster formats are opened at all: Pillow can
hand other formats to external programs (EPS to Ghostscript), which a server must not do for a
stranger's bytes.

Statuses: 413 for too many bytes or pixels, 415 for a body that is not declared as an image,
422 for a body or text that cannot be used (not a raster image we accept, undecodable, empty,
too long, a bad ``k``).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from mlm_pipeline.download.validate import DECODE_ERRORS, TooManyPixels, inspect_image, max_pixels_problem

ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")


class QueryError(ValueError):
    """A refused query: ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class QueryLimits:
    max_bytes: int = 8 << 20  # an upload; the image download's own limit per file
    max_pixels: int = 25_000_000  # width x height of an upload; the download's limit too
    max_text_chars: int = 2000  # four chunks of the text encoder
    max_k: int = 100
    default_k: int = 10

    def __post_init__(self) -> None:
        if (problem := max_pixels_problem(self.max_pixels)) is not None:
            raise ValueError(problem)
        for name in ("max_bytes", "max_text_chars", "max_k", "default_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k={self.default_k} is above max_k={self.max_k}")


@dataclass(frozen=True)
class UploadedImage:
    content: bytes
    format: str  # as the bytes say, one of ACCEPTED_FORMATS
    width: int
    height: int


def parse_k(value: str | None, limits: QueryLimits) -> int:
    if value is None or value == "":
        return limits.default_k
    try:
        k = int(value)
    except ValueError:
        raise QueryError(422, f"k={value!r} is not a whole number") from None
    if not 1 <= k <= limits.max_k:
        raise QueryError(422, f"k={k} must be between 1 and {limits.max_k}")
    return k


def check_text(text: str | None, limits: QueryLimits) -> str:
    cleaned = (text or "").strip()
    if not cleaned:
        raise QueryError(422, "text is empty: give a text to search with, e.g. ?text=a+harbour+town")
    if len(cleaned) > limits.max_text_chars:
        raise QueryError(422, f"text has {len(cleaned)} characters; at most {limits.max_text_chars} are accepted")
    return cleaned


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not media.startswith("image/"):
        raise QueryError(415, f"Content-Type {media or '(none)'!r} is not an image type; send image/jpeg, image/png, ...")


def check_declared_length(length: str | None, limits: QueryLimits) -> None:
    """Refuse a body that says it is too large before reading any of it."""
    if length is not None and length.isdigit() and int(length) > limits.max_bytes:
        raise QueryError(413, f"the image has {int(length)} bytes; at most {limits.max_bytes} are accepted")


def check_image(body: bytes, limits: QueryLimits) -> UploadedImage:
    if len(body) > limits.max_bytes:
        raise QueryError(413, f"the image has more than {limits.max_bytes} bytes, the most accepted")
    if not body:
        raise QueryError(422, "the request body is empty: send the image's bytes")
    names = "/".join(ACCEPTED_FORMATS)
    try:
        with warnings.catch_warnings():  # Pillow only warns between its limit and twice that
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body), formats=ACCEPTED_FORMATS) as opened:
                declared = opened.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise QueryError(413, f"the image has too many pixels: {error}") from None
    except (UnidentifiedImageError, *DECODE_ERRORS):
        raise QueryError(422, f"the body is not a {names} image") from None
    try:
        facts = inspect_image(body, limits.max_pixels)
    except TooManyPixels as error:
        raise QueryError(413, f"the image has too many pixels: {error}") from None
    if facts.problem or facts.width is None or facts.height is None:
        raise QueryError(422, f"the {declared} image does not decode: {facts.problem}")
    return UploadedImage(body, facts.format or declared or "", facts.width, facts.height)

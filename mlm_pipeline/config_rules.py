"""Rules for configuration values that several ``Config`` classes share, each written once.

A bad value must be refused when a run starts, before any query (``run_checks``), so every rule
is a pydantic validator that runs when the ``Config`` is built. Plain ranges are ``Field``
constraints in the classes themselves; the rules below are the ones with a pattern or a list of
allowed values. Composite rules (thresholds in order, shares that sum to 1) are checked by the
pure settings objects (``CellParams``, ``TrainSettings``, ...) that each ``Config`` builds in a
model validator, so the pipeline and the plain functions refuse the same values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

from mlm_pipeline.download.images import STANDARD_WIDTHS
from mlm_pipeline.download.validate import max_pixels_problem
from mlm_pipeline.sparql.extraction import LABEL_LANGUAGES
from mlm_pipeline.sparql.queries import check_languages, check_properties, check_qid

DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def _qid(value: str, info: ValidationInfo) -> str:
    return check_qid(str(info.field_name), value)


def _languages(values: list[str], info: ValidationInfo) -> list[str]:
    """Plain language codes with a ``title_<lang>`` column in the entities table: a code also
    becomes part of a Wikipedia API URL, where ``../`` or ``en}`` must never arrive."""
    return check_languages(str(info.field_name), values, LABEL_LANGUAGES)


def _properties(values: list[str], info: ValidationInfo) -> list[str]:
    return check_properties(str(info.field_name), values)


def _device(value: str) -> str:
    """The name's form only: whether this machine has the device is known where the step runs."""
    if not DEVICE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


def _existing(value: str) -> str:
    """A file or folder given by the person: a typo should fail now, not after the downloads."""
    if value and not Path(value).expanduser().exists():
        raise ValueError(f"{value!r} does not exist (leave it empty for the default)")
    return value


def _width(value: int) -> int:
    if value not in STANDARD_WIDTHS:
        raise ValueError(f"{value} is not one of Commons' standard thumbnail widths {STANDARD_WIDTHS}")
    return value


def _max_pixels(value: int) -> int:
    if (problem := max_pixels_problem(value)) is not None:
        raise ValueError(problem)
    return value


Qid = Annotated[str, AfterValidator(_qid)]
LanguageCodes = Annotated[list[str], AfterValidator(_languages)]
PropertyIds = Annotated[list[str], AfterValidator(_properties)]
Device = Annotated[str, AfterValidator(_device)]
ExistingPath = Annotated[str, AfterValidator(_existing)]
ThumbnailWidth = Annotated[int, AfterValidator(_width)]
PixelLimit = Annotated[int, AfterValidator(_max_pixels)]

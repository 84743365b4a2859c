"""The three systems of the benchmark and the losses that train each.

Kept free of torch because the Dagster code location needs these names to define its assets,
and every step process imports the code location.
"""

from __future__ import annotations

from typing import Literal

Task = Literal["multitask", "ir", "le"]
TASKS: tuple[Task, ...] = ("multitask", "ir", "le")

RETRIEVAL = "retrieval"
LOCATION_IMAGE = "location_image"
LOCATION_TEXT = "location_text"
LOSS_NAMES = (RETRIEVAL, LOCATION_IMAGE, LOCATION_TEXT)

TASK_LOSSES: dict[Task, tuple[str, ...]] = {
    "multitask": (RETRIEVAL, LOCATION_IMAGE, LOCATION_TEXT),
    "ir": (RETRIEVAL,),
    "le": (LOCATION_IMAGE, LOCATION_TEXT),
}

"""What a package must hold true to be handed on: checksums that match, every image credited.

Used by the ``release_package`` asset check and by anyone who received a package (``python -c
"from mlm_pipeline.release_package.verify import problems; print(problems(folder))"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow.csv as pv
import pyarrow.parquet as pq

from mlm_pipeline.release_package.attribution import ATTRIBUTION
from mlm_pipeline.release_package.build import MANIFEST, read_manifest, sha256_of


def manifest_problems(folder: Path) -> Iterator[tuple[str, str]]:
    """(path, reason) for every file that is missing, changed, or not in ``SHA256SUMS``."""
    listed = read_manifest(folder)
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}
    for path in sorted(set(listed) | present):
        if path not in present:
            yield path, "missing"
        elif path not in listed:
            yield path, "unlisted"
        elif sha256_of(folder / path) != listed[path]:
            yield path, "sha256_differs"


def attribution_problems(folder: Path) -> Iterator[tuple[str, str]]:
    """(file name, reason) for every packaged image without licence and credit line that is not
    listed with the reason it has none."""
    table = pv.read_csv(folder / "attribution.csv", convert_options=pv.ConvertOptions(
        column_types=ATTRIBUTION, strings_can_be_null=True))
    rows = {r["file_name"]: r for r in table.select(["file_name", "license", "attribution", "attribution_required",
                                                     "status", "reason"]).to_pylist()}
    for name, row in rows.items():
        credited = row["attribution"] is not None or row["attribution_required"] is False
        if row["status"] == "ok" and (row["license"] is None or not credited):
            yield name, "ok_without_licence_or_credit"
        if row["status"] != "ok" and not row["reason"]:
            yield name, "status_without_reason"
    for shard in sorted((folder / "data").rglob("*.parquet")):
        for batch in pq.ParquetFile(shard).iter_batches(columns=["image_files"]):
            for files in batch.column("image_files").to_pylist():
                for image in files:
                    if image["file_name"] not in rows:
                        yield image["file_name"], "not_in_attribution_table"


def problems(folder: Path) -> list[tuple[str, str]]:
    return [*manifest_problems(folder), *attribution_problems(folder)]

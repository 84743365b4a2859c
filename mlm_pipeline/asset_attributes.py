"""What the Dagster UI shows of each asset besides its code: its stage group, kinds, owner,
column docs and a code version derived from its source.

Kept in one place and applied in ``definitions.py``, so a stage module holds only its logic and
the catalog reads in pipeline order: extraction, downloads, geo, versions, features, models,
evaluation, search, operations, publishing.
"""

from __future__ import annotations

import ast
import hashlib
import io
import re
import tokenize
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from types import ModuleType

import pyarrow as pa
from dagster import AssetsDefinition, AssetSpec, TableColumn, TableSchema, map_asset_specs

from mlm_pipeline import schemas

PACKAGE_ROOT = Path(__file__).resolve().parent
OWNERS = ["team:mlm-pipeline"]


STAGE_ATTRIBUTES: dict[str, tuple[str, set[str]]] = {
    # stage module: (group, kinds)
    "classes": ("extraction", {"sparql", "parquet"}),
    "entities": ("extraction", {"sparql", "parquet"}),
    "summaries": ("downloads", {"wikipedia", "parquet"}),
    "images": ("downloads", {"wikimedia", "parquet"}),
    "filtering": ("downloads", {"pillow", "parquet"}),
    "geocells": ("geo", {"s2", "parquet"}),
    "versions": ("versions", {"python", "parquet"}),
    "features": ("features", {"pytorch", "parquet"}),
    "training": ("models", {"pytorch", "parquet"}),
    "evaluation": ("evaluation", {"pytorch", "parquet"}),
    "search_index": ("search", {"pytorch", "parquet"}),
    "release_diff": ("operations", {"python", "parquet"}),
    "package": ("publishing", {"huggingface", "parquet"}),
}
"""Every module of ``definitions.STAGES`` has a row; a new stage without one fails at import."""


def with_attributes(stage: ModuleType, assets: Iterable[AssetsDefinition]) -> list[AssetsDefinition]:
    """The stage's assets with its group, kinds, owner, column schema and code version."""
    name = stage.__name__.rsplit(".", 1)[-1]
    if name not in STAGE_ATTRIBUTES:
        raise KeyError(f"stage module {stage.__name__} has no row in asset_attributes.STAGE_ATTRIBUTES")
    group, kinds = STAGE_ATTRIBUTES[name]
    version = code_version(stage.__name__)

    def attribute(spec: AssetSpec) -> AssetSpec:
        metadata = dict(spec.metadata)
        if (columns := column_schema(spec.key.to_user_string())) is not None:
            metadata["dagster/column_schema"] = columns
        return spec.replace_attributes(
            group_name=group, code_version=version, owners=OWNERS, kinds=kinds, metadata=metadata
        )

    return list(map_asset_specs(attribute, assets))


# --- code versions ----------------------------------------------------------------------------


@cache
def code_version(module: str) -> str:
    """sha256 (12 hex digits) of the sources of ``module`` and of every ``mlm_pipeline`` module
    it imports, directly or not, leaving out the embedded world (a source, whose content the
    release's identity already names). A change to a stage's logic, or to any rule or client it
    uses, shows as code drift in the UI; an edit of another stage's module does not. Shared
    modules (config rules, provenance, storage) reach every stage, so the version errs on the
    side of drift."""
    digest = hashlib.sha256()
    for path in sorted(imported_sources(module)):
        digest.update(str(path.relative_to(PACKAGE_ROOT)).encode() + b"\0" + _file_sha256(path) + b"\0")
    return digest.hexdigest()[:12]


@cache
def _file_sha256(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def _source_of(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "mlm_pipeline" or parts[1:2] == ["world"]:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_sources(module: str) -> set[Path]:
    seen: set[Path] = set()
    stack = [module]
    while stack:
        path = _source_of(stack.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        stack.extend(_imports(path))
    return seen


@cache
def _imports(path: Path) -> tuple[str, ...]:
    """Every module ``path`` names in an import (the project uses absolute imports only); each
    file is parsed once per process, though every stage's walk passes through the shared ones."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)  # submodules imported by name
    return tuple(names)


# --- column docs ------------------------------------------------------------------------------

TABLES: dict[str, str] = {
    "settlement_classes": "SETTLEMENT_CLASSES",
    "entities": "ENTITIES",
    "summaries": "SUMMARIES",
    "images": "IMAGES",
    "images_filtered": "IMAGES",
    "geo_cells": "GEO_CELLS",
    "entity_cells": "ENTITY_CELLS",
    "mlm": "VERSION",
    "mlm_irle": "VERSION",
    "mlm_irle_gr": "VERSION",
    "mlm_irle_gr_cells": "GEO_CELLS",
    "splits": "SPLITS",
    "dataset_stats": "DATASET_STATS",
    "release_diff": "RELEASE_DIFF",
    "image_features": "IMAGE_FEATURES",
    "text_features": "text_features_schema",
    "class_features": "class_features_schema",
    "search_index": "search_index_schema",
    "retrieval_results": "RETRIEVAL_RESULTS",
    "location_results": "LOCATION_RESULTS",
    "release_package": "PACKAGE_MANIFEST",
}
"""The name in ``schemas`` of each table asset's schema; dropout tables and the models'
learning curves are recognised by their names."""


def schema_name(asset: str) -> str | None:
    if asset.endswith(("_dropouts", "_failures")):
        return "DROPOUTS"
    if asset.startswith("model_"):
        return "LEARNING_CURVE"
    return TABLES.get(asset)


def column_schema(asset: str) -> TableSchema | None:
    """The asset's columns with their types and the comments ``schemas.py`` gives them (a vector
    whose width depends on the run's encoder or model reads ``[dim]``)."""
    name = schema_name(asset)
    if name is None:
        return None
    value = getattr(schemas, name)
    schema: pa.Schema = value(0) if callable(value) else value
    notes = column_notes().get(name, {})
    return TableSchema(
        columns=[TableColumn(name=f.name, type=_type_name(f.type), description=notes.get(f.name)) for f in schema]
    )


def _type_name(kind: pa.DataType) -> str:
    if isinstance(kind, pa.FixedSizeListType):
        return f"list<{kind.value_type}>[{kind.list_size or 'dim'}]"
    return str(kind)


BLOCK = re.compile(r"^(?:([A-Z_]+) = pa\.schema\(|def (\w+_schema)\()")
FIELD = re.compile(r'^\s*\[?\s*\("(\w+)",')


@cache
def column_notes() -> dict[str, dict[str, str]]:
    """Schema name -> column -> the comment beside that column in schemas.py: those comments are
    the project's column docs, and reading them keeps one copy of each."""
    lines = Path(schemas.__file__).read_text().splitlines()
    notes: dict[str, dict[str, str]] = {}
    block = None
    for number, line in enumerate(lines, start=1):
        if match := BLOCK.match(line):
            block = match.group(1) or match.group(2)
        elif not line.startswith((" ", "\t")) and line.strip():
            block = None  # left the block
        if block is None or not (field := FIELD.match(line)):
            continue
        comments = [t.string for t in tokenize.generate_tokens(io.StringIO(line).readline) if t.type == tokenize.COMMENT]
        if comments:
            notes.setdefault(block, {})[field.group(1)] = comments[0].lstrip("#").strip()
    return notes

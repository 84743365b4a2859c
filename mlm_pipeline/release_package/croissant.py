"""Croissant 1.1 metadata (``croissant.json``): the files, one record set per version, its fields.

Croissant is the JSON-LD vocabulary dataset search engines and ML loaders read; with it the
release is findable with its licences per part and loadable without reading the card. Field
types follow the Parquet schema of the shards (``rows.ROW``); the split of a record is read
from its shard's file name, as the hub does.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from mlm_pipeline.geo.versions import SPLIT_NAMES, VERSIONS
from mlm_pipeline.release_package.card import CITATION
from mlm_pipeline.release_package.rows import DESCRIPTIONS, ROW

CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
LICENCES = [
    {"@type": "sc:CreativeWork", "name": "CC0 1.0 (facts from Wikidata and values derived from them)",
     "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
    {"@type": "sc:CreativeWork", "name": "CC BY-SA 4.0 (Wikipedia introductions, column summaries)",
     "url": "https://creativecommons.org/licenses/by-sa/4.0/"},
    {"@type": "sc:CreativeWork", "name": "Each image its own Commons licence (columns images, image_files; attribution.csv)",
     "url": "LICENSE.md"},
]
DATA_TYPES = {pa.string(): "sc:Text", pa.float64(): "sc:Float", pa.int32(): "sc:Integer", pa.int64(): "sc:Integer",
              pa.bool_(): "sc:Boolean",
              pa.binary(): "sc:ImageObject"}  # the only binary column: an image's bytes


def semantic_version(release: str) -> str:
    """A release key as the ``MAJOR.MINOR.PATCH`` Croissant asks for: 2026-01-05 is 2026.1.5."""
    numbers = [int(n) for n in re.findall(r"\d+", release)][:3]
    return ".".join(str(n) for n in numbers + [0] * (3 - len(numbers)))


def _field(version: str, name: str, kind: pa.DataType, parent: str = "", in_array: bool = False) -> dict[str, Any]:
    """A column as a field; a struct (or list of structs) as a field with one sub-field per
    member, each read from the column by its JSON path (one value per element of a list)."""
    field_id = f"{version}/{parent}/{name}" if parent else f"{version}/{name}"
    entry: dict[str, Any] = {"@type": "cr:Field", "@id": field_id, "name": field_id,
                             "description": DESCRIPTIONS.get(name, name)}
    source: dict[str, Any] = {"fileSet": {"@id": f"{version}-parquet"}, "extract": {"column": parent or name}}
    if parent:
        source["transform"] = {"jsonPath": name}
    if in_array:
        entry["repeated"] = True
    if pa.types.is_list(kind):
        entry["isArray"] = True
        kind = kind.value_type
    if pa.types.is_struct(kind):
        entry["dataType"] = "cr:RecordSet"
        entry["subField"] = [_field(version, sub.name, sub.type, name, "isArray" in entry) for sub in kind]
    else:
        entry.update(dataType=DATA_TYPES[kind], source=source)
    return entry


def _record_set(version: str) -> dict[str, Any]:
    split_pattern = "|".join(SPLIT_NAMES)
    split = {
        "@type": "cr:Field", "@id": f"{version}/split", "name": f"{version}/split", "dataType": "sc:Text",
        "description": "the split the entity belongs to",
        "source": {"fileSet": {"@id": f"{version}-parquet"}, "extract": {"fileProperty": "fullpath"},
                   "transform": {"regex": f"^.*/({split_pattern})-\\d+-of-\\d+\\.parquet$"}},
        "references": {"field": {"@id": "splits/split_name"}},
    }
    return {
        "@type": "cr:RecordSet", "@id": version, "name": version,
        "description": f"{version}: one record per entity",
        "key": {"@id": f"{version}/qid"},
        "field": [split, *(_field(version, f.name, f.type) for f in ROW)],
    }


def croissant(release: str, description: str, files: list[dict[str, Any]], languages: list[str]) -> dict[str, Any]:
    """The JSON-LD document; ``files``: path, sha256, bytes of every file it describes."""
    objects = [
        {"@type": "cr:FileObject", "@id": f["path"], "name": f["path"], "contentUrl": f["path"],
         "encodingFormat": _format(f["path"]), "sha256": f["sha256"], "contentSize": f"{f['bytes']} B"}
        for f in files
    ]
    sets = [
        {"@type": "cr:FileSet", "@id": f"{version}-parquet", "name": f"{version}-parquet",
         "description": f"the Parquet shards of {version}, one or more per split",
         "encodingFormat": "application/x-parquet", "includes": f"data/{version}/*.parquet"}
        for version in VERSIONS
    ]
    splits = {
        "@type": "cr:RecordSet", "@id": "splits", "name": "splits", "dataType": "cr:Split",
        "description": "train / val / test, by entity",
        "key": {"@id": "splits/split_name"},
        "field": [{"@type": "cr:Field", "@id": "splits/split_name", "name": "splits/split_name",
                   "description": "the split's name", "dataType": "sc:Text"}],
        "data": [{"splits/split_name": name} for name in SPLIT_NAMES],
    }
    dated = {"datePublished": release} if re.fullmatch(r"\d{4}-\d{2}-\d{2}", release) else {}
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.1",
        "name": f"MLM-{release}",
        "description": description,
        "citeAs": CITATION,
        "license": LICENCES,
        "version": semantic_version(release),
        **dated,
        "keywords": ["multimodal", "multilingual", "geolocation", "cross-modal retrieval", "Wikidata"],
        "inLanguage": languages,
        "distribution": [*objects, *sets],
        "recordSet": [splits, *(_record_set(version) for version in VERSIONS)],
    }


def _format(path: str) -> str:
    return {"parquet": "application/x-parquet", "csv": "text/csv", "md": "text/markdown", "json": "application/json",
            "png": "image/png"}.get(path.rpartition(".")[2], "application/octet-stream")

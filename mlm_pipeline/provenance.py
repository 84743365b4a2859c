"""What a materialisation came from, recorded as its metadata so a release can be rebuilt.

Two builds of a release give the same bytes only from the same source, data version, queries,
configuration, seed and library versions; when they do not, these records are where the
difference shows. Stages call ``provenance(...)`` with what they know and add the result to
their output metadata: ``context.add_output_metadata(provenance(source=wikimedia, ...))``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import platform
import re
from importlib import metadata as importlib_metadata
from typing import Any, Mapping, Sequence, TypeVar
from urllib.parse import urlparse

from dagster import AssetKey, AssetRecordsFilter, Config, DagsterInstance, MetadataValue

from mlm_pipeline.endpoints import Endpoints
from mlm_pipeline.resources import WikimediaResource

PACKAGES = (
    "mlm-pipeline",
    "dagster",
    "pyarrow",
    "pyoxigraph",
    "aiohttp",
    "pillow",
    "s2sphere",
    "duckdb",
    "numpy",
    "torch",
    "transformers",
)
"""The distributions whose version can change a table's bytes or a model's numbers."""


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions, read from distribution metadata so that nothing heavy is imported."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# user:password@ in a URL, and the values of query parameters that carry secrets (MediaWiki's
# and OAuth's tokens, API keys); a matching name is enough, whatever its case.
_USERINFO = re.compile(r"(?<=://)[^/?#@\s]+@")
_SECRET_PARAMETER = re.compile(
    r"(?i)([?&;](?:[\w.-]*(?:token|key|secret|password|passwd|pass|auth|sig|signature|credential)[\w.-]*)=)[^&;#\s]*"
)


def redacted(text: str) -> str:
    """``text`` with the credentials in its URLs replaced by ``***``: provenance is shown to
    everyone who can open the instance, and goes wherever the instance is copied."""
    return _SECRET_PARAMETER.sub(r"\1***", _USERINFO.sub("***@", text))


def source_description(source: WikimediaResource, release: str | None = None) -> str:
    """The source's identity (credentials redacted), plus the faults a test run injected into
    the embedded world."""
    if source.source == "embedded" and source.world_faults:
        return f"{source.identity(release)} faults={source.world_faults}"
    return redacted(source.identity(release))


def endpoint_entry(endpoints: Endpoints) -> MetadataValue:
    """A link to a SPARQL endpoint that stays; the embedded world's servers live on loopback
    ports for one step only, so a link there would lead nowhere once the step is done."""
    host = urlparse(endpoints.sparql_url).hostname or ""
    if host == "localhost" or (host.replace(".", "").isdigit() and ipaddress.ip_address(host).is_loopback):
        return MetadataValue.text("the embedded world's SPARQL server on loopback (a new port per step)")
    return MetadataValue.url(redacted(endpoints.sparql_url))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_dict(config: Config | Mapping[str, Any]) -> dict[str, Any]:
    return config.model_dump() if isinstance(config, Config) else dict(config)


C = TypeVar("C", bound=Config)


def recorded_metadata(instance: DagsterInstance, asset_name: str, release: str) -> Mapping[str, Any] | None:
    """The metadata of the asset's latest materialisation for the release; None if it has none."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset_name), asset_partitions=[release]), limit=1
    ).records
    materialization = records[0].asset_materialization if records else None
    return materialization.metadata if materialization is not None else None


def recorded_config(instance: DagsterInstance, asset_name: str, release: str, config_class: type[C]) -> C | None:
    """The configuration the asset recorded for this release (``provenance/config``), as
    ``config_class`` (fields it does not know are left out); None when nothing was recorded."""
    entry = (recorded_metadata(instance, asset_name, release) or {}).get("provenance/config")
    if entry is None:
        return None
    fields = config_class.model_fields
    return config_class(**{k: v for k, v in entry.value.items() if k in fields})


def provenance(
    *,
    source: WikimediaResource | None = None,
    endpoints: Endpoints | None = None,
    dataset_version: str | None = None,
    release: str | None = None,
    queries: Sequence[str] = (),
    config: Config | Mapping[str, Any] | None = None,
    seed: int | None = None,
    packages: Sequence[str] = PACKAGES,
) -> dict[str, MetadataValue]:
    """Metadata entries under ``provenance/``; pass what the stage knows, the rest is omitted."""
    entries: dict[str, MetadataValue] = {}
    if source is not None:
        entries["provenance/source"] = MetadataValue.text(source_description(source, release))
    if endpoints is not None:
        entries["provenance/endpoint"] = endpoint_entry(endpoints)
    if dataset_version is not None:
        entries["provenance/dataset_version"] = MetadataValue.text(dataset_version)
    if release is not None:
        entries["provenance/release"] = MetadataValue.text(release)
    if queries:
        entries["provenance/query_sha256"] = MetadataValue.json([text_sha256(q) for q in queries])
    if config is not None:
        settings = config_dict(config)
        entries["provenance/config"] = MetadataValue.json(settings)
        entries["provenance/config_sha256"] = MetadataValue.text(
            text_sha256(json.dumps(settings, sort_keys=True, default=str))
        )
    if seed is not None:
        entries["provenance/seed"] = MetadataValue.int(seed)
    # One line, not a JSON block on top of every asset page: what was installed matters when two
    # builds differ, and is the same for every asset of a run.
    versions = ", ".join(f"{name} {version}" for name, version in sorted(package_versions(packages).items()))
    entries["provenance/packages"] = MetadataValue.text(f"python {platform.python_version()}; {versions}")
    return entries

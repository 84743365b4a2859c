"""Stage 2: entity extraction (paper 3.3.3): instances of the settlement classes with
coordinates on Earth, an image and an article, and every dropped candidate with its reason."""

from collections import Counter
from typing import Iterator

import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, multi_asset
from pydantic import Field

from mlm_pipeline.assets.source_access import SparqlQueryConfig, query_metadata
from mlm_pipeline.assets.subsets import outs, selected
from mlm_pipeline import pools, schemas
from mlm_pipeline.config_rules import LanguageCodes, PropertyIds
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.sparql.extraction import REASONS, STAGE, Extraction, ExtractionSettings, extract_entities


class EntitiesConfig(SparqlQueryConfig):
    languages: LanguageCodes = Field(["en", "de", "fr"], description="an article in one of these is required")
    image_properties: PropertyIds = Field(["P18"], description="properties whose Commons files count as images")
    batch_size: int = Field(1_000, ge=1, le=5_000, description="candidates per VALUES block")
    class_batch: int = Field(50, ge=1, le=5_000, description="classes per candidate listing")


def unlisted_dropouts(
    wikimedia: WikimediaResource, release: str, extraction: Extraction, settlement_classes: pa.Table
) -> pa.Table:
    """Records of a person's own world that no settlement class reached (see
    ``own_files.unlisted_records``); none for Wikidata, whose other items are no records of MLM."""
    spec = wikimedia.world_spec(release) if wikimedia.source == "embedded" else None
    if spec is None or not spec.files:
        return schemas.empty(schemas.DROPOUTS)
    from mlm_pipeline.world.own_files import unlisted_records
    from mlm_pipeline.world.rdf import load_world

    listed = set(extraction.entities["qid"].to_pylist()) | set(extraction.dropouts["qid"].to_pylist())
    closure = dict(zip(settlement_classes["qid"].to_pylist(), settlement_classes["hops"].to_pylist()))
    rows = [
        {"qid": qid, "item": "", "stage": STAGE, "reason": reason, "detail": detail}
        for qid, reason, detail in unlisted_records(load_world(spec), listed, closure)
    ]
    return pa.Table.from_pylist(rows, schema=schemas.DROPOUTS)


def reasons_markdown(counts: Counter, candidates: int) -> str:
    lines = ["| reason | entities | share of candidates |", "|---|---:|---:|"]
    for reason in [*REASONS, *sorted(set(counts) - set(REASONS))]:
        share = counts[reason] / candidates if candidates else 0.0
        lines.append(f"| {reason} | {counts[reason]} | {share:.1%} |")
    return "\n".join(lines)


@multi_asset(
    outs=outs(
        entities="Settlements with coordinates on Earth, at least one image and an article in "
        "one of the configured languages (schemas.ENTITIES).",
        entity_dropouts="Every candidate that is not an entity, with the first constraint it fails "
        "(schemas.DROPOUTS, stage 'entities').",
    ),
    ins={"settlement_classes": AssetIn()},
    partitions_def=release_partitions,
    pool=pools.WIKIDATA_QUERY,
    can_subset=True,
)
def entities(
    context: AssetExecutionContext,
    config: EntitiesConfig,
    wikimedia: WikimediaResource,
    settlement_classes: pa.Table,
) -> Iterator[Output]:
    settings = ExtractionSettings(
        languages=tuple(config.languages),
        image_properties=tuple(config.image_properties),
        page_size=config.page_size,
        batch_size=config.batch_size,
        class_batch=config.class_batch,
    )
    classes = settlement_classes.column("qid").to_pylist()
    labels = dict(zip(classes, settlement_classes.column("label_en").to_pylist()))
    with wikimedia.open(context.partition_key) as endpoints, config.client(endpoints, context) as client:
        version = config.served_release(client, endpoints, wikimedia, context.partition_key)
        extraction = extract_entities(client, classes, settings, labels, log=context.log)
    unlisted = unlisted_dropouts(wikimedia, context.partition_key, extraction, settlement_classes)
    dropouts = schemas.sort_table(pa.concat_tables([extraction.dropouts, unlisted]), "entity_dropouts")
    candidates = extraction.candidates + unlisted.num_rows  # a person's every record counts as one
    counts = Counter(dropouts["reason"].to_pylist())
    common = provenance(
        source=wikimedia, endpoints=endpoints, dataset_version=version, release=context.partition_key, config=config
    )
    kept = extraction.entities.num_rows
    if selected(context, "entities"):
        yield Output(
            extraction.entities,
            output_name="entities",
            metadata={
                **common,
                "candidates": MetadataValue.int(candidates),
                "entities": MetadataValue.int(kept),
                "dropouts": MetadataValue.int(dropouts.num_rows),
                "dropouts_by_reason": MetadataValue.md(reasons_markdown(counts, candidates)),
                "queries_per_1000_entities": MetadataValue.float(round(1000 * client.stats.queries / max(kept, 1), 2)),
                **query_metadata(client.stats),
            },
        )
    if selected(context, "entity_dropouts"):
        yield Output(
            dropouts,
            output_name="entity_dropouts",
            metadata={
                **common,
                "dropouts_by_reason": MetadataValue.md(reasons_markdown(counts, candidates)),
            },
        )

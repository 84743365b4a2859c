"""Stage 3a: Wikipedia intro summaries (paper 3.3.4) for every entity's en/de/fr sitelinks."""

from typing import Iterator

from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, multi_asset
from pydantic import Field

from mlm_pipeline import pools, schemas, sql
from mlm_pipeline.assets.source_access import PoliteDownloadConfig, request_metadata
from mlm_pipeline.assets.subsets import outs, selected
from mlm_pipeline.config_rules import LanguageCodes
from mlm_pipeline.download.staging import Staging
from mlm_pipeline.download.summaries import (
    MAX_TITLES_PER_REQUEST,
    STAGED_SUMMARIES,
    SummaryPlan,
    assemble,
    fetch_summaries,
    wanted_titles,
)
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.shards import StoredTable
from mlm_pipeline.storage import StorageResource


class SummariesConfig(PoliteDownloadConfig):
    languages: LanguageCodes = Field(["en", "de", "fr"], description="Wikipedias to take intros from")
    batch_size: int = Field(
        MAX_TITLES_PER_REQUEST, ge=1, le=MAX_TITLES_PER_REQUEST, description="titles per TextExtracts request"
    )
    parallel_batches: int = Field(8, ge=1, description="batches in flight (a kill loses at most these)")
    max_bytes: int = Field(16 << 20, ge=1, description="largest API answer accepted")

    def plan(self) -> SummaryPlan:
        plan = SummaryPlan(langs=tuple(self.languages), batch_size=self.batch_size, max_bytes=self.max_bytes,
                           parallel_batches=self.parallel_batches, progress_every_s=self.progress_every_s)
        if problems := plan.problems():
            raise ValueError("summaries config: " + "; ".join(problems))
        return plan


@multi_asset(
    outs=outs(
        summaries="Plain-text Wikipedia intro per entity and language (schemas.SUMMARIES).",
        summary_dropouts="Every (entity, language) sitelink without a summary, with its reason "
        "(schemas.DROPOUTS, stage 'summaries': missing_page, empty_extract, http_..., timeout, ...).",
    ),
    ins={"entities": AssetIn()},
    partitions_def=release_partitions,
    pool=pools.WIKIPEDIA_API,
    can_subset=True,
)
def summaries(
    context: AssetExecutionContext,
    config: SummariesConfig,
    wikimedia: WikimediaResource,
    storage: StorageResource,
    entities: StoredTable,
) -> Iterator[Output]:
    release = context.partition_key
    plan = config.plan()
    folder = storage.folder("staging", release, wikimedia.identity_key(release), "summaries", plan.fingerprint())
    staging = Staging(folder, STAGED_SUMMARIES)
    with sql.connect(storage.spill()) as con:
        sql.register(con, entities=entities)
        keys = wanted_titles(con, plan.langs)
        with wikimedia.open(release) as endpoints:
            stats = fetch_summaries(keys, endpoints.wikipedia_api, config.politeness(endpoints), staging, plan,
                                    context.log.info)
        table, dropouts = assemble(con, staging, plan.langs)
        common = provenance(source=wikimedia, release=release, config=config)
        if selected(context, "summaries"):
            rows, qids = sql.row(con, f"SELECT count(*), count(DISTINCT qid) FROM ({table})")
            yield Output(sql.stream(con, table, schemas.SUMMARIES), output_name="summaries", metadata={
                **common,
                "summaries": MetadataValue.int(rows),
                "summaries_by_language": MetadataValue.json(sql.counts(con, table, "lang")),
                "entities_with_a_summary": MetadataValue.int(qids),
                "staging": MetadataValue.path(str(folder)),
                **request_metadata(stats, rows),
            })
        if selected(context, "summary_dropouts"):
            yield Output(sql.stream(con, dropouts, schemas.DROPOUTS), output_name="summary_dropouts", metadata={
                **common,
                "dropouts": MetadataValue.int(sql.scalar(con, f"SELECT count(*) FROM ({dropouts})")),
                "dropouts_by_reason": MetadataValue.json(sql.counts(con, dropouts, "reason")),
            })

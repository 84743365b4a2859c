"""Stage 3b: every image of every entity as a Commons thumbnail (paper 3.3.4), with licence."""

from typing import Iterator

from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, multi_asset
from pydantic import Field

from mlm_pipeline import pools, schemas, sql
from mlm_pipeline.assets.subsets import outs, selected
from mlm_pipeline.assets.source_access import PoliteDownloadConfig, request_metadata
from mlm_pipeline.config_rules import PixelLimit, ThumbnailWidth
from mlm_pipeline.download.images import (
    MAX_TITLES_PER_REQUEST,
    MEDIA_POOL,
    STAGED_IMAGES,
    ImagePlan,
    assemble,
    fetch_images,
    wanted_files,
)
from mlm_pipeline.download.staging import Staging
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.shards import StoredTable
from mlm_pipeline.storage import StorageResource

# Stored image URLs of the embedded world name this origin: its servers' ports change every run.
EMBEDDED_COMMONS = "http://commons.embedded-world.invalid"


class ImagesConfig(PoliteDownloadConfig):
    width: ThumbnailWidth = Field(250, description="thumbnail width; one of Commons' standard widths (others get 429)")
    media_concurrency: int = Field(
        2, ge=1, description="media downloads in flight over all media hosts together, at most (429s lower it for a while)")
    metadata_batch: int = Field(
        MAX_TITLES_PER_REQUEST, ge=1, le=MAX_TITLES_PER_REQUEST, description="files per imageinfo request"
    )
    max_bytes: int = Field(8 << 20, ge=1, description="largest image accepted; larger ones are refused and recorded")
    max_pixels: PixelLimit = Field(25_000_000, description="largest decoded image (width x height); bombs are refused")
    parallel_batches: int = Field(2, ge=1, description="metadata batches in flight (a kill loses at most these)")

    def plan(self, wikimedia: WikimediaResource) -> ImagePlan:
        plan = ImagePlan(width=self.width, metadata_batch=self.metadata_batch, max_bytes=self.max_bytes,
                         max_pixels=self.max_pixels, parallel_batches=self.parallel_batches,
                         progress_every_s=self.progress_every_s,
                         public_origin=EMBEDDED_COMMONS if wikimedia.source == "embedded" else "")
        if problems := plan.problems():
            raise ValueError("images config: " + "; ".join(problems))
        return plan


@multi_asset(
    outs=outs(
        images="Each entity's images as thumbnails at the configured width: sha256 (the bytes are in the "
        "release's blob store: mlm_pipeline.blobs.image_bytes), format from the content, size, source URL, "
        "licence and attribution (schemas.IMAGES).",
        image_failures="Every (entity, file) that could not be downloaded, with its reason and attempts "
        "(schemas.DROPOUTS, stage 'images': missing_file, http_..., timeout, too_large, too_many_pixels, ...).",
    ),
    ins={"entities": AssetIn()},
    partitions_def=release_partitions,
    pool=pools.WIKIMEDIA_MEDIA,
    can_subset=True,
)
def images(
    context: AssetExecutionContext,
    config: ImagesConfig,
    wikimedia: WikimediaResource,
    storage: StorageResource,
    entities: StoredTable,
) -> Iterator[Output]:
    release = context.partition_key
    plan = config.plan(wikimedia)
    folder = storage.folder("staging", release, wikimedia.identity_key(release), "images", plan.fingerprint())
    staging = Staging(folder, STAGED_IMAGES)
    blobs = storage.blobs(release)
    with sql.connect(storage.spill()) as con:
        sql.register(con, entities=entities)
        names = wanted_files(con)
        with wikimedia.open(release) as endpoints:
            politeness = config.politeness(endpoints, pools={MEDIA_POOL: config.media_concurrency})
            stats = fetch_images(names, endpoints.commons_api, endpoints.commons_filepath, politeness, staging,
                                 blobs, plan, context.log.info)
        table, failures = assemble(con, staging)
        common = provenance(source=wikimedia, release=release, config=config)
        if selected(context, "images"):
            rows, files, qids, size = sql.row(
                con, f"SELECT count(*), count(DISTINCT file_name), count(DISTINCT qid), coalesce(sum(n_bytes), 0) "
                f"FROM ({table})")
            yield Output(sql.stream(con, table, schemas.IMAGES), output_name="images", metadata={
                **common,
                "images": MetadataValue.int(rows),
                "files": MetadataValue.int(files),
                "entities_with_an_image": MetadataValue.int(qids),
                "formats": MetadataValue.json(sql.counts(con, table, "format")),
                "bytes": MetadataValue.int(int(size)),
                "staging": MetadataValue.path(str(folder)),
                "blobs": MetadataValue.path(str(blobs.root)),
                **request_metadata(stats, rows),
            })
        if selected(context, "image_failures"):
            yield Output(sql.stream(con, failures, schemas.DROPOUTS), output_name="image_failures", metadata={
                **common,
                "failures": MetadataValue.int(sql.scalar(con, f"SELECT count(*) FROM ({failures})")),
                "failures_by_reason": MetadataValue.json(sql.counts(con, failures, "reason")),
            })

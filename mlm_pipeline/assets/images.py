"""Stage 3b: every image of every entity as a Commons thumbnail (paper 3.3.4), with licence."""

from collections import Counter
from typing import Iterator

import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, AssetOut, MetadataValue, Output, multi_asset
from pydantic import Field

from mlm_pipeline.assets.summaries import PoliteDownloadConfig, reason_counts, request_metadata
from mlm_pipeline.download.images import MAX_TITLES_PER_REQUEST, MEDIA_POOL, ImagePlan, fetch_images
from mlm_pipeline import pools
from mlm_pipeline.config_rules import PixelLimit, ThumbnailWidth
from mlm_pipeline.partitions import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.resources import WikimediaResource
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
    outs={
        "images": AssetOut(
            description="Each entity's images as thumbnails at the configured width: bytes, sha256, format "
            "from the content, size, source URL, licence and attribution (schemas.IMAGES)."
        ),
        "image_failures": AssetOut(
            description="Every (entity, file) that could not be downloaded, with its reason and attempts "
            "(schemas.DROPOUTS, stage 'images': missing_file, http_..., timeout, too_large, too_many_pixels, ...)."
        ),
    },
    ins={"entities": AssetIn()},
    partitions_def=release_partitions,
    code_version="1",
    pool=pools.WIKIMEDIA_MEDIA,
)
def images(
    context: AssetExecutionContext,
    config: ImagesConfig,
    wikimedia: WikimediaResource,
    storage: StorageResource,
    entities: pa.Table,
) -> Iterator[Output]:
    plan = config.plan(wikimedia)
    folder = storage.folder("staging", context.partition_key, wikimedia.identity_key(context.partition_key), "images", plan.fingerprint())
    with wikimedia.open(context.partition_key) as endpoints:
        politeness = config.politeness(endpoints, pools={MEDIA_POOL: config.media_concurrency})
        table, failures, stats = fetch_images(
            entities, endpoints.commons_api, endpoints.commons_filepath, politeness, folder, plan, context.log.info)
    common = provenance(source=wikimedia, release=context.partition_key, config=config)
    yield Output(table, output_name="images", metadata={
        **common,
        "images": MetadataValue.int(table.num_rows),
        "files": MetadataValue.int(len(set(table["file_name"].to_pylist()))),
        "entities_with_an_image": MetadataValue.int(len(set(table["qid"].to_pylist()))),
        "formats": MetadataValue.json(dict(sorted(Counter(str(f) for f in table["format"].to_pylist()).items()))),
        "bytes": MetadataValue.int(sum(table["n_bytes"].to_pylist())),
        "staging": MetadataValue.path(str(folder)),
        **request_metadata(stats, table.num_rows),
    })
    yield Output(failures, output_name="image_failures", metadata={
        **common,
        "failures": MetadataValue.int(failures.num_rows),
        "failures_by_reason": MetadataValue.json(reason_counts(failures)),
    })

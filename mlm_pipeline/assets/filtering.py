"""Stage 4: SVG and undecodable images removed (paper 3.3.4), each removal recorded and counted."""

from typing import Iterator

from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, multi_asset
from pydantic import Field

from mlm_pipeline import schemas, sql
from mlm_pipeline.assets.subsets import outs, selected
from mlm_pipeline.config_rules import PixelLimit
from mlm_pipeline.download.filtering import filter_images
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.shards import StoredTable
from mlm_pipeline.storage import StorageResource


class ImagesFilteredConfig(Config):
    max_pixels: PixelLimit = Field(25_000_000, description="largest decoded image (width x height) kept")


@multi_asset(
    outs=outs(
        images_filtered="The images without SVGs (by content or by name: Commons renders SVGs as PNG "
        "thumbnails) and without files Pillow cannot decode (schemas.IMAGES; the same stored bytes as `images`).",
        image_dropouts="Every (entity, file) removed here, with its reason: svg, undecodable, "
        "too_many_pixels (schemas.DROPOUTS, stage 'images_filtered').",
    ),
    ins={"images": AssetIn()},
    partitions_def=release_partitions,
    can_subset=True,
)
def images_filtered(
    context: AssetExecutionContext, config: ImagesFilteredConfig, storage: StorageResource, images: StoredTable
) -> Iterator[Output]:
    blobs = storage.blobs(context.partition_key)
    with sql.connect(storage.spill()) as con:
        sql.register(con, images=images)
        filtered = filter_images(con, blobs.get, config.max_pixels)
        common = provenance(release=context.partition_key, config=config)
        counted = {
            "images_in": MetadataValue.int(images.num_rows),
            **{reason: MetadataValue.int(filtered.counts[reason]) for reason in ("kept", "svg", "undecodable",
                                                                                 "too_many_pixels")},
            "entities_left_without_image": MetadataValue.int(filtered.orphans),
        }
        if selected(context, "images_filtered"):
            yield Output(sql.stream(con, filtered.kept, schemas.IMAGES), output_name="images_filtered",
                         metadata={**common, **counted})
        if selected(context, "image_dropouts"):
            yield Output(sql.stream(con, filtered.dropouts, schemas.DROPOUTS), output_name="image_dropouts",
                         metadata={**common, **counted})

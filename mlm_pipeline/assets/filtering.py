"""Stage 4: SVG and undecodable images removed (paper 3.3.4), each removal recorded and counted."""

from typing import Iterator

import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, AssetOut, Config, MetadataValue, Output, multi_asset
from pydantic import Field

from mlm_pipeline.config_rules import PixelLimit
from mlm_pipeline.download.filtering import entities_without_images, filter_images
from mlm_pipeline.partitions import release_partitions
from mlm_pipeline.provenance import provenance


class ImagesFilteredConfig(Config):
    max_pixels: PixelLimit = Field(25_000_000, description="largest decoded image (width x height) kept")


@multi_asset(
    outs={
        "images_filtered": AssetOut(
            description="The images without SVGs (by content or by name: Commons renders SVGs as PNG "
            "thumbnails) and without files Pillow cannot decode (schemas.IMAGES)."
        ),
        "image_dropouts": AssetOut(
            description="Every (entity, file) removed here, with its reason: svg, undecodable, "
            "too_many_pixels (schemas.DROPOUTS, stage 'images_filtered')."
        ),
    },
    ins={"images": AssetIn()},
    partitions_def=release_partitions,
    code_version="1",
)
def images_filtered(
    context: AssetExecutionContext, config: ImagesFilteredConfig, images: pa.Table
) -> Iterator[Output]:
    kept, dropouts, counts = filter_images(images, config.max_pixels)
    orphans = entities_without_images(images, kept)
    common = provenance(release=context.partition_key, config=config)
    counted = {
        "images_in": MetadataValue.int(images.num_rows),
        "kept": MetadataValue.int(counts["kept"]),
        "svg": MetadataValue.int(counts["svg"]),
        "undecodable": MetadataValue.int(counts["undecodable"]),
        "too_many_pixels": MetadataValue.int(counts["too_many_pixels"]),
        "entities_left_without_image": MetadataValue.int(len(orphans)),
    }
    yield Output(kept, output_name="images_filtered", metadata={**common, **counted})
    yield Output(dropouts, output_name="image_dropouts", metadata={**common, **counted})

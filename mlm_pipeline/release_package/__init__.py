"""A release as a publishable dataset: Parquet shards per version and split that Hugging Face
``datasets`` loads with its images, a dataset card, Croissant metadata, licences and attribution
per image, checksums and provenance (``build.build_package``). No Dagster here: the
``release_package`` asset (``mlm_pipeline/assets/package.py``) gives it the stored tables."""

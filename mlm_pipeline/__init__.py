"""MLM (Multiple Languages and Modalities) as a reproducible Dagster pipeline."""

__version__ = "0.1.0"

"""Geography without Dagster: S2 geo-cells, offline reverse geocoding, and the dataset versions."""

"""The benchmark's model: networks, losses, data, training and metrics, free of Dagster."""

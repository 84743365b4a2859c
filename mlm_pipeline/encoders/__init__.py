"""Feature encoders: the paper's image descriptors and text embeddings, runnable without Dagster."""

"""Search a release by text or image: the index, queries, the world map and the web app, free of Dagster."""

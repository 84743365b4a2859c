"""Stage module: assets are added here by the stage's implementation."""

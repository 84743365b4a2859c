"""MLM (Multiple Languages and Modalities) as a reproducible Dagster pipeline."""

import os

__version__ = "0.1.0"

# OpenMP threads busy-wait between torch ops by default; on a small shared machine that burns
# the cores the other step needs (2.5x the CPU per image measured here). Set before any step
# imports torch; a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

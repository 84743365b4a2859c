"""Multi-assets whose outputs can be selected one by one (``--select '*dataset_stats'``).

A stage that computes several tables together (a table and its dropouts, the three dataset
versions) still runs as one step, but stores only the outputs the run selected, so any asset
or range of assets can be materialised from the UI or the CLI.
"""

from __future__ import annotations

from dagster import AssetExecutionContext, AssetKey, AssetOut


def outs(**descriptions: str) -> dict[str, AssetOut]:
    """One optional output per table, for ``multi_asset(outs=..., can_subset=True)``."""
    return {name: AssetOut(description=text, is_required=False) for name, text in descriptions.items()}


def selected(context: AssetExecutionContext, name: str) -> bool:
    """Whether this run stores the output ``name``."""
    return AssetKey(name) in context.selected_asset_keys

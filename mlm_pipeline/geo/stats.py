"""The paper's Table 2 (dataset details per version) and Figure 2 (MLM's entities by continent)."""

from __future__ import annotations

import base64
import io
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mlm_pipeline import schemas
from mlm_pipeline.geo.countries import continent_names
from mlm_pipeline.geo.versions import SPLIT_NAMES, VERSIONS

CONTINENTS = ("EU", "NA", "AS", "SA", "AF", "OC", "AN")  # Figure 2's order; all listed so the table's shape is fixed
HEADINGS = {"mlm": "MLM", "mlm_irle": "MLM-irle", "mlm_irle_gr": "MLM-irle-gr"}


def _classes(version: pa.Table) -> int:
    return len({c for classes in version.column("classes").to_pylist() for c in classes or []})


def continent_counts(version: pa.Table) -> Counter[str]:
    return Counter(version.column("continent").to_pylist())


def table2(versions: dict[str, pa.Table], cells: dict[str, int | None], splits: pa.Table) -> pa.Table:
    """Table 2's four measures, then cells, split sizes and entities per continent."""
    split_counts = Counter(zip(splits.column("version").to_pylist(), splits.column("split").to_pylist()))
    measures: list[tuple[str, dict[str, int | None]]] = [
        ("entities", {v: versions[v].num_rows for v in VERSIONS}),
        ("images", {v: int(pc.sum(versions[v].column("n_images")).as_py() or 0) for v in VERSIONS}),
        ("summaries", {v: int(pc.sum(versions[v].column("n_summaries")).as_py() or 0) for v in VERSIONS}),
        ("triple_classes", {v: _classes(versions[v]) for v in VERSIONS}),
        ("cells", {v: cells.get(v) for v in VERSIONS}),
    ]
    measures += [(name, {v: split_counts[(v, name)] for v in VERSIONS}) for name in SPLIT_NAMES]
    by_continent = {v: continent_counts(versions[v]) for v in VERSIONS}
    measures += [(f"entities_{c}", {v: by_continent[v][c] for v in VERSIONS}) for c in CONTINENTS]
    table = pa.table(
        {
            "row": pa.array(range(len(measures)), pa.int16()),
            "measure": pa.array([m for m, _ in measures], pa.string()),
            **{v: pa.array([values[v] for _, values in measures], pa.int64()) for v in VERSIONS},
        },
        schema=schemas.DATASET_STATS,
    )
    return schemas.sort_table(table, "dataset_stats")


def table2_markdown(stats: pa.Table) -> str:
    lines = ["| Num. of | " + " | ".join(HEADINGS[v] for v in VERSIONS) + " |", "|---|" + "---:|" * len(VERSIONS)]
    for row in stats.to_pylist():
        values = ["–" if row[v] is None else f"{row[v]:,}" for v in VERSIONS]
        lines.append(f"| {row['measure']} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def figure2_png(counts: Counter[str], path: Path) -> bytes:
    """Bar chart of entities by continent (thousands), written to ``path`` and returned.

    The PNG carries no software/version text chunk, so the same counts give the same bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = continent_names()
    shown = [c for c in CONTINENTS if counts[c]]
    values = [counts[c] / 1000 for c in shown]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    bars = ax.bar([names.get(c, c) for c in shown], values, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8)
    ax.set_ylabel("entities (000)")
    ax.set_title("MLM: number of entities by continent (000)")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    data = buffer.getvalue()
    path.write_bytes(data)
    return data


def data_uri_markdown(png: bytes, caption: str) -> str:
    return f"![{caption}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"

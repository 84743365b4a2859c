"""The paper's Table 2 (dataset details per version) and Figure 2 (MLM's entities by continent)."""

from __future__ import annotations

import base64
import io
from collections import Counter
from pathlib import Path
from typing import Mapping

import pyarrow as pa

from mlm_pipeline import schemas, sql
from mlm_pipeline.geo.countries import continent_names
from mlm_pipeline.geo.versions import SPLIT_NAMES, VERSIONS

CONTINENTS = ("EU", "NA", "AS", "SA", "AF", "OC", "AN")  # Figure 2's order; all listed so the table's shape is fixed
HEADINGS = {"mlm": "MLM", "mlm_irle": "MLM-irle", "mlm_irle_gr": "MLM-irle-gr"}


def table2(versions: Mapping[str, sql.Source], cells: Mapping[str, int | None], splits: sql.Source,
           spill_dir: Path | None = None) -> tuple[pa.Table, Counter[str]]:
    """Table 2's four measures, then cells, split sizes and entities per continent; and MLM's
    entities per continent (Figure 2). Counted by DuckDB over the stored versions."""
    with sql.connect(spill_dir) as con:
        sql.register(con, splits=splits, **{v: versions[v] for v in VERSIONS})
        measures: list[tuple[str, dict[str, int | None]]] = [
            (name, {v: int(sql.scalar(con, query.format(v=v)) or 0) for v in VERSIONS})
            for name, query in (
                ("entities", "SELECT count(*) FROM {v}"),
                ("images", "SELECT sum(n_images) FROM {v}"),
                ("summaries", "SELECT sum(n_summaries) FROM {v}"),
                ("triple_classes", "SELECT count(DISTINCT c) FROM (SELECT unnest(classes) AS c FROM {v})"),
            )
        ]
        measures.append(("cells", {v: cells.get(v) for v in VERSIONS}))
        split_counts = {(v, s): n for v, s, n in con.execute(
            "SELECT version, split, count(*) FROM splits GROUP BY 1, 2").fetchall()}
        measures += [(name, {v: split_counts.get((v, name), 0) for v in VERSIONS}) for name in SPLIT_NAMES]
        by_continent = {v: Counter({c: n for c, n in con.execute(
            f"SELECT continent, count(*) FROM {v} GROUP BY 1").fetchall()}) for v in VERSIONS}
    measures += [(f"entities_{c}", {v: by_continent[v][c] for v in VERSIONS}) for c in CONTINENTS]
    table = pa.table(
        {
            "row": pa.array(range(len(measures)), pa.int16()),
            "measure": pa.array([m for m, _ in measures], pa.string()),
            **{v: pa.array([values[v] for _, values in measures], pa.int64()) for v in VERSIONS},
        },
        schema=schemas.DATASET_STATS,
    )
    return schemas.sort_table(table, "dataset_stats"), by_continent["mlm"]


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

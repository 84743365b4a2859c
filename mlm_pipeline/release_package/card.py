"""The dataset card (``README.md``) and the licence per part (``LICENSE.md``).

The card's YAML header is what the Hugging Face hub reads: licence, languages, task
categories, size category and one config per dataset version with its splits, so that
``load_dataset(<folder or repo>, "mlm_irle")`` finds the shards. The licence is stated per
part because the parts come under different terms; no blanket licence is claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlm_pipeline.geo.stats import HEADINGS
from mlm_pipeline.geo.versions import SPLIT_NAMES, VERSIONS
from mlm_pipeline.release_package.rows import ROW

TASKS = ("image-to-text", "text-to-image", "image-classification", "text-classification")
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
FIGURE = "figure2_entities_by_continent.png"
CITATION = """@inproceedings{armitage2020mlm,
  title     = {MLM: A Benchmark Dataset for Multitask Learning with Multiple Languages and Modalities},
  author    = {Armitage, Jason and Kacupaj, Endri and Tahmasebzadeh, Golsa and Swati and
               Maleshkova, Maria and Ewerth, Ralph and Lehmann, Jens},
  booktitle = {Proceedings of the 29th ACM International Conference on Information and Knowledge Management (CIKM '20)},
  year      = {2020}
}"""
LICENCE = """Each part of this release comes under its own terms; there is no single licence for all of it.

| part | columns / files | licence |
|---|---|---|
| Facts from Wikidata | `qid`, `label_*`, `lat`, `lon`, `classes`, `class_labels` | [CC0 1.0](https://creativecommons.org/publicdomain/zero/1.0/) (Wikidata's structured data) |
| Values derived from them | `country_code`, `continent`, `cell`, `cell_token`, the splits, `provenance.json`, this card's tables | [CC0 1.0](https://creativecommons.org/publicdomain/zero/1.0/) |
| Wikipedia introductions | `summaries` | [CC BY-SA 4.0](https://creativecommons.org/licenses/by-sa/4.0/): credit the article (`https://<lang>.wikipedia.org/wiki/<title>`, its authors are in its history) and share adaptations alike |
| Images from Wikimedia Commons | `images`, `image_files` | each file its own licence, named per image in `image_files` and in `attribution.csv` with the credit line its Commons page asks for; files whose page names no licence or no author are listed there with the reason |

Whoever redistributes images must follow each file's own licence: most Commons licences require
attribution (the credit line and a link to the licence), some also share-alike."""


@dataclass(frozen=True)
class CardFacts:
    """What the card says about one release; every number comes from the release's tables."""

    release: str
    source: str  # the knowledge graph and APIs it was built from (provenance)
    languages: list[str]
    split_rows: dict[str, dict[str, int]]  # version -> split -> entities
    table2: str  # the paper's Table 2 for this release, markdown
    countries: list[tuple[str, int]]  # MLM's entities by country, most first
    attribution: dict[str, int]  # files per attribution status
    shards: dict[str, int] = field(default_factory=dict)  # version -> shard files
    svg_documents: int = 0  # images of `mlm` whose bytes are SVG (a person's own files; Commons renders PNG)


def _svg_warning(facts: CardFacts) -> str:
    """``datasets``' Image feature decodes rasters only: say so before a user's loop fails on one."""
    if not facts.svg_documents:
        return ""
    files = "file is an SVG document" if facts.svg_documents == 1 else "files are SVG documents"
    return (f"\n\n  **{facts.svg_documents:,} image {files}** (from the source's own files, not Commons' "
            "PNG renderings): `datasets` cannot decode them as images. Cast `mlm`'s images with "
            "`.cast_column(\"images\", List(Image(decode=False)))` and read their `bytes`, or use "
            "`mlm_irle`, which holds rasters only.")


def size_category(rows: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if rows < bound:
            return name
    return "1M<n<10M"


def yaml_header(facts: CardFacts) -> str:
    lines = [
        "---",
        "license: other",
        "license_name: per-part",
        "license_link: LICENSE.md",
        "language:",
        *[f"- {lang}" for lang in facts.languages],
        "multilinguality: multilingual",
        "task_categories:",
        *[f"- {task}" for task in TASKS],
        "size_categories:",
        f"- {size_category(sum(facts.split_rows['mlm'].values()))}",
        f"pretty_name: MLM release {facts.release}",
        "tags:",
        "- wikidata",
        "- wikipedia",
        "- wikimedia-commons",
        "- geolocation",
        "- cross-modal-retrieval",
        "configs:",
    ]
    for version in VERSIONS:
        lines += [f"- config_name: {version}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: data/{version}/{split}-*.parquet" for split in SPLIT_NAMES]
        if version == "mlm":
            lines.append("  default: true")
    return "\n".join([*lines, "---"])


def _splits_table(facts: CardFacts) -> str:
    lines = ["| config | " + " | ".join(SPLIT_NAMES) + " | shards |", "|---" * (len(SPLIT_NAMES) + 2) + "|"]
    for version in VERSIONS:
        counts = facts.split_rows[version]
        lines.append(f"| `{version}` ({HEADINGS[version]}) | " + " | ".join(f"{counts.get(s, 0):,}" for s in SPLIT_NAMES)
                     + f" | {facts.shards.get(version, 0)} |")
    return "\n".join(lines)


def _countries(facts: CardFacts, top: int = 10) -> str:
    total = sum(n for _, n in facts.countries) or 1
    shown = ", ".join(f"{code or 'unknown'} {n / total:.0%}" for code, n in facts.countries[:top])
    return f"{shown} (top {top} of {len(facts.countries)} countries)"


def _synthetic(facts: CardFacts) -> str:
    if not facts.source.startswith("embedded world"):
        return ""
    return ("\n\n**This release is synthetic**: the embedded world's entities are generated from real GeoNames "
            "places under made-up ids (never real Wikidata items), and its texts, images, authors and licences are "
            "generated stand-ins. Use it to try the format and the tools, not as data about places.")


def card(facts: CardFacts) -> str:
    statuses = ", ".join(f"{n:,} {status}" for status, n in facts.attribution.items())
    return f"""{yaml_header(facts)}

# MLM release {facts.release}

MLM (Multiple Languages and Modalities) links settlements in a knowledge graph to their
coordinates, classes, Wikipedia introductions in {', '.join(facts.languages)} and Commons images, for
cross-modal retrieval and location estimation (Armitage et al., CIKM 2020; the paper's own
release is https://doi.org/10.5281/zenodo.3885753). This folder is one release, built by the
reproducible mlm-pipeline (Dagster) from `{facts.source}`.{_synthetic(facts)}

## Load it

```python
from datasets import load_dataset
mlm = load_dataset("path/to/this/folder", "mlm_irle")  # or "mlm", "mlm_irle_gr"
mlm["train"][0]["images"][0]  # a PIL image; "summaries", "lat", "lon", "cell" beside it
```

DuckDB reads the shards as they are: `SELECT qid, lat, lon FROM 'data/mlm/*.parquet'`.

## Configs and splits

Three nested versions (the paper's Table 2), each split 80/10/10 by entity; an entity has
the same split in every version that holds it.

{_splits_table(facts)}

- **`mlm`**: every entity with a usable image and a non-empty summary (SVG maps and emblems
  included, as Commons' PNG renderings).{_svg_warning(facts)}
- **`mlm_irle`**: entities with a raster image in a geo-cell kept by the cell thresholds.
- **`mlm_irle_gr`**: a sample of the EU-28 weighted by population, with its own geo-cells.

One row per entity: {', '.join(f'`{c}`' for c in ROW.names)} (`croissant.json` describes
every field).

## Table 2

{facts.table2}

![Figure 2: MLM entities by continent (000)]({FIGURE})

## How it was built

1. Settlement classes: the subclass closure of the base class in the knowledge graph.
2. Entities with coordinates, classes and sitelinks, by batched SPARQL queries.
3. Wikipedia introductions (TextExtracts) and Commons thumbnails with their licence metadata
   (`imageinfo` extmetadata), under Wikimedia's API and media rules.
4. SVG and undecodable images removed; S2 geo-cells; the three versions and their splits.

Every stage's inputs, queries (sha256), configuration and library versions are in
`provenance.json`; `SHA256SUMS` lists every file's sha256 (`sha256sum -c SHA256SUMS`).
Building the same release again gives the same bytes.

## Known biases

The country mix follows what the knowledge graph holds, not the world's population:
{_countries(facts)}. Europe dominates, as in the paper's Figure 2; MLM-irle-gr exists to give
the EU-28 by population. Only entities with an English, German or French article and an image
are kept, which favours larger and European places.

## Licence

{LICENCE}

Attribution status of the {sum(facts.attribution.values()):,} image files: {statuses}
(`attribution.csv`).

## Citation

```bibtex
{CITATION}
```
"""


def licence_file() -> str:
    return f"# Licence\n\n{LICENCE}\n"

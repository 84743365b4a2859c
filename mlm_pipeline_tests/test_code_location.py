"""The code location stays cheap to import: Dagster's multiprocess executor imports it in every step process.

torch, transformers, matplotlib and scipy together took about 8 s of a fresh process's import
of ``mlm_pipeline.definitions``, paid again by each of a run's ~20 steps; the stages now import
them inside the functions that use them. This runs the import in a fresh interpreter, as a step
process does, so that a module-level import of any of them anywhere in the code location fails here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from mlm_pipeline.assets.training import BENCHMARK_VERSIONS, model_name
from mlm_pipeline.model.tasks import TASKS

HEAVY = ("torch", "transformers", "matplotlib", "scipy")

PROBE = """
import json, sys

import mlm_pipeline.definitions as location

graph = location.defs.resolve_asset_graph()
print(json.dumps({
    "heavy": sorted(name for name in sys.modules if name.split(".")[0] in %r),
    "assets": sorted(key.to_user_string() for key in graph.materializable_asset_keys),
    "deps": sorted({p.to_user_string() for key in graph.materializable_asset_keys for p in graph.get(key).parent_keys}),
}))
""" % (HEAVY,)


def test_code_location_imports_no_heavy_library_and_resolves_every_asset() -> None:
    # Installed, so absent from sys.modules below means not imported, not misspelled.
    assert [name for name in HEAVY if importlib.util.find_spec(name) is None] == []
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout.strip().splitlines()[-1])

    assert found["heavy"] == [], "imported by `import mlm_pipeline.definitions`"
    assets = set(found["assets"])
    assert set(found["deps"]) - assets == set(), "inputs that no asset of the code location produces"
    # The stages whose model code is imported lazily are all there.
    lazy_stages = {model_name(task, version) for task in TASKS for version in BENCHMARK_VERSIONS} | {
        "image_features",
        "image_feature_dropouts",
        "text_features",
        "class_features",
        "retrieval_results",
        "location_results",
    }
    assert lazy_stages - assets == set()


PURE_PACKAGES = ("sparql", "download", "geo", "encoders", "model")


def test_the_pure_packages_import_no_dagster() -> None:
    """The clients and the model run without the orchestrator: every module of the pure packages
    is imported in a fresh interpreter, and Dagster must not be among what that loads."""
    root = Path(__file__).resolve().parent.parent / "mlm_pipeline"
    modules = sorted(
        "mlm_pipeline." + ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for package in PURE_PACKAGES
        for path in (root / package).rglob("*.py")
    )
    probe = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint(sorted(n for n in sys.modules if n.split('.')[0] == 'dagster'))"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.strip() == "[]", f"Dagster imported by the pure packages: {shown.stdout.strip()[:300]}"

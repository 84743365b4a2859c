"""Bad run config is refused when a run starts, before any query, naming the value's path.

Every kind of bad value a person has sent (issue 14: 32 of them, plus their neighbours) is one
row of ``BAD``: the whole-run check names it, the ``Config`` class alone refuses it, and the
defaults and run profiles pass. A real run through the code location's executor fails before
its first step; the CLI prints one line per problem and registers nothing.
"""

from __future__ import annotations

import pytest
import yaml
from dagster import DagsterEventType, execute_job, reconstructable
from pydantic import ValidationError

from mlm_pipeline import cli
from mlm_pipeline.definitions import defs
from mlm_pipeline.release import RELEASE_PARTITIONS_NAME
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.endpoints import ConfigError
from mlm_pipeline.run_checks import check_release_key, config_classes, run_config_problems
from mlm_pipeline.run_profiles import run_config_for

CLASSES = config_classes(defs.resolve_implicit_global_asset_job_def())
MODEL = "model_multitask_mlm_irle"

BAD: list[tuple[str, dict, str]] = [
    # (op, config values, what the problem line must name)
    ("settlement_classes", {"base_class": "Q0"}, "ops.settlement_classes.config.base_class="),
    ("settlement_classes", {"base_class": "486972"}, "ops.settlement_classes.config.base_class="),
    ("settlement_classes", {"max_hops": -1}, "ops.settlement_classes.config.max_hops"),
    ("settlement_classes", {"batch_size": 0}, "ops.settlement_classes.config.batch_size"),
    ("settlement_classes", {"page_size": 0}, "ops.settlement_classes.config.page_size"),
    ("settlement_classes", {"max_attempts": 0}, "ops.settlement_classes.config.max_attempts"),
    ("settlement_classes", {"backoff_base_s": -1}, "ops.settlement_classes.config.backoff_base_s"),
    ("settlement_classes", {"query_timeout_s": 0}, "ops.settlement_classes.config.query_timeout_s"),
    ("entities", {"languages": ["en}"]}, "ops.entities.config.languages: 'en}'"),
    ("entities", {"languages": ["../"]}, "ops.entities.config.languages: '../'"),
    ("entities", {"languages": [""]}, "ops.entities.config.languages: ''"),
    ("entities", {"languages": []}, "ops.entities.config.languages"),
    ("entities", {"languages": ["it"]}, "ops.entities.config.languages: 'it' has no column"),
    ("entities", {"image_properties": ["X18"]}, "ops.entities.config.image_properties"),
    ("entities", {"class_batch": 0}, "ops.entities.config.class_batch"),
    ("summaries", {"languages": ["en}"]}, "ops.summaries.config.languages: 'en}'"),
    ("summaries", {"languages": ["../"]}, "ops.summaries.config.languages: '../'"),
    ("summaries", {"languages": [""]}, "ops.summaries.config.languages: ''"),
    ("summaries", {"batch_size": 21}, "ops.summaries.config.batch_size"),
    ("summaries", {"max_attempts": 0}, "ops.summaries.config.max_attempts"),
    ("summaries", {"backoff_s": -1}, "ops.summaries.config.backoff_s"),
    ("summaries", {"timeout_s": 0}, "ops.summaries.config.timeout_s"),
    ("images", {"width": 251}, "ops.images.config.width"),
    ("images", {"media_concurrency": 0}, "ops.images.config.media_concurrency"),
    ("images", {"metadata_batch": 51}, "ops.images.config.metadata_batch"),
    ("images", {"max_pixels": 0}, "ops.images.config.max_pixels"),
    ("images", {"max_redirects": -1}, "ops.images.config.max_redirects"),
    ("images_filtered", {"max_pixels": -5}, "ops.images_filtered.config.max_pixels"),
    ("geo_cells", {"t_max": 0}, "t_max=0"),
    ("geo_cells", {"t_min": 0}, "t_min=0"),
    ("geo_cells", {"t_min": 600, "t_max": 500}, "t_min=600, t_max=500"),
    ("geo_cells", {"start_level": 11, "max_level": 10}, "start_level=11"),
    ("geo_cells", {"max_level": 31}, "max_level=31"),
    ("dataset_versions", {"gr_total": -1}, "ops.dataset_versions.config.gr_total"),
    ("dataset_versions", {"gr_t_min": 30, "gr_t_max": 20}, "gr_t_min"),
    ("dataset_versions", {"gr_t_max": 0}, "gr_t_max"),
    ("dataset_versions", {"geocoder_min_population": 7}, "geocoder_min_population=7"),
    ("splits", {"train": 0.8, "val": 0.1, "test": 0.2}, "train=0.8, val=0.1, test=0.2"),
    ("splits", {"train": 1.2, "val": -0.1, "test": -0.1}, "val=-0.1"),
    (MODEL, {"epochs": 0}, "epochs must be at least 1"),
    (MODEL, {"lr": 0}, "lr must be positive"),
    (MODEL, {"weight_lr": -0.1}, "weight_lr must be positive"),
    (MODEL, {"batch_size": 1}, "batch_size must be at least 2"),
    (MODEL, {"dropout": 1.0}, "dropout must be in [0, 1)"),
    (MODEL, {"emb_dim": 0}, f"ops.{MODEL}.config.emb_dim"),
    (MODEL, {"threads": -1}, f"ops.{MODEL}.config.threads"),
    (MODEL, {"test_subsets": 0}, f"ops.{MODEL}.config.test_subsets"),
    (MODEL, {"test_subset_size": 0}, f"ops.{MODEL}.config.test_subset_size"),
    (MODEL, {"device": "gpu"}, f"ops.{MODEL}.config.device"),
    ("image_features", {"places_arch": "resnet51"}, "ops.image_features.config.places_arch"),
    ("image_features", {"geo_format": "onnx"}, "ops.image_features.config.geo_format"),
    ("image_features", {"batch_size": 0}, "ops.image_features.config.batch_size"),
    ("image_features", {"places_checkpoint": "/no/such/resnet50_places365.pth.tar"}, "config.places_checkpoint"),
    ("text_features", {"chunk_chars": 0}, "ops.text_features.config.chunk_chars"),
    ("text_features", {"model_path": "/no/such/bert"}, "ops.text_features.config.model_path"),
    ("retrieval_results", {"batch_size": 0}, "ops.retrieval_results.config.batch_size"),
]


@pytest.mark.parametrize(("op", "values", "named"), BAD, ids=[f"{o}-{'-'.join(map(str, v.values()))}" for o, v, _ in BAD])
def test_a_bad_value_is_refused_naming_its_path(op: str, values: dict, named: str) -> None:
    problems = run_config_problems({"ops": {op: {"config": values}}}, CLASSES)
    assert len(problems) == 1 and named in problems[0], problems
    assert problems[0].startswith(f"ops.{op}.config") and "\n" not in problems[0]
    with pytest.raises(ValidationError):
        CLASSES[op](**values)  # the step refuses it too, should a run bypass the executor


def test_defaults_and_every_run_profile_pass() -> None:
    assert run_config_problems({}, CLASSES) == []
    for source in (WikimediaResource(), WikimediaResource(world_size="tiny"), WikimediaResource(source="live", contact="a@b.org")):
        assert run_config_problems(run_config_for(source), CLASSES) == []


def release_job():
    return defs.resolve_job_def("mlm_release")


def test_a_run_with_bad_config_fails_before_its_first_step(dagster_instance) -> None:
    dagster_instance.add_dynamic_partitions(RELEASE_PARTITIONS_NAME, ["2026-01-05"])
    bad = {"ops": {"geo_cells": {"config": {"t_min": 600}}, "settlement_classes": {"config": {"backoff_base_s": -1}}}}
    with execute_job(
        reconstructable(release_job), dagster_instance, run_config=bad, tags={"dagster/partition": "2026-01-05"},
        raise_on_error=False,
    ) as result:
        assert not result.success
        events = dagster_instance.all_logs(result.run_id)
    kinds = {e.dagster_event.event_type for e in events if e.dagster_event}
    assert DagsterEventType.RUN_FAILURE in kinds and DagsterEventType.STEP_START not in kinds
    failure = next(e for e in events if e.dagster_event and e.dagster_event.event_type == DagsterEventType.RUN_FAILURE)
    message = failure.dagster_event.event_specific_data.error.message  # type: ignore[union-attr]
    assert "ops.geo_cells.config: geo-cell thresholds" in message
    assert "ops.settlement_classes.config.backoff_base_s" in message


def test_a_release_the_world_never_published_fails_before_its_first_step(dagster_instance) -> None:
    """A key added by hand ("Add partition" in the UI) is refused when its run starts, naming
    the releases the embedded world did publish."""
    dagster_instance.add_dynamic_partitions(RELEASE_PARTITIONS_NAME, ["2031-02-30"])
    with execute_job(
        reconstructable(release_job), dagster_instance, tags={"dagster/partition": "2031-02-30"}, raise_on_error=False,
    ) as result:
        assert not result.success
        events = dagster_instance.all_logs(result.run_id)
    kinds = {e.dagster_event.event_type for e in events if e.dagster_event}
    assert DagsterEventType.STEP_START not in kinds
    failure = next(e for e in events if e.dagster_event and e.dagster_event.event_type == DagsterEventType.RUN_FAILURE)
    message = failure.dagster_event.event_specific_data.error.message  # type: ignore[union-attr]
    assert "release '2031-02-30'" in message and "has published 2026-01-05" in message


def test_the_release_check_asks_the_source_the_run_configures(monkeypatch) -> None:
    """The week a later world version publishes is refused by the code location's source, and
    accepted when the run config raises world_version to it (as the launchpad can)."""
    for name in ("MLM_WORLD_VERSION", "MLM_SOURCE", "MLM_WORLD_FILES"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="release '2026-01-12'"):
        check_release_key("2026-01-12", {})
    check_release_key("2026-01-12", {"resources": {"wikimedia": {"config": {"world_version": 2}}}})


def test_the_cli_prints_one_line_per_problem_and_does_nothing(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("MLM_WORLD_SIZE", "tiny")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"ops": {"images": {"config": {"width": 251}}, "splits": {"config": {"test": 0.2}}}}))
    assert cli.main(["main", "-c", str(config)]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "mlm-pipeline: error: ops.images.config.width: 251 is not one of Commons' standard thumbnail widths "
        "(20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)",
        "mlm-pipeline: error: ops.splits.config: split shares must be non-negative and sum to 1; "
        "got train=0.8, val=0.1, test=0.2 (sum 1.1)",
    ]
    assert out == "" and not (tmp_path / "storage").exists()  # nothing registered, nothing run


def test_the_cli_names_a_config_file_it_cannot_use(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("MLM_WORLD_SIZE", "tiny")
    (tmp_path / "broken.yaml").write_text("ops: [unclosed")
    (tmp_path / "list.yaml").write_text("- ops\n")
    for name, words in [("missing.yaml", "missing.yaml: no such file"), ("broken.yaml", "while parsing a flow sequence"),
                        ("list.yaml", "to parse to dictionary")]:
        assert cli.main(["main", "-c", str(tmp_path / name)]) == 2  # Dagster reads a missing file as {}
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("mlm-pipeline: error: -c") and words in line


def test_register_refuses_a_release_the_source_does_not_serve(dagster_instance, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DAGSTER_HOME", dagster_instance.root_directory)
    monkeypatch.setenv("MLM_WORLD_SIZE", "tiny")
    monkeypatch.setenv("MLM_WORLD_VERSION", "2")
    assert cli.main(["register", "--release", "2026-02-05"]) == 2
    assert "it serves 2026-01-05, 2026-01-12); pass --force" in capsys.readouterr().err
    assert not dagster_instance.has_dynamic_partition(RELEASE_PARTITIONS_NAME, "2026-02-05")
    assert cli.main(["register", "--release", "2026-01-05"]) == 0  # a past release of this world
    assert cli.main(["register", "--release", "2026-02-05", "--force"]) == 0
    assert dagster_instance.get_dynamic_partitions(RELEASE_PARTITIONS_NAME) == ["2026-01-05", "2026-02-05"]

"""A new version of the world appears: the sensor registers its release, requests one run of it,
the run builds every asset and passes every check on an instance that holds the earlier
releases too, the sensor stays quiet afterwards, and the release's diff names what changed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    build_schedule_context,
    build_sensor_context,
)

from mlm_pipeline import automation, checks
from mlm_pipeline.catalog import CATALOG
from mlm_pipeline.definitions import assets as ASSETS, mlm_job
from mlm_pipeline.parquet_io import ParquetIOManager
from mlm_pipeline.release import RELEASE_PARTITIONS_NAME
from mlm_pipeline.endpoints import ConfigError
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.run_profiles import run_config_for
from mlm_pipeline.shards import stored_table
from mlm_pipeline.storage import StorageResource
from mlm_pipeline.world import World, WorldSpec, build_world



def source(version: int) -> WikimediaResource:
    return WikimediaResource(source="embedded", world_size="tiny", world_seed=1234, world_version=version)


def definitions(version: int, data: str, wikimedia: WikimediaResource | None = None) -> Definitions:
    """The code location as an operator would have it after pointing it at world version
    ``version`` (or at another source)."""
    return Definitions(
        assets=ASSETS,
        asset_checks=checks.asset_checks,
        jobs=[mlm_job],
        sensors=automation.sensors,
        schedules=automation.schedules,
        resources={
            "io_manager": ParquetIOManager(base_dir=data),
            "storage": StorageResource(base_dir=data),
            "wikimedia": wikimedia or source(version),
        },
    )


def tick(instance: DagsterInstance, defs: Definitions, cursor: str | None):
    context = build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),  # as in the daemon: partitions resolve through the instance
        cursor=cursor,
        definitions=defs,
        sensor_name="new_release_sensor",
        resources={"wikimedia": defs.resources["wikimedia"]},
    )
    return automation.new_release_sensor.evaluate_tick(context)


def apply_and_run(instance: DagsterInstance, defs: Definitions, result, version: int) -> dict:
    """What the daemon does with a tick: add the partitions and run the requested run, with the
    run config it carries, to the end: every asset of the release, every check passing."""
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    (run_request,) = result.run_requests
    assert run_request.run_config == run_config_for(source(version))
    job = defs.resolve_job_def(run_request.job_name)
    run = job.execute_in_process(
        instance=instance,
        partition_key=run_request.partition_key,
        tags=run_request.tags,
        run_config=run_request.run_config,
    )
    assert run.success
    evaluations = run.get_asset_check_evaluations()
    assert len(evaluations) == len(list(defs.resolve_asset_graph().asset_check_keys))
    assert [e.asset_check_key.to_user_string() for e in evaluations if not e.passed] == []
    assert {e.partition for e in evaluations} == {run_request.partition_key}
    built = {event.asset_key for event in run.get_asset_materialization_events()}
    assert built == set(defs.resolve_asset_graph().get_all_asset_keys())
    return run.asset_materializations_for_node("release_diff")[0].metadata


def expected_diff(old: World, new: World) -> dict[str, set[str]]:
    """From the worlds' truth, independently of mlm_pipeline.diff: who came, went, moved..."""
    before, after = old.truth.entities, new.truth.entities
    both = set(before) & set(after)
    return {
        "added": set(after) - set(before),
        "removed": set(before) - set(after),
        "coordinates": {q for q in both if (before[q]["lat"], before[q]["lon"]) != (after[q]["lat"], after[q]["lon"])},
        "classes": {q for q in both if set(before[q]["classes"]) != set(after[q]["classes"])},
        "images": {q for q in both if set(before[q]["images"]) != set(after[q]["images"])},
    }


def test_sensor_builds_three_releases_on_one_instance_and_the_diff_names_the_changes(tmp_path, dagster_instance) -> None:
    data = str(tmp_path / "data")
    first = build_world(WorldSpec(size="tiny", version=1))
    defs_v1 = definitions(1, data)

    # World version 1 is new to an empty instance: one partition, one run, keyed by the release.
    result = tick(dagster_instance, defs_v1, cursor=None)
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [[first.release]]
    (request,) = result.run_requests
    assert (request.run_key, request.partition_key, request.job_name) == (first.release, first.release, "mlm_release")
    assert request.tags[automation.VERSION_TAG] == first.dataset_version
    assert result.cursor == first.dataset_version
    metadata = apply_and_run(dagster_instance, defs_v1, result, 1)
    assert metadata["previous_release"].value == "none (first release)"
    assert metadata["n_added"].value == len(first.truth.entities)

    # Nothing changed: quiet, with or without the cursor (a reset cursor must not rebuild).
    for cursor in (result.cursor, None):
        quiet = tick(dagster_instance, defs_v1, cursor=cursor)
        assert not quiet.run_requests and not quiet.dynamic_partitions_requests and quiet.skip_message
    assert dagster_instance.get_dynamic_partitions(RELEASE_PARTITIONS_NAME) == [first.release]

    # Versions 2 and 3, a week apart: each diffed against the one before.
    releases = [first.release]
    worlds = [first, build_world(WorldSpec(size="tiny", version=2)), build_world(WorldSpec(size="tiny", version=3))]
    changed_fields: set[str] = set()
    for version in (2, 3):
        old, new = worlds[version - 2], worlds[version - 1]
        defs = definitions(version, data)
        result = tick(dagster_instance, defs, cursor=old.dataset_version)
        assert new.release == (dt.date.fromisoformat(old.release) + dt.timedelta(days=7)).isoformat()
        assert [r.partition_keys for r in result.dynamic_partitions_requests] == [[new.release]]
        assert [r.run_key for r in result.run_requests] == [new.release]
        metadata = apply_and_run(dagster_instance, defs, result, version)
        releases.append(new.release)
        assert dagster_instance.get_dynamic_partitions(RELEASE_PARTITIONS_NAME) == releases

        diff = stored_table("release_diff", new.release, tmp_path / "data").read().to_pylist()
        expected = expected_diff(old, new)
        assert expected["added"] and expected["removed"]  # the world did change
        assert {r["qid"] for r in diff if r["change"] == "added"} == expected["added"]
        assert {r["qid"] for r in diff if r["change"] == "removed"} == expected["removed"]
        for field in ("coordinates", "classes", "images"):
            assert {r["qid"] for r in diff if field in r["fields"]} == expected[field], field
            changed_fields |= {field} if expected[field] else set()
        touched = {c.qid for c in new.changes if c.version == version}
        assert {r["qid"] for r in diff} <= touched  # nothing reported that the world did not touch
        assert {r["previous_release"] for r in diff} == {old.release}
        assert metadata["previous_release"].value == old.release
        assert metadata["n_added"].value == len(expected["added"])
        assert metadata["n_removed"].value == len(expected["removed"])
        for field in ("coordinates", "classes", "images"):
            assert metadata[f"n_changed_{field}"].value == len(expected[field])

        # The same tick again (the daemon retrying it): quiet, no second partition or run.
        again = tick(dagster_instance, defs, cursor=old.dataset_version)
        assert not again.run_requests and "already registered" in again.skip_message
    assert changed_fields == {"coordinates", "classes", "images"}  # every kind of edit was seen

    # Every asset of every release can be queried with DuckDB through the catalog the runs kept.
    with duckdb.connect(str(tmp_path / "data" / CATALOG), read_only=True) as con:
        views = {name for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert views == {key.to_user_string() for key in defs_v1.resolve_asset_graph().get_all_asset_keys()}
        counts = dict(con.execute("SELECT release, count(*) FROM entities GROUP BY release").fetchall())
        assert counts == {world.release: len(world.truth.entities) for world in worlds}
        paths = con.execute("SELECT image_path(release, sha256) FROM images_filtered").fetchall()
        assert len(paths) == sum(stored_table("images_filtered", r, data).num_rows for r in releases)
        assert all(Path(path).is_file() for (path,) in paths)


def test_schedule_registers_the_release_itself_and_then_skips(tmp_path, dagster_instance) -> None:
    world = build_world(WorldSpec(size="tiny", version=1))
    (weekly,) = automation.schedules
    assert weekly.cron_schedule == automation.DEFAULT_CRON
    repository = definitions(1, str(tmp_path)).get_repository_def()

    def evaluate():
        context = build_schedule_context(
            instance=dagster_instance, resources={"wikimedia": source(1)}, repository_def=repository
        )
        return weekly.evaluate_tick(context)

    first = evaluate()
    assert [(r.run_key, r.partition_key, r.job_name) for r in first.run_requests] == [
        (world.release, world.release, "mlm_release")
    ]
    assert dagster_instance.get_dynamic_partitions(RELEASE_PARTITIONS_NAME) == [world.release]
    second = evaluate()
    assert not second.run_requests and "already registered" in second.skip_message


def test_refresh_settings_are_checked(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="MLM_RELEASE_CRON='every monday'"):
        automation.release_schedule("every monday")
    monkeypatch.setenv(automation.SENSOR_INTERVAL_ENV, "5")
    with pytest.raises(ConfigError, match="MLM_RELEASE_SENSOR_INTERVAL_S='5'"):
        automation.sensor_interval()


def test_live_sources_refresh_once_a_week_and_the_embedded_world_per_version() -> None:
    live = WikimediaResource(source="live", contact="me@example.org")
    assert live.cadence() == "weekly" and source(1).cadence() == "daily"
    assert WikimediaResource(source="live", contact="me@example.org", release_cadence="iso_week").cadence() == "iso_week"
    monday, thursday = "2026-01-05T09:00:00Z", "2026-01-08T21:00:00Z"
    first = automation.plan_refresh(monday, [], None, live.cadence())
    assert first.is_new and first.key == "2026-01-05"
    # Thursday's daily edit is a new data version but no new release: the week has one.
    later = automation.plan_refresh(thursday, [first.key], monday, live.cadence())
    assert not later.is_new and "already registered" in later.skip_reason
    assert automation.plan_refresh("2026-01-12T09:00:00Z", [first.key], thursday, live.cadence()).key == "2026-01-12"
    with pytest.raises(ValueError, match="embedded world's releases are its versions"):
        WikimediaResource(source="embedded", release_cadence="weekly")


def test_sensor_keys_a_periodic_source_by_its_period(tmp_path, tiny_served, dagster_instance) -> None:
    """A source read through its endpoints (here: the tiny world's servers) at an ISO-week cadence."""
    weekly = WikimediaResource(
        source="endpoints", contact="me@example.org", sparql_endpoint=tiny_served.sparql_url,
        wikipedia_api=tiny_served.wikipedia_api, commons_api=tiny_served.commons_api,
        commons_filepath=tiny_served.commons_filepath, release_cadence="iso_week",
    )
    defs = definitions(1, str(tmp_path / "data"), weekly)
    result = tick(dagster_instance, defs, cursor=None)
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["2026-W02"]]
    assert [(r.run_key, r.partition_key) for r in result.run_requests] == [("2026-W02", "2026-W02")]


def test_plan_refresh() -> None:
    version = "2026-01-12T00:00:00Z"
    assert automation.plan_refresh(version, [], None).is_new
    assert automation.plan_refresh(version, ["2026-01-05"], "2026-01-05T00:00:00Z").key == "2026-01-12"
    assert "unchanged" in automation.plan_refresh(version, [], version).skip_reason
    assert "already registered" in automation.plan_refresh("2026-01-12T10:00:00Z", ["2026-01-12"], version).skip_reason
    with pytest.raises(ValueError, match="not an xsd:dateTime"):
        automation.plan_refresh("last tuesday", [], None)

"""The Dagster UI as a person uses it, in a real headless browser.

``dagster dev`` runs with this project's ``dagster.yaml`` and ``workspace.yaml`` on 127.0.0.1
(the tiny world chosen by ``MLM_WORLD_SIZE=tiny``, the release registered with ``mlm-pipeline
register`` as the README says). Debian's Chromium, driven by Playwright, finds every asset in
the asset graph, launches a materialisation of the release from the launchpad, waits for the
run to succeed and reads Table 2 and the row count from ``dataset_stats``' metadata. Screenshots
go to the test's folder (and to ``$MLM_TEST_ARTIFACTS`` when set).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from mlm_pipeline.definitions import defs
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.run_profiles import run_config_for
from mlm_pipeline.shards import stored_table

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_S = 300
RUN_S = 720
LAUNCH_CONFIG = yaml.safe_dump({"execution": {"config": {"in_process": {}}}, **run_config_for(WikimediaResource(world_size="tiny"))})
"""The embedded world's quick training profile; in-process saves a process start per step."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def groups() -> dict[str, list[str]]:
    """The code location's asset groups and their assets."""
    graph = defs.resolve_asset_graph()
    members: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        members.setdefault(graph.get(key).group_name, []).append(key.to_user_string())
    return members


def ui_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLM_")}
    return {**env, "DAGSTER_HOME": str(home), "MLM_WORLD_SIZE": "tiny"}


@contextmanager
def dagster_dev(home: Path, port: int, log: Path) -> Iterator[subprocess.Popen]:
    """``dagster dev`` in its own process group; everything in the group is stopped afterwards."""
    command = [str(Path(sys.executable).with_name("dagster")), "dev", "-w", str(ROOT / "workspace.yaml"),
               "-h", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=ui_env(home), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """Ctrl-C first (dagster dev shuts its services down), then SIGKILL whatever of the group is left."""
    group = process.pid  # start_new_session: the group id is the leader's pid
    try:
        os.killpg(group, signal.SIGINT)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def wait_for_server(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"dagster dev did not answer at {url} within {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def graph_label_matches(label: str, name: str) -> bool:
    """Zoomed-out asset nodes shorten long names in the middle: ``model_le_…_irle_gr``."""
    if "…" not in label:
        return label == name
    head, _, tail = label.partition("…")
    return name.startswith(head) and name.endswith(tail) and len(name) > len(head) + len(tail)


def node_shown(page, names: list[str], timeout_s: float = 15.0) -> bool:
    """Whether the graph renders a node for any of ``names`` (it renders what is in view)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        labels = page.locator("svg foreignObject [class*=AssetNode_assetName]").evaluate_all(
            "names => names.map(n => (n.textContent || '').trim())"
        )
        if any(graph_label_matches(label, name) for label in labels for name in names):
            return True
        page.wait_for_timeout(250)
    return False


def keep(path: Path) -> None:
    print(f"screenshot: {path}")
    if os.environ.get("MLM_TEST_ARTIFACTS"):
        target = Path(os.environ["MLM_TEST_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)


def test_ui_materialises_the_tiny_release_and_shows_table_2(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (mlm_pipeline_tests/run.sh does)")

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")  # no newsletter dialog over the UI
    registered = subprocess.run(
        [sys.executable, "-m", "mlm_pipeline.cli", "register"], cwd=ROOT, env=ui_env(home),
        capture_output=True, text=True, timeout=300,
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    release = registered.stdout.split("release ", 1)[1].split()[0]
    expected_assets = sorted(key.to_user_string() for key in defs.resolve_all_asset_keys())

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster_dev.log"
    with dagster_dev(home, port, log) as process, sync_playwright() as playwright:
        wait_for_server(process, url, log)
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium_profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)

            # The asset graph: every asset of the code location is a node in it.
            page.goto(f"{url}/asset-groups")
            page.get_by_text("Materialize all").wait_for(timeout=STARTUP_S * 1000)
            page.keyboard.press("Alt+e")  # expand every group
            assert node_shown(page, expected_assets), "no asset node after expanding the groups"
            jump = page.get_by_placeholder("Jump to…")
            missing = []
            for name in expected_assets:
                # The first jump can land while the graph is still laying out; a person would
                # simply jump again, so one more try is allowed before the asset counts as missing.
                for _attempt in range(2):
                    jump.fill(name)
                    page.get_by_role("menuitem", name=name, exact=True).click()
                    if node_shown(page, [name]):
                        break
                else:
                    missing.append(name)
            assert missing == [], f"not in the asset graph: {missing}"

            # Launch the release from the launchpad, with tiny training settings.
            page.goto(f"{url}/locations/mlm_pipeline/jobs/mlm_release")
            page.get_by_text("Materialize all").wait_for()
            page.locator("[aria-label=arrow_drop_down]").first.click()
            page.get_by_text("Open launchpad").click()
            page.get_by_placeholder("Partition").click()
            page.get_by_text(release, exact=True).first.click()
            page.get_by_text(f"partition: {release}").wait_for()
            editors = page.evaluate(
                """(yaml) => {
                    const editors = Array.from(document.querySelectorAll('.CodeMirror'))
                        .map(e => e.CodeMirror).filter(cm => cm && cm.getValue().startsWith('ops:'));
                    editors.forEach(cm => cm.setValue(yaml));
                    return editors.length;
                }""",
                LAUNCH_CONFIG,
            )
            assert editors == 1
            page.get_by_text("No errors").wait_for()
            page.get_by_text("Materialize", exact=True).last.click()
            page.wait_for_url("**/runs/**")
            run_url = page.url

            # Wait for the run, as shown on its page.
            deadline = time.monotonic() + RUN_S
            status = None
            while time.monotonic() < deadline and status is None:
                page.wait_for_timeout(5000)
                for word in ("Success", "Failure", "Canceled"):
                    if page.get_by_text(word, exact=True).count():
                        status = word
            page.screenshot(path=tmp_path / "run.png")
            keep(tmp_path / "run.png")
            assert status == "Success", f"run {run_url} ended as {status}; dagster dev log: {log}"

            # Table 2 and the row count, as the asset page shows them, against the stored table.
            stats = stored_table("dataset_stats", release, home / "mlm_data").read()
            entities = next(row for row in stats.to_pylist() if row["measure"] == "entities")
            page.goto(f"{url}/assets/dataset_stats?partition={release}&view=partitions")
            row = "\t".join(["entities", *(f"{entities[v]:,}" for v in ("mlm", "mlm_irle", "mlm_irle_gr"))])
            # The label comes before the table has rendered: wait for the content itself.
            try:
                page.wait_for_function(
                    """([row]) => document.body.innerText.includes(row)
                        && /dagster\\/row_count\\s+\\d+/.test(document.body.innerText)""",
                    arg=[row],
                    timeout=120_000,
                )
            except PlaywrightTimeout:
                pytest.fail(f"Table 2's entities row {row!r} and the row count not shown within 120 s")
            text = page.inner_text("body")
            shown = re.search(r"dagster/row_count\s+(\d+)", text)
            assert shown and int(shown.group(1)) == stats.num_rows
            page.screenshot(path=tmp_path / "dataset_stats.png", full_page=True)
            keep(tmp_path / "dataset_stats.png")

            # The graph after the run, one asset group per page: materialised assets are green.
            for group, names in groups().items():
                page.goto(f"{url}/locations/mlm_pipeline/asset-groups/{group}")
                assert node_shown(page, names), f"group {group} shows none of its assets"
                page.wait_for_timeout(2000)
                page.screenshot(path=tmp_path / f"asset_graph_{group}.png")
                keep(tmp_path / f"asset_graph_{group}.png")
        finally:
            browser.close()

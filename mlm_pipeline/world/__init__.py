"""The embedded world: a deterministic, Wikidata-shaped knowledge graph with Wikipedia and
Commons stand-ins, served on 127.0.0.1 so the whole pipeline runs offline against real
protocols (see builder.py for what the world contains and the right answers it knows).

    from mlm_pipeline.world import WorldSpec, build_world, running_world

    with running_world(WorldSpec("tiny"), faults="http429=0.1,seed=3") as served:
        served.sparql_url, served.wikipedia_api.format(lang="de"), served.commons_api
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from mlm_pipeline.world.builder import build_world
from mlm_pipeline.world.right_answer import expected
from mlm_pipeline.world.model import ClassInfo, Country, FileInfo, Place, Truth, World, WorldSpec
from mlm_pipeline.world.faults import FaultPlan
from mlm_pipeline.world.serving import RunningServer

log = logging.getLogger(__name__)

__all__ = [
    "ClassInfo",
    "Country",
    "FaultPlan",
    "FileInfo",
    "Place",
    "Served",
    "Truth",
    "World",
    "WorldSpec",
    "build_world",
    "expected",
    "running_world",
]


@dataclass
class Served:
    """A running world: where to reach it, and its servers (for counters)."""

    world: World
    sparql_url: str
    wikipedia_api: str  # template with {lang}
    commons_api: str
    commons_filepath: str
    servers: dict[str, RunningServer] = field(default_factory=dict)


def _start_wiki_servers(world: World, plan: FaultPlan) -> dict[str, RunningServer]:
    """Wikipedia and Commons stand-ins, when their modules are present."""
    servers: dict[str, RunningServer] = {}
    try:
        from mlm_pipeline.world.wiki_server import start_wiki_server
    except ImportError:
        log.warning("mlm_pipeline.world.wiki_server is missing: no Wikipedia stand-in")
    else:
        servers["wiki"] = start_wiki_server(world, plan)
    try:
        from mlm_pipeline.world.commons_server import start_commons_server
    except ImportError:
        log.warning("mlm_pipeline.world.commons_server is missing: no Commons stand-in")
    else:
        servers["commons"] = start_commons_server(world, plan)
    return servers


@contextmanager
def running_world(spec: WorldSpec | World, faults: str | FaultPlan = "") -> Iterator[Served]:
    """Build (or reuse) the world, serve it on free loopback ports, stop everything on exit."""
    from mlm_pipeline.world.rdf import load_world, open_store
    from mlm_pipeline.world.sparql_server import PATH, start_sparql_server

    plan = FaultPlan.parse(faults)
    started = time.monotonic()
    world = spec if isinstance(spec, World) else load_world(spec)
    store = open_store(world)
    with ExitStack() as stack:
        sparql = start_sparql_server(store, plan)
        stack.callback(sparql.stop)
        servers = {"sparql": sparql}
        others = _start_wiki_servers(world, plan)
        for server in others.values():
            stack.callback(server.stop)
        servers.update(others)
        wiki, commons = others.get("wiki"), others.get("commons")
        served = Served(
            world=world,
            sparql_url=sparql.url + PATH,
            wikipedia_api=(wiki.url if wiki else "http://127.0.0.1:9") + "/{lang}/w/api.php",
            commons_api=(commons.url if commons else "http://127.0.0.1:9") + "/w/api.php",
            commons_filepath=(commons.url if commons else "http://127.0.0.1:9") + "/wiki/Special:FilePath/",
            servers=servers,
        )
        log.info(
            "world %s (%d places, release %s) served in %.1fs: %s",
            world.spec.label(),
            len(world.places),
            world.release,
            time.monotonic() - started,
            served.sparql_url,
        )
        yield served

"""Where the data comes from: the embedded world (default), live Wikimedia, or other endpoints.

The pipeline's clients are the same for every source; this resource only decides which
endpoints they talk to, and, for the embedded world, starts its servers on free loopback ports
for the duration of a step and stops them afterwards.
"""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Literal, cast

from dagster import ConfigurableResource
from pydantic import field_validator, model_validator

from mlm_pipeline.endpoints import (
    ConfigError,
    Endpoints,
    LIVE_COMMONS_API,
    LIVE_COMMONS_FILEPATH,
    LIVE_SPARQL,
    LIVE_WIKIPEDIA_API,
    check_url,
    user_agent,
)
from mlm_pipeline.sparql.queries import CADENCES, Cadence, release_key

if TYPE_CHECKING:
    from mlm_pipeline.world import WorldSpec

WORLD_SIZES = ("tiny", "default", "mlm")


class WikimediaResource(ConfigurableResource):
    """The source of a run.

    ``source``: ``embedded`` builds the deterministic world from (``world_seed``,
    ``world_size``, ``world_version``) or from ``world_files`` and serves it on 127.0.0.1;
    ``live`` uses Wikimedia's public services; ``endpoints`` uses the URLs given below (a local
    SPARQL engine loaded from a Wikidata dump, say). Both need ``contact``.
    """

    source: Literal["embedded", "live", "endpoints"] = "embedded"
    contact: str = ""
    sparql_endpoint: str = LIVE_SPARQL
    wikipedia_api: str = LIVE_WIKIPEDIA_API
    commons_api: str = LIVE_COMMONS_API
    commons_filepath: str = LIVE_COMMONS_FILEPATH
    world_size: str = "default"
    world_seed: int = 1234
    world_version: int = 1
    world_files: str = ""
    world_faults: str = ""
    # One release per data version (daily), or per period for a graph that changes every day;
    # empty: weekly for live Wikidata, daily for every other source.
    release_cadence: str = ""

    @field_validator("contact")
    @classmethod
    def _contact_is_printable(cls, value: str) -> str:
        if re.search(r"[\x00-\x1f()]", value):
            raise ConfigError(f"contact={value!r} must be a URL or e-mail without parentheses")
        return value

    @field_validator("world_size")
    @classmethod
    def _known_size(cls, value: str) -> str:
        if value not in WORLD_SIZES and not value.isdigit():
            raise ConfigError(f"world_size={value!r}: use one of {WORLD_SIZES} or a number")
        return value

    @model_validator(mode="after")
    def _cadence_fits_source(self) -> "WikimediaResource":
        if self.release_cadence not in ("", *CADENCES):
            raise ConfigError(f"release_cadence={self.release_cadence!r}: use one of {CADENCES}, or leave it empty")
        if self.source == "embedded" and self.release_cadence not in ("", "daily"):
            raise ConfigError(
                f"release_cadence={self.release_cadence!r}: the embedded world's releases are its versions "
                "(one data version each); use daily, or leave it empty"
            )
        return self

    def cadence(self) -> Cadence:
        """The release cadence in force: live Wikidata's data version changes every day, and a
        release per day would rebuild the dataset daily for a handful of edits."""
        if self.release_cadence:
            return cast(Cadence, self.release_cadence)
        return "weekly" if self.source == "live" else "daily"

    def release_of(self, dataset_version: str) -> str:
        """The release key a served data version belongs to."""
        return release_key(dataset_version, self.cadence())

    def world_spec(self, release: str | None = None) -> WorldSpec:
        """The embedded world that serves ``release``: a generated world rebuilds every version
        it has published up to ``world_version`` exactly, so a backfill of past releases runs
        on one code location. Without a release, or for one's own files, the configured one."""
        from mlm_pipeline.world import WorldSpec

        spec = WorldSpec.from_config(
            size=self.world_size, seed=self.world_seed, version=self.world_version, files=self.world_files
        )
        published = spec.published()
        if release is None or not published:
            return spec
        if release not in published:
            raise ConfigError(
                f"release {release!r}: the embedded world (size={self.world_size}, seed={self.world_seed}) "
                f"has published {', '.join(published)} (versions 1-{self.world_version}); "
                "raise world_version (MLM_WORLD_VERSION) to serve a later release"
            )
        return published[release]

    def identity(self, release: str | None = None) -> str:
        """The data this source serves (for ``release``), as a person would name it: for the
        embedded world the spec and code that rebuild it (its ports change every run and say nothing)."""
        if self.source == "embedded":
            from mlm_pipeline.world.rdf import code_version

            spec = self.world_spec(release)
            parts = [f"size={spec.size}", f"seed={spec.seed}", f"version={spec.version}"]
            if spec.files:
                parts.append(f"files={spec.files}")
            # The generator's code too: a changed world must not reuse what an older one staged.
            return "embedded world " + " ".join(parts) + f" code={code_version()}"
        return f"{self.source} {self.sparql_endpoint} {self.wikipedia_api} {self.commons_api}"

    def identity_key(self, release: str | None = None) -> str:
        """A short folder-safe key of ``identity()``: downloads staged for one source are never
        reused for another that happens to serve the same release date."""
        return hashlib.sha256(self.identity(release).encode("utf-8")).hexdigest()[:12]

    def _checked_remote(self, live: bool) -> Endpoints:
        # ``endpoints`` too: its summaries and images come from Wikimedia's APIs unless every URL
        # is one's own, and the placeholder contact would be refused (403) there.
        if not self.contact.strip():
            raise ConfigError(
                f"source={self.source!r} needs a contact (URL or e-mail, MLM_CONTACT) for the User-Agent: "
                "Wikimedia blocks bulk clients it cannot reach; only the embedded world runs without one"
            )
        return Endpoints(
            sparql_url=check_url("sparql_endpoint", self.sparql_endpoint),
            wikipedia_api=check_url("wikipedia_api", self.wikipedia_api, template=True),
            commons_api=check_url("commons_api", self.commons_api),
            commons_filepath=check_url("commons_filepath", self.commons_filepath),
            user_agent=user_agent(self.contact),
            live=live,
        )

    @contextmanager
    def open(self, release: str | None = None) -> Iterator[Endpoints]:
        """The endpoints for this step (serving ``release`` where the source can choose, see
        ``world_spec``); the embedded world's servers live as long as the block."""
        if self.source != "embedded":
            yield self._checked_remote(live=self.source == "live")
            return
        from mlm_pipeline.world import running_world

        spec = self.world_spec(release)
        with running_world(spec, faults=self.world_faults) as served:
            yield Endpoints(
                sparql_url=served.sparql_url,
                wikipedia_api=served.wikipedia_api,
                commons_api=served.commons_api,
                commons_filepath=served.commons_filepath,
                user_agent=user_agent(self.contact),
                live=False,
            )


ENV_SETTINGS = {
    "source": "MLM_SOURCE",
    "contact": "MLM_CONTACT",
    "sparql_endpoint": "MLM_SPARQL_ENDPOINT",
    "wikipedia_api": "MLM_WIKIPEDIA_API",
    "commons_api": "MLM_COMMONS_API",
    "commons_filepath": "MLM_COMMONS_FILEPATH",
    "world_size": "MLM_WORLD_SIZE",
    "world_seed": "MLM_WORLD_SEED",
    "world_version": "MLM_WORLD_VERSION",
    "world_files": "MLM_WORLD_FILES",
    "world_faults": "MLM_WORLD_FAULTS",
    "release_cadence": "MLM_RELEASE_CADENCE",
}


def wikimedia_from_env() -> WikimediaResource:
    """The code location's default source: the embedded world unless ``MLM_*`` variables say
    otherwise, so the CLI, ``dagster dev`` and CI all pick the same source the same way.
    Launchpad run config still overrides every field per run."""
    settings = {field: os.environ[var] for field, var in ENV_SETTINGS.items() if os.environ.get(var)}
    return WikimediaResource(**settings)

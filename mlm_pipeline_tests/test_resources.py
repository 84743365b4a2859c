"""The source resource: which data it names, and the configuration it refuses before any request."""

from __future__ import annotations

import pytest

from mlm_pipeline.endpoints import ConfigError
from mlm_pipeline.resources import WikimediaResource, wikimedia_from_env


def test_sources_serving_different_data_never_share_a_staging_key() -> None:
    keys = {
        WikimediaResource(world_size="tiny").identity_key(),
        WikimediaResource(world_size="default").identity_key(),
        WikimediaResource(world_seed=7).identity_key(),
        WikimediaResource(world_version=2).identity_key(),
        WikimediaResource(source="live", contact="me@example.org").identity_key(),
        WikimediaResource(source="endpoints", sparql_endpoint="http://127.0.0.1:7878/query").identity_key(),
    }
    assert len(keys) == 6
    # Injected faults change how the data arrives, not what it is: a faulty run resumes a clean one.
    assert WikimediaResource(world_faults="http429=0.5").identity_key() == WikimediaResource().identity_key()


@pytest.mark.parametrize("source", ["live", "endpoints"])
def test_every_source_but_the_embedded_world_needs_a_contact(source: str) -> None:
    with pytest.raises(ConfigError, match=f"source='{source}' needs a contact"):
        with WikimediaResource(source=source).open():
            pass
    with WikimediaResource(source=source, contact="me@example.org").open() as endpoints:
        assert "(me@example.org)" in endpoints.user_agent


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sparql_endpoint", "ftp://example.org/sparql", "not an http"),
        ("sparql_endpoint", "http://exa mple.org/sparql", "not an http"),
        ("wikipedia_api", "https://en.wikipedia.org/w/api.php", "must contain '{lang}'"),
    ],
)
def test_bad_endpoint_urls_are_refused_before_any_request(field: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        with WikimediaResource(source="endpoints", contact="me@example.org", **{field: value}).open():
            pass


def test_the_environment_chooses_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLM_WORLD_SIZE", "tiny")
    monkeypatch.setenv("MLM_WORLD_SEED", "99")
    resource = wikimedia_from_env()
    assert (resource.source, resource.world_size, resource.world_seed) == ("embedded", "tiny", 99)
    monkeypatch.setenv("MLM_WORLD_SIZE", "huge")
    with pytest.raises(Exception, match="world_size='huge'"):
        wikimedia_from_env()

"""How a client reaches a source: its endpoints, its User-Agent, and the error for a setting
that must be fixed before any request is sent.

Kept free of Dagster so that the pure clients (``sparql``, ``download``) can use it; the
Dagster resource that chooses a source is ``mlm_pipeline.resources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from mlm_pipeline import __version__

LIVE_SPARQL = "https://query.wikidata.org/sparql"
LIVE_WIKIPEDIA_API = "https://{lang}.wikipedia.org/w/api.php"
LIVE_COMMONS_API = "https://commons.wikimedia.org/w/api.php"
LIVE_COMMONS_FILEPATH = "https://commons.wikimedia.org/wiki/Special:FilePath/"


class ConfigError(ValueError):
    """A configuration value that must be fixed before any request is sent."""


@dataclass(frozen=True)
class Endpoints:
    """Everything a client needs to reach one source politely."""

    sparql_url: str
    wikipedia_api: str  # a template with ``{lang}``
    commons_api: str
    commons_filepath: str  # ``<commons_filepath><file name>?width=W``
    user_agent: str
    live: bool


def check_url(name: str, value: str, *, template: bool = False) -> str:
    probe = value.replace("{lang}", "en") if template else value
    parsed = urlparse(probe)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or any(c.isspace() for c in value):
        raise ConfigError(f"{name}={value!r} is not an http(s) URL")
    if template and "{lang}" not in value:
        raise ConfigError(f"{name}={value!r} must contain '{{lang}}' (one API per language)")
    return value


OFFLINE_CONTACT = "offline-embedded-world@localhost"


def user_agent(contact: str) -> str:
    """Wikimedia's format: ``<client>/<version> (<contact>) <library>/<version>``."""
    import aiohttp

    return f"mlm-pipeline/{__version__} ({contact or OFFLINE_CONTACT}) aiohttp/{aiohttp.__version__}"

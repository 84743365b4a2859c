"""How the stages talk to Wikimedia's services: the query and request settings that every
querying or downloading stage shares (each stage's own Config extends one of them), and what
the stages record of what their asking cost."""

from collections import Counter

from dagster import AssetExecutionContext, Config, MetadataValue
from pydantic import Field

from mlm_pipeline.download.politeness import Politeness
from mlm_pipeline.endpoints import Endpoints
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.sparql.client import ClientStats, RetryPolicy, SparqlClient
from mlm_pipeline.sparql.queries import check_endpoint, check_release, fetch_dataset_version


class SparqlQueryConfig(Config):
    """How queries are sent; shared by every stage that queries the SPARQL endpoint."""

    page_size: int = Field(
        10_000, ge=1, le=100_000, description="rows per answer at most (keep answers well inside 60 s)"
    )
    query_timeout_s: float = Field(55.0, gt=0, description="deadline per attempt, below the live service's 60 s")
    max_attempts: int = Field(6, ge=1, le=50, description="attempts per query before the asset fails")
    backoff_base_s: float = Field(2.0, ge=0, description="first back-off step; doubles per attempt, with jitter")
    allow_version_mismatch: bool = Field(
        False,
        description="build a release from an endpoint that serves another dataset version "
        "(only for source 'live' or 'endpoints': live Wikidata changes every minute)",
    )

    def client(self, endpoints: Endpoints, context: AssetExecutionContext) -> SparqlClient:
        check_endpoint("sparql_url", endpoints.sparql_url)
        policy = RetryPolicy(
            max_attempts=self.max_attempts, backoff_base_s=self.backoff_base_s, timeout_s=self.query_timeout_s
        )
        return SparqlClient(endpoints.sparql_url, endpoints.user_agent, policy, log=context.log)

    def served_release(
        self, client: SparqlClient, endpoints: Endpoints, wikimedia: WikimediaResource, partition_key: str
    ) -> str:
        """The dataset version, after checking that it is the release this run builds (the
        embedded world serves exactly one release, so the flag never applies to it)."""
        version = fetch_dataset_version(endpoints, client)
        check_release(version, partition_key, self.allow_version_mismatch and wikimedia.source != "embedded",
                      wikimedia.cadence())
        return version


def query_metadata(stats: ClientStats) -> dict[str, MetadataValue]:
    """What was asked of the endpoint: per kind of query, and the cost of asking."""
    return {
        "queries": MetadataValue.int(stats.queries),
        "queries_by_kind": MetadataValue.json(dict(sorted(stats.by_name.items()))),
        "http_requests": MetadataValue.int(stats.requests),
        "retries": MetadataValue.int(stats.retries),
        "failed_attempts": MetadataValue.json(dict(sorted(stats.failures.items()))),
        "rows_received": MetadataValue.int(stats.rows),
        "query_seconds": MetadataValue.float(round(stats.seconds, 3)),
        # name#sha256-prefix of every distinct query text: what was asked, comparable across builds
        "query_labels": MetadataValue.json(list(stats.labels)),
    }


class PoliteDownloadConfig(Config):
    """How requests are sent; shared by the download stages. Defaults follow Wikimedia's rules, and
    some rules are not settings: calls to one MediaWiki API go in series, each with ``maxlag=5``."""

    max_attempts: int = Field(5, ge=1, description="attempts per request before the item is recorded as failed")
    backoff_s: float = Field(1.0, gt=0, description="first back-off; doubles per attempt, with jitter")
    backoff_max_s: float = Field(60.0, gt=0, description="longest back-off between attempts")
    max_retry_after_s: float = Field(300.0, gt=0, description="a longer Retry-After fails the request instead of waiting")
    timeout_s: float = Field(60.0, gt=0, description="deadline per request attempt")
    timeout_hold_s: float = Field(
        10.0, ge=0, description="after a timeout the slot stays taken this long (the server may still be busy with it)"
    )
    max_redirects: int = Field(5, ge=0, description="redirects followed per request")
    progress_every_s: float = Field(10.0, gt=0, description="seconds between progress lines in the run's log")

    def politeness(self, endpoints: Endpoints, pools: dict[str, int] | None = None) -> Politeness:
        return Politeness(
            user_agent=endpoints.user_agent, pool_concurrency=pools or {},
            max_attempts=self.max_attempts, backoff_s=self.backoff_s, backoff_max_s=self.backoff_max_s,
            max_retry_after_s=self.max_retry_after_s, timeout_s=self.timeout_s, timeout_hold_s=self.timeout_hold_s,
            max_redirects=self.max_redirects,
        )


def request_metadata(stats: Counter[str], items: int) -> dict[str, MetadataValue]:
    """What the download cost the servers: requests, retries, 429s, per stored item."""
    return {
        "http_requests": MetadataValue.int(stats["requests"]),
        "retries": MetadataValue.int(stats["retries"]),
        "http_429_received": MetadataValue.int(stats["status_429"]),
        "requests_per_item": MetadataValue.float(round(stats["requests"] / items, 4) if items else 0.0),
        "troubles": MetadataValue.json({k.removeprefix("trouble_"): v for k, v in sorted(stats.items())
                                        if k.startswith("trouble_")}),
        # 429s lower a pool's concurrency (never above its configured limit): how often, how far.
        "concurrency_lowered": MetadataValue.json({
            k.removeprefix("lowered@"): {"times": v, "lowest": stats[f"lowest@{k.removeprefix('lowered@')}"]}
            for k, v in sorted(stats.items()) if k.startswith("lowered@")}),
    }

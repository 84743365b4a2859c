"""Stage 1: the base entity type and its subclass closure (paper 3.3.1-3.3.2)."""

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from mlm_pipeline import pools
from mlm_pipeline.config_rules import Qid
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.endpoints import Endpoints
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.sparql.client import ClientStats, RetryPolicy, SparqlClient
from mlm_pipeline.sparql.closure import fetch_closure
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


class SettlementClassesConfig(SparqlQueryConfig):
    base_class: Qid = Field("Q486972", description="the base entity type (human settlement)")
    max_hops: int = Field(3, ge=0, le=20, description="subclass hops below the base class")
    batch_size: int = Field(200, ge=1, le=5_000, description="classes per VALUES block")


@asset(
    partitions_def=release_partitions,
    pool=pools.WIKIDATA_QUERY,
    description="Subclasses of the base class up to max_hops wdt:P279 hops, with shortest hop "
    "count, a parent on a shortest path and the English label (schemas.SETTLEMENT_CLASSES).",
)
def settlement_classes(
    context: AssetExecutionContext, config: SettlementClassesConfig, wikimedia: WikimediaResource
) -> Output:
    with wikimedia.open(context.partition_key) as endpoints, config.client(endpoints, context) as client:
        version = config.served_release(client, endpoints, wikimedia, context.partition_key)
        table = fetch_closure(
            client, config.base_class, config.max_hops, config.batch_size, config.page_size, log=context.log
        )
    hops = table.column("hops").to_pylist()
    metadata = {
        **provenance(
            source=wikimedia, endpoints=endpoints, dataset_version=version, release=context.partition_key, config=config
        ),
        "classes_by_hops": MetadataValue.json({str(h): hops.count(h) for h in sorted(set(hops))}),
        **query_metadata(client.stats),
    }
    return Output(table, metadata=metadata)

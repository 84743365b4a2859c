"""Stage 1: the base entity type and its subclass closure (paper 3.3.1-3.3.2)."""

from dagster import AssetExecutionContext, MetadataValue, Output, asset
from pydantic import Field

from mlm_pipeline import pools
from mlm_pipeline.assets.source_access import SparqlQueryConfig, query_metadata
from mlm_pipeline.config_rules import Qid
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.sparql.closure import fetch_closure


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

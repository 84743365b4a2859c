"""Talking to a SPARQL 1.1 endpoint: a polite client, portable queries, closure and extraction."""

from mlm_pipeline.sparql.client import QueryFailed, RetryPolicy, SparqlClient
from mlm_pipeline.sparql.queries import fetch_dataset_version, release_key

__all__ = ["QueryFailed", "RetryPolicy", "SparqlClient", "fetch_dataset_version", "release_key"]

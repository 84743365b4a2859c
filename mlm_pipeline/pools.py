"""Concurrency pools: limits that hold across every run on the instance, not just within one.

A pool slot is a step (``dagster.yaml`` gives each pool one slot by default), so two runs
together never query the query service at once (its rule: one query at a time per client),
never download media in two steps at once (each images step keeps to the media limit of two
connections by itself), and never run two encoders at once on a small machine.
Training is left out: a model step's torch threads are set by its config (the quick profile
uses one), so two models can share two cores.
"""

WIKIDATA_QUERY = "wikidata_query"
"""Steps that send queries to the SPARQL endpoint (classes, entities)."""
WIKIPEDIA_API = "wikipedia_api"
"""Steps that call the Wikipedia APIs (summaries)."""
WIKIMEDIA_MEDIA = "wikimedia_media"
"""Steps that download from Commons (images)."""
COMPUTE = "compute"
"""Steps that run the image and text encoders (torch uses every core it is given)."""

ALL = (WIKIDATA_QUERY, WIKIPEDIA_API, WIKIMEDIA_MEDIA, COMPUTE)

"""Talking to a SPARQL 1.1 endpoint: a polite client, portable queries, closure and extraction."""

"""Polite, resumable downloads from Wikimedia (or the embedded world): summaries and images."""

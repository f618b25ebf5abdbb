"""The enricher: raw probe events + process tree + container identity -> enriched events."""

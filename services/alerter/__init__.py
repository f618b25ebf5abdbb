"""The alerter: evaluates rules against enriched events and raises alerts."""

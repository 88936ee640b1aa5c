"""Match a customer's item list against a reference product catalog, orchestrated by Dagster."""

__version__ = "0.1.0"

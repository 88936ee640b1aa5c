"""The matching core: plain functions and dataclasses over pandas. Knows nothing of Dagster."""

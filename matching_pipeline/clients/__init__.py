"""Clients for external systems (model APIs, search APIs): plain async Python, no Dagster.

They own transport concerns (retries, pacing, concurrency, usage accounting) so that the
Dagster layer only configures them and the stages only ask questions.
"""

"""Alembic revisions of the results database (``env.py``, ``versions/``), shipped as package data
and applied by :mod:`matching_pipeline.results.migrate` whenever a database is opened."""

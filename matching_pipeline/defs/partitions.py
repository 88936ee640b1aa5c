"""The one dynamic partitions definition that all projects share: one key per ten-item chunk.

Keys of finished, old batches are retired from the set (``defs/retention.py``) so that it stays
far below Dagster's documented ceiling; every path that requests runs for chunk keys adds back the
keys it needs first, through :func:`ensure_chunk_keys`.
"""

from collections.abc import Sequence

import dagster as dg

from matching_pipeline.results.store import chunk_key, parse_chunk_key

CHUNKS = "chunks"
"""The definition's name, typed ``str`` (``CHUNKS`` is optional to type checkers)."""

chunk_partitions = dg.DynamicPartitionsDefinition(name=CHUNKS)

ADD_SLICE = 10_000
"""Keys per ``add_dynamic_partitions`` call: a few tens of thousands in one call can exceed
SQLite's limit on variables per statement."""


def keys_between(first: str, last: str) -> list[str]:
    """Every chunk key from ``first`` to ``last``, read from the keys themselves.

    A run's range never leaves one batch (runs are planned per batch), and a batch's chunks are
    numbered 1..n without gaps, so the range can be expanded without the partition set: that is
    what lets the status view and re-runs find the chunks of a batch whose keys were retired.
    Returns ``[]`` for keys of different batches or not in the ``b000012:acme:00003`` shape.
    """
    try:
        batch, project, start = parse_chunk_key(first)
        last_batch, last_project, end = parse_chunk_key(last)
    except ValueError:
        return []
    if (batch, project) != (last_batch, last_project) or end < start:
        return []
    return [chunk_key(batch, project, index) for index in range(start, end + 1)]


def ensure_chunk_keys(
    instance: dg.DagsterInstance, keys: Sequence[str], ordered: Sequence[str] | None = None
) -> list[str]:
    """Add whichever of ``keys`` the partition set lacks (never added, or retired), and return
    the set's keys in order afterwards. ``ordered`` is the set as the caller already read it."""
    current = list(instance.get_dynamic_partitions(CHUNKS) if ordered is None else ordered)
    known = set(current)
    missing = list(dict.fromkeys(key for key in keys if key not in known))
    if not missing:
        return current
    for start in range(0, len(missing), ADD_SLICE):
        instance.add_dynamic_partitions(CHUNKS, missing[start : start + ADD_SLICE])
    return list(instance.get_dynamic_partitions(CHUNKS))

"""The one dynamic partitions definition that all projects share: one key per ten-item chunk."""

import dagster as dg

chunk_partitions = dg.DynamicPartitionsDefinition(name="chunks")

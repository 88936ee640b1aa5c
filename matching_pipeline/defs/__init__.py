"""The Dagster layer: wires the pure matching core into assets, resources, sensors and schedules."""

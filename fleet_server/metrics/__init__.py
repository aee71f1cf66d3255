"""Room usage, environment and smart-campus coverage figures, read from rollups that a
background job keeps up to date from the stored windows (docs/metrics.md)."""

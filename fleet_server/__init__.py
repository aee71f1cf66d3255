"""CampusFleet fleet server: MQTT ingest, registry, metrics, REST API and dashboards."""
__version__ = "0.1.0"

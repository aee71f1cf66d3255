"""MQTT ingest: the paho adapter (mqtt_adapter), the storage service (store) and the
counters behind /metrics (stats)."""

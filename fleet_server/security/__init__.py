"""Device identity and broker access: who may connect to the MQTT broker and which
topics each client may use (docs/security.md). One rule set, two brokers: Mosquitto
through its dynamic-security plugin, the embedded amqtt through our own plugin."""

"""Firmware releases (docs/ota.md): build a signed bundle of the node app for OTA
(build.py), the offline Ed25519 release key (keys.py), and the server's release store
(store.py)."""

"""Reads and validates the node's config.json (PROTOCOL.md, "Node config file"), and
applies `config` commands to it.

The node refuses a config it cannot run rather than guessing (ValueError with the
reason); provisioning validates the same ranges on the host before writing the file."""
import json
import os

from micropython import const

# (key, min, max) of the integer settings, which a `config` command may also change.
# Presence hold times (DOMAIN.md "Presence fusion"): vacant after PIR and radar have been
# quiet this long. With a working radar a still class keeps the room occupied, so the hold
# after the radar goes quiet can be short (the default 30 s bridges the LD2410's brief
# drop-outs on seated pupils without inflating occupied time).
_RANGES = const((("window_s", 10, 900), ("status_s", 30, 86400), ("hold_s", 10, 3600),
                 ("radar_hold_s", 5, 3600)))


def _check_int(name, value):
    for key, lo, hi in _RANGES:
        if key == name:
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError("%s must be an integer %d..%d" % (name, lo, hi))
            return value
    raise ValueError("%s cannot be set by command" % name)


def load(path="config.json"):
    """The validated config with defaults filled in. Raises ValueError with the reason."""
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ValueError("no %s in the working directory" % path)
    except ValueError:
        raise ValueError("%s is not valid JSON" % path)
    if not isinstance(cfg, dict) or cfg.get("v") != 1:
        raise ValueError("config.json must be an object with \"v\": 1")
    dev = cfg.get("device_id")
    if (not isinstance(dev, str) or len(dev) != 15 or not dev.startswith("cf-")
            or dev[3:].strip("0123456789abcdef")):
        raise ValueError("device_id must match ^cf-[0-9a-f]{12}$")
    mqtt = cfg.get("mqtt")
    if not isinstance(mqtt, dict) or not isinstance(mqtt.get("host"), str) or not mqtt["host"]:
        raise ValueError("mqtt.host is required")
    port = mqtt.get("port", 8883 if mqtt.get("tls") else 1883)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError("mqtt.port must be 1..65535")
    mqtt["port"] = port
    cfg["window_s"] = _check_int("window_s", cfg.get("window_s", 60))
    cfg["status_s"] = _check_int("status_s", cfg.get("status_s", 300))
    presence = cfg.get("presence", {})
    if not isinstance(presence, dict):
        raise ValueError("presence must be an object")
    merged = {"hold_s": 300, "radar_hold_s": 30}
    for key in presence:
        if key in merged:
            merged[key] = _check_int(key, presence[key])
    cfg["presence"] = merged
    # Firmware updates (docs/ota.md): the release public key (Ed25519, 64 hex digits,
    # written at provisioning), and when an update counts as good.
    key = cfg.get("ota_pubkey")
    if key is not None and (not isinstance(key, str) or len(key) != 64
                            or key.lower().strip("0123456789abcdef")):
        raise ValueError("ota_pubkey must be 64 hex digits (an Ed25519 public key)")
    for key, lo, hi, default in (("ota_confirm_windows", 1, 1000, 3), ("ota_confirm_min", 1, 1440, 10)):
        value = cfg.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError("%s must be an integer %d..%d" % (key, lo, hi))
        cfg[key] = value
    if "ntp" not in cfg:
        cfg["ntp"] = ["ntp.aliyun.com", "pool.ntp.org"]
    if "board" not in cfg:
        cfg["board"] = "sim" if "sim" in cfg else "esp32-devkit"
    return cfg


def apply_update(cfg, args, path="config.json"):
    """Validates a `config` command's args (window_s, status_s, hold_s, radar_hold_s),
    writes config.json atomically and returns the new config. Raises ValueError (the
    old config stays) on anything unknown or out of range."""
    if not args:
        raise ValueError("empty config update")
    new = dict(cfg)
    new["presence"] = presence = dict(cfg["presence"])
    for key, value in args.items():
        _check_int(key, value)
        if key in presence:
            presence[key] = value
        else:
            new[key] = value
    with open(path + ".tmp", "w") as f:
        json.dump(new, f)
    os.rename(path + ".tmp", path)  # atomic on LittleFS and POSIX: old or new, never half
    return new


def config_hash(cfg):
    """Short SHA-256 of the command-settable values in a fixed order, so the server can
    tell which settings a node runs without the secrets in config.json."""
    import binascii
    import hashlib
    p = cfg["presence"]
    text = "window_s=%d;status_s=%d;hold_s=%d;radar_hold_s=%d" % (
        cfg["window_s"], cfg["status_s"], p["hold_s"], p["radar_hold_s"])
    return binascii.hexlify(hashlib.sha256(text.encode()).digest()[:8]).decode()

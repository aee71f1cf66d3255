"""Reads and validates the node's config.json (PROTOCOL.md, "Node config file").

The node refuses a config it cannot run rather than guessing; provisioning validates
the same ranges on the host before writing the file."""
import json

# Presence hold times (DOMAIN.md "Presence fusion"): vacant after PIR and radar have
# been quiet this long. With a working radar a still class keeps the room occupied, so
# the hold after the radar goes quiet can be short (30 s bridges the LD2410's brief
# drop-outs on seated pupils without inflating occupied time).
PRESENCE_DEFAULTS = {"hold_s": 300, "radar_hold_s": 30}

DEFAULTS = {
    "window_s": 60,
    "status_s": 300,
    "ntp": ["ntp.aliyun.com", "pool.ntp.org"],
    "presence": PRESENCE_DEFAULTS,
}

# key: (min, max) for integer settings a `config` command may also change.
RANGES = {
    "window_s": (10, 900),
    "status_s": (30, 86400),
    "hold_s": (10, 3600),
    "radar_hold_s": (5, 3600),
}


class ConfigError(ValueError):
    pass


def _check_int(name, value):
    lo, hi = RANGES[name]
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError("%s must be an integer %d..%d" % (name, lo, hi))
    return value


def valid_device_id(s):
    if not isinstance(s, str) or len(s) != 15 or not s.startswith("cf-"):
        return False
    for c in s[3:]:
        if c not in "0123456789abcdef":
            return False
    return True


def validate(cfg):
    if not isinstance(cfg, dict) or cfg.get("v") != 1:
        raise ConfigError("config.json must be an object with \"v\": 1")
    if not valid_device_id(cfg.get("device_id")):
        raise ConfigError("device_id must match ^cf-[0-9a-f]{12}$")
    mqtt = cfg.get("mqtt")
    if not isinstance(mqtt, dict) or not isinstance(mqtt.get("host"), str) or not mqtt["host"]:
        raise ConfigError("mqtt.host is required")
    port = mqtt.get("port", 8883 if mqtt.get("tls") else 1883)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError("mqtt.port must be 1..65535")
    mqtt["port"] = port
    for key in ("window_s", "status_s"):
        cfg[key] = _check_int(key, cfg.get(key, DEFAULTS[key]))
    presence = cfg.get("presence", {})
    if not isinstance(presence, dict):
        raise ConfigError("presence must be an object")
    merged = dict(PRESENCE_DEFAULTS)
    for key in presence:
        if key in merged:
            merged[key] = _check_int(key, presence[key])
    cfg["presence"] = merged
    if "ntp" not in cfg:
        cfg["ntp"] = DEFAULTS["ntp"]
    if "board" not in cfg:
        cfg["board"] = "sim" if "sim" in cfg else "esp32-devkit"
    return cfg


# Settings a `config` command may change (PROTOCOL.md): top-level key or presence key.
UPDATABLE = ("window_s", "status_s", "hold_s", "radar_hold_s")


def apply_update(cfg, args):
    """Validate a `config` command's args, write config.json atomically, return the
    new config. Raises ConfigError (the old config stays) on anything unknown or out
    of range."""
    if not args:
        raise ConfigError("empty config update")
    new = dict(cfg)
    new["presence"] = dict(cfg["presence"])
    for key, value in args.items():
        if key not in UPDATABLE:
            raise ConfigError("%s cannot be set by command" % key)
        _check_int(key, value)
        if key in ("hold_s", "radar_hold_s"):
            new["presence"][key] = value
        else:
            new[key] = value
    save(new)
    return new


def config_hash(cfg):
    """Short SHA-256 of the command-settable values in a fixed order, so the server can
    tell which settings a node runs without the secrets in config.json."""
    import hashlib
    import binascii
    p = cfg["presence"]
    text = "window_s=%d;status_s=%d;hold_s=%d;radar_hold_s=%d" % (
        cfg["window_s"], cfg["status_s"], p["hold_s"], p["radar_hold_s"])
    return binascii.hexlify(hashlib.sha256(text.encode()).digest()[:8]).decode()


def save(cfg, path="config.json"):
    import os
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f)
    os.rename(tmp, path)  # atomic on LittleFS and POSIX: old or new, never half


def load(path="config.json"):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError("no %s in the working directory" % path)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)
    return validate(cfg)

"""A real Mosquitto with its dynamic-security plugin for the identity tests: anonymous
clients refused, an admin client in a dynamic-security.json written here (the same
file `mosquitto_ctrl dynsec init FILE admin` writes), its password in a 0600 file."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.utils.services import Mosquitto

PLUGIN_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
                     "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
                     "/usr/lib/mosquitto_dynamic_security.so")
ADMIN_USER = "dynsec-admin"
# PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt: what mosquitto_ctrl dynsec init
# writes (mosquitto 2.0 password_mosq.c, pw_sha512_pbkdf2).
_ITERATIONS = 101


def dynsec_plugin_path() -> str:
    for path in PLUGIN_CANDIDATES:
        if Path(path).exists():
            return path
    try:
        out = subprocess.run(["dpkg", "-L", "mosquitto"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.endswith("/mosquitto_dynamic_security.so"):
                return line
    except OSError:
        pass
    pytest.fail("Mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) is not installed; "
                "`sudo apt-get install -y mosquitto` (Debian ships it in the mosquitto package)", pytrace=False)


def dynsec_password(password: str) -> dict:
    salt = secrets.token_bytes(12)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS, 64)
    return {"password": base64.b64encode(key).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": _ITERATIONS}


def initial_dynsec_config(admin_user: str, admin_password: str) -> dict:
    """Same content as `mosquitto_ctrl dynsec init`: one admin client whose role may use
    the $CONTROL API and read everything; defaults deny sends and subscriptions."""
    topic_acls = [("publishClientSend", "$CONTROL/dynamic-security/#"),
                  ("publishClientReceive", "$CONTROL/dynamic-security/#"),
                  ("subscribePattern", "$CONTROL/dynamic-security/#"),
                  ("publishClientReceive", "$SYS/#"), ("subscribePattern", "$SYS/#"),
                  ("publishClientReceive", "#"), ("subscribePattern", "#"), ("unsubscribePattern", "#")]
    return {
        "clients": [{"username": admin_user, "textName": "Dynsec admin user",
                     **dynsec_password(admin_password), "roles": [{"rolename": "admin"}]}],
        "roles": [{"rolename": "admin",
                   "acls": [{"acltype": t, "topic": topic, "allow": True} for t, topic in topic_acls]}],
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True,
                             "subscribe": False, "unsubscribe": True},
    }


class MosquittoDynsec(Mosquitto):
    """Mosquitto on a free port with `allow_anonymous false` and dynamic security."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.admin_user = ADMIN_USER
        self.admin_password = secrets.token_urlsafe(24)
        self.admin_password_file = workdir / "dynsec-admin.pw"
        self.admin_password_file.write_text(self.admin_password + "\n")
        self.admin_password_file.chmod(0o600)
        self.dynsec_file = workdir / "dynamic-security.json"
        self.dynsec_file.write_text(json.dumps(initial_dynsec_config(self.admin_user, self.admin_password), indent=1))
        as_root = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous false\n"
            f"plugin {dynsec_plugin_path()}\n"
            f"plugin_opt_config_file {self.dynsec_file}\n"
            "persistence false\n" + as_root +
            "max_inflight_messages 1000\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        self.conf.chmod(0o644)

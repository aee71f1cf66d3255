"""Mosquitto variants for the TLS and IPv6 tests: the same real broker as
tests/utils/services.Mosquitto, with a TLS listener (certificates made by
`fleet_server.security.certs`, the code behind `campusfleet certs init`) and/or on an
IPv6 address such as ::1; and the dynamic-security broker of the identity tests on
such an address."""
from __future__ import annotations

import os
from pathlib import Path

from tests.utils.mosquitto_dynsec import MosquittoDynsec
from tests.utils.services import Mosquitto, free_port, url_host

__all__ = ["MosquittoOn", "MosquittoDynsecOn", "url_host"]


class MosquittoOn(Mosquitto):
    """Mosquitto listening on `host` (e.g. '::1'), plain MQTT or, with a `tls` triple
    (cafile, certfile, keyfile), TLS only. The config is the one docs/security.md shows."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1", port: int | None = None,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        super().__init__(workdir, port, host=host)
        self.port = port or free_port(host)
        self.tls = tls
        as_root = "user root\n" if os.geteuid() == 0 else ""
        lines = [f"listener {self.port} {host}", "allow_anonymous true", "persistence false"]
        if tls is not None:
            cafile, certfile, keyfile = tls
            lines += [f"cafile {cafile}", f"certfile {certfile}", f"keyfile {keyfile}",
                      "tls_version tlsv1.2"]
        self.conf.write_text("\n".join(lines) + "\n" + as_root
                             + "max_inflight_messages 1000\nmax_queued_messages 100000\nlog_dest stderr\n")
        self.conf.chmod(0o644)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{url_host(self.host)}:{self.port}"


class MosquittoDynsecOn(MosquittoDynsec):
    """tests/utils/mosquitto_dynsec.MosquittoDynsec (no anonymous clients, dynamic
    security) listening on `host`, e.g. '::1': `listener PORT ::1` in its config."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.default_host = host        # read by Mosquitto.__init__, before the config is written
        super().__init__(workdir)
        assert self.host == host and f"listener {self.port} {host}\n" in self.conf.read_text()

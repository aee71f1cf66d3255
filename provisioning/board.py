"""A MicroPython board reached over its serial REPL with mpremote's library
(`SerialTransport`), in `resume` mode: no soft reset, so a running unix-port REPL on a
pty (a virtual board) survives. Reads what provisioning needs from the board itself."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from provisioning.errors import ProvisionError

# Run on the board: hex SHA-256 of each path (None when absent), in 512-byte reads so a
# large file never needs its size in RAM. hashlib/binascii are in every port we target.
_HASH_SCRIPT = """
import hashlib, binascii
def _cf_h(p):
    d = hashlib.sha256()
    b = bytearray(512)
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    with f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            d.update(memoryview(b)[:n])
    return binascii.hexlify(d.digest()).decode()
print(repr({p: _cf_h(p) for p in %r}))
del _cf_h
"""

# The Wi-Fi station MAC (the device id's source). The unix port has no `network`: a
# virtual board keeps its made-up MAC in the file `.mac` (its stand-in for the eFuse).
_INFO_SCRIPT = """
import sys, os
try:
    import network, binascii
    _m = binascii.hexlify(network.WLAN(network.STA_IF).config('mac')).decode()
except ImportError:
    try:
        with open('.mac') as _f:
            _m = _f.read().strip().replace(':', '').lower()
    except OSError:
        _m = None
_i = sys.implementation
print(repr({'mac': _m, 'platform': sys.platform, 'version': tuple(_i.version[:3]),
            'mpy': getattr(_i, '_mpy', None), 'machine': getattr(_i, '_machine', ''),
            'cwd': os.getcwd()}))
"""


@dataclass(frozen=True)
class BoardInfo:
    mac: str | None          # 12 lowercase hex digits
    platform: str            # sys.platform: esp32, linux (the unix port)
    version: tuple[int, int, int]
    mpy: int | None          # sys.implementation._mpy: version | sub-version << 8 | arch << 10
    machine: str

    @property
    def mpy_version(self) -> tuple[int, int] | None:
        """(bytecode version, sub-version) the board loads, e.g. (6, 3)."""
        if self.mpy is None:
            return None
        return self.mpy & 0xFF, (self.mpy >> 8) & 3


class Board:
    """An open REPL connection. Use as a context manager; every call runs in the raw REPL."""

    def __init__(self, port: str, baud: int = 115200) -> None:
        self.port = port
        try:
            self.transport = SerialTransport(port, baudrate=baud)
        except TransportError as e:
            raise ProvisionError(f"cannot open {port}: {e}") from None
        try:
            # resume: interrupt what runs (Ctrl-C), enter the raw REPL, but no soft reset.
            # On a pty (QEMU, a virtual board) mpremote reads without a timeout, so a silent
            # peer would block forever: bound the reads while the REPL has not answered yet.
            self.transport.serial.timeout = 1.0
            self.transport.enter_raw_repl(soft_reset=False)
            self.transport.serial.timeout = None
        except TransportError:
            self.transport.close()
            raise ProvisionError(f"no MicroPython REPL answers on {port}: flash MicroPython first "
                                 "(`campus-provision flash`) or press the board's reset button") from None

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.transport.exit_raw_repl()
        except Exception:  # noqa: BLE001 - the link may already be gone (board reset)
            pass
        try:
            self.transport.close()
        except OSError:   # the port vanished with the reset (USB-CDC boards, a virtual board's pty)
            try:
                self.transport.serial.close()
            except OSError:
                pass

    def exec(self, code: str) -> bytes:
        try:
            return self.transport.exec(code)
        except TransportExecError as e:
            last = (e.error_output.strip().splitlines() or ["?"])[-1]
            raise ProvisionError(f"the board on {self.port} failed: {last}") from None

    def eval_literal(self, code: str) -> Any:
        """Runs code that prints one repr() and returns it as a Python value."""
        return ast.literal_eval(self.exec(code).decode().strip())

    def info(self) -> BoardInfo:
        d = self.eval_literal(_INFO_SCRIPT)
        return BoardInfo(mac=d["mac"], platform=d["platform"], version=tuple(d["version"]),
                         mpy=d["mpy"], machine=d["machine"])

    def file_hashes(self, paths: list[str]) -> dict[str, str | None]:
        return self.eval_literal(_HASH_SCRIPT % (list(paths),)) if paths else {}

    def read_file(self, path: str) -> bytes | None:
        try:
            return bytes(self.transport.fs_readfile(path, chunk_size=512))
        except (OSError, TransportError, TransportExecError):
            return None

    def read_config(self) -> dict | None:
        raw = self.read_file("config.json")
        if raw is None:
            return None
        try:
            cfg = json.loads(raw)
        except ValueError:
            return None
        return cfg if isinstance(cfg, dict) else None

    def write_file(self, path: str, data: bytes, chunk_size: int = 512) -> None:
        """Writes path atomically: path + '.tmp' first, then a rename over path, so a
        cut cable leaves the old file or the new one, never half of it."""
        try:
            self.transport.fs_writefile(path + ".tmp", data, chunk_size=chunk_size)
        except (OSError, TransportError, TransportExecError) as e:
            raise ProvisionError(f"writing {path} to the board failed: {e}") from None
        self.exec(f"import os\nos.rename({path + '.tmp'!r}, {path!r})")

    def makedirs(self, dirs: list[str]) -> None:
        if dirs:
            self.exec("import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass" % (dirs,))

    def remove(self, paths: list[str]) -> None:
        if paths:
            self.exec("import os\nfor p in %r:\n try:\n  os.remove(p)\n except OSError:\n  pass" % (paths,))

    def hard_reset(self) -> None:
        """Restarts the board like its reset button (machine.reset); the REPL link drops."""
        try:
            self.transport.exec_raw_no_follow("import machine\nmachine.reset()")
        except Exception:  # noqa: BLE001 - the board resets mid-reply
            pass

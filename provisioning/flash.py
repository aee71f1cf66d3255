"""Flash MicroPython with esptool's library API: connect (chip detection), flasher stub,
faster baud, MAC, chip erase, compressed write at the chip's offset, MD5 verify. An
image already in flash is left alone; a failed write is retried once at 115200 baud."""
from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from provisioning.errors import ProvisionError
from provisioning.nodeconfig import device_id_from_mac

# Where the MicroPython image (bootloader first) goes, per chip (Espressif's ESP-IDF
# bootloader offsets; MicroPython's download page says the same).
IMAGE_OFFSETS = {"esp32": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0}
CHIP_NAMES = {"ESP32": "esp32", "ESP32-S3": "esp32s3", "ESP32-C3": "esp32c3"}
ROM_BAUD = 115200
FAST_BAUD = 460800   # works on CP210x/CH340 USB-UART bridges at up to ~1 m of cable


@dataclass
class FlashResult:
    chip: str
    mac: str
    device_id: str
    offset: int
    size: int
    already_flashed: bool
    baud: int
    seconds: float
    attempts: list[str] = field(default_factory=list)   # why earlier attempts failed


class _PerThreadStream(io.TextIOBase):
    """Stands in for sys.stdout/stderr while flashes run: a thread that is flashing
    writes into its own log, every other write goes to the stream it replaced. (A
    plain redirect_stdout per flash is process-wide: two flashes of a batch would swap
    each other's streams and leave the screen's output in one board's log.)"""

    def __init__(self, replaced) -> None:
        self.replaced = replaced
        self.logs = threading.local()

    def _target(self):
        return getattr(self.logs, "log", None) or self.replaced

    def write(self, s: str) -> int:
        return self._target().write(s)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return False


_streams_lock = threading.Lock()
_streams: list = []          # [stdout proxy, stderr proxy, number of flashes using them]


@contextlib.contextmanager
def _quiet(log: io.StringIO):
    """esptool prints its progress: keep it (this thread's) for the error message, not the screen."""
    with _streams_lock:
        if not _streams:
            _streams[:] = [_PerThreadStream(sys.stdout), _PerThreadStream(sys.stderr), 0]
            sys.stdout, sys.stderr = _streams[0], _streams[1]
        _streams[2] += 1
        out, err = _streams[0], _streams[1]
    out.logs.log = err.logs.log = log
    try:
        yield
    finally:
        out.logs.log = err.logs.log = None
        with _streams_lock:
            _streams[2] -= 1
            if _streams[2] == 0:
                if sys.stdout is out:
                    sys.stdout = out.replaced
                if sys.stderr is err:
                    sys.stderr = err.replaced
                _streams.clear()


def connect(port: str, chip: str = "auto", baud: int = ROM_BAUD):
    """A connected esptool loader (ESPLoader subclass for the chip) in the ROM loader."""
    from esptool.cmds import detect_chip
    from esptool.targets import CHIP_DEFS
    esp = detect_chip(port, baud, connect_attempts=3)
    name = CHIP_NAMES.get(esp.CHIP_NAME)
    if name is None:
        raise ProvisionError(f"{esp.CHIP_NAME} is not a supported board chip (ESP32, ESP32-S3, ESP32-C3)")
    if chip != "auto" and CHIP_DEFS[chip].CHIP_NAME != esp.CHIP_NAME:
        raise ProvisionError(f"the board on {port} is an {esp.CHIP_NAME}, not {chip}")
    return esp


def chip_of(esp) -> str:
    return CHIP_NAMES[esp.CHIP_NAME]


def read_mac(esp) -> str:
    return ":".join(f"{b:02x}" for b in esp.read_mac())


def image_in_flash(esp, offset: int, image: bytes) -> bool:
    return esp.flash_md5sum(offset, len(image)) == hashlib.md5(image).hexdigest()


def flash_image(esp, image: bytes, offset: int, *, erase: bool = True) -> None:
    """Chip erase (a clean filesystem for MicroPython), compressed write, MD5 verify."""
    from esptool.cmds import erase_flash, verify_flash, write_flash
    if erase:
        erase_flash(esp)
    write_flash(esp, [(offset, image)], compress=True)
    verify_flash(esp, [(offset, image)])


def _attempt(port: str, chip: str, image_for: Callable[[str], bytes], baud: int, force: bool,
             log: io.StringIO) -> FlashResult:
    from esptool.cmds import attach_flash, reset_chip, run_stub
    t0 = time.monotonic()
    with _quiet(log):
        esp = connect(port, chip)
        try:
            esp = run_stub(esp)
            if baud > ROM_BAUD:
                esp.change_baud(baud)
            attach_flash(esp)
            name = chip_of(esp)
            mac = read_mac(esp)
            image = image_for(name)
            offset = IMAGE_OFFSETS[name]
            already = not force and image_in_flash(esp, offset, image)
            if not already:
                flash_image(esp, image, offset)
            try:
                reset_chip(esp, "hard-reset")   # leave the loader, boot MicroPython
            except Exception:  # noqa: BLE001 - no RTS line (socket://, some USB-CDC)
                pass
        finally:
            esp._port.close()
    return FlashResult(chip=name, mac=mac, device_id=device_id_from_mac(mac), offset=offset, size=len(image),
                       already_flashed=already, baud=baud, seconds=time.monotonic() - t0)


def flash(port: str, image_for: Callable[[str], bytes], *, chip: str = "auto", baud: int = FAST_BAUD,
          force: bool = False) -> FlashResult:
    """Flash the image image_for(chip) returns. A failed attempt at `baud` (cable,
    USB hub, a bridge that cannot keep up) is retried once at 115200 from a fresh
    connection; the image is verified by MD5 either way."""
    attempts: list[str] = []
    for rate in dict.fromkeys((baud, ROM_BAUD)):
        log = io.StringIO()
        try:
            result = _attempt(port, chip, image_for, rate, force, log)
            result.attempts = attempts
            return result
        except ProvisionError:
            raise
        except Exception as e:  # noqa: BLE001 - esptool FatalError, SerialException, OSError
            attempts.append(f"{rate} baud: {_reason(e)}")
    raise ProvisionError(f"flashing {port} failed ({'; '.join(attempts)}): check the USB cable, hold BOOT "
                         "while pressing RESET, and rerun; the node is not usable until a flash succeeds")


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__

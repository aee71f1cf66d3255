"""An ESP ROM serial loader simulator for host tests: speaks the real protocol (SLIP
frames, the ESP32 ROM commands and the flasher stub's) over a TCP socket, so the real
esptool connects with pyserial's socket://host:port URL.

Simulated: SYNC; chip detection by the magic register 0x40001000 (ESP32) or
GET_SECURITY_INFO's chip id (ESP32-S3, -C3); eFuse words holding the MAC; the SPI flash
controller's user commands (RDID, RDSFDP) at register level; MEM_BEGIN/DATA/END starting
the "stub" (which answers OHAI); SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE; FLASH_BEGIN/
DATA/END, FLASH_DEFL_BEGIN/DATA/END (zlib) into a bytearray flash; SPI_FLASH_MD5;
ERASE_FLASH and ERASE_REGION (stub only). A fault can drop the link mid-write.
Reference: esptool's "Serial Protocol" docs (command table, status bytes, SLIP)."""
from __future__ import annotations

import hashlib
import socket
import struct
import threading
import zlib
from dataclasses import dataclass

# Command opcodes (esptool docs, "Serial Protocol" -> "Supported by ROM / stub").
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END = 0x10, 0x11, 0x12
SPI_FLASH_MD5, GET_SECURITY_INFO = 0x13, 0x14
ERASE_FLASH, ERASE_REGION = 0xD0, 0xD1
# Error codes in the status bytes.
ERR_INVALID_MESSAGE, ERR_FAILED_TO_ACT, ERR_BAD_CRC = 0x05, 0x06, 0x07
CHIP_DETECT_MAGIC_REG = 0x40001000
SECTOR = 0x1000
# SPI flash opcodes (JEDEC): read ID, read SFDP.
RDID, RDSFDP = 0x9F, 0x5A
SPI_CMD_USR = 1 << 18


@dataclass(frozen=True)
class Chip:
    name: str
    magic: int | None            # value at 0x40001000 (chips detected by magic)
    chip_id: int | None          # GET_SECURITY_INFO chip id (ESP32-C3 and later)
    spi_base: int
    spi_w0: int                  # offset of the SPI data buffer W0
    spi_usr2: int
    mac_reg: int                 # first eFuse word holding the MAC
    mac_layout: str              # "esp32": words 1,2 with CRC byte; "new": MAC_EFUSE_REG, +4


CHIPS = {
    # ESP32 TRM: eFuse BLK0 at 0x3FF5A000, MAC in words 1..2; SPI1 at 0x3FF42000.
    "esp32": Chip("ESP32", 0x00F01D83, None, 0x3FF42000, 0x80, 0x24, 0x3FF5A000, "esp32"),
    # ESP32-S3 / -C3 TRM: eFuse MAC at EFUSE_BASE + 0x44; SPI1 at 0x60002000.
    "esp32s3": Chip("ESP32-S3", None, 9, 0x60002000, 0x58, 0x24, 0x60007000 + 0x44, "new"),
    "esp32c3": Chip("ESP32-C3", None, 5, 0x60002000, 0x58, 0x24, 0x60008800 + 0x44, "new"),
}


def slip_encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class RomSimulator:
    """One simulated board. start() listens on a free loopback port; `url` is what
    esptool opens. Each connection starts in the ROM loader (a reset into download mode)."""

    def __init__(self, chip: str = "esp32", mac: str = "24:0a:c4:12:34:56",
                 flash_size: int = 4 * 1024 * 1024) -> None:
        self.chip = CHIPS[chip]
        self.mac = bytes.fromhex(mac.replace(":", ""))
        self.flash = bytearray(b"\xff" * flash_size)
        self.regs: dict[int, int] = {}
        self.drop_after_blocks: int | None = None   # fault: cut the link after this many data blocks
        self.drops_left = 0
        self.connections = 0
        self.commands: list[int] = []
        self.bytes_written = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._closing = False
        self._efuse_words()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def inject_link_drop(self, after_blocks: int, times: int = 1) -> None:
        self.drop_after_blocks, self.drops_left = after_blocks, times

    def start(self) -> RomSimulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing = True
        self._sock.close()

    def _efuse_words(self) -> None:
        m = self.mac
        if self.chip.mac_layout == "esp32":
            # esptool/ESP32 TRM: word2 = CRC8 | MAC[0..1] ... packed big-endian as
            # (word2, word1)[2:8] == MAC: word2 low 16 bits = MAC[0:2], word1 = MAC[2:6].
            self.regs[self.chip.mac_reg + 4] = struct.unpack(">I", m[2:6])[0]
            self.regs[self.chip.mac_reg + 8] = struct.unpack(">I", b"\x00\x00" + m[0:2])[0]
        else:
            self.regs[self.chip.mac_reg] = struct.unpack(">I", m[2:6])[0]
            self.regs[self.chip.mac_reg + 4] = struct.unpack(">I", b"\x00\x00" + m[0:2])[0]
        if self.chip.magic is not None:
            self.regs[CHIP_DETECT_MAGIC_REG] = self.chip.magic

    # -- connection handling ------------------------------------------------------------

    def _serve(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                _Session(self, conn).run()


class _LinkDropped(Exception):
    pass


class _Session:
    """One connection: the chip was just reset into its ROM download mode."""

    def __init__(self, sim: RomSimulator, conn: socket.socket) -> None:
        self.sim = sim
        self.conn = conn
        self.stub = False
        self.blocks = 0
        self.write_at = 0
        self.write_end = 0
        self.inflate: zlib._Decompress | None = None
        self.buf = b""

    def run(self) -> None:
        try:
            while True:
                packet = self._read_frame()
                if packet is None:
                    return
                self._handle(packet)
        except (_LinkDropped, OSError):
            return

    def _read_frame(self) -> bytes | None:
        # Bytes before the first 0xC0 are line noise; a frame is C0 ... C0 (RFC 1055).
        while True:
            start = self.buf.find(b"\xc0")
            if start >= 0:
                end = self.buf.find(b"\xc0", start + 1)
                if end > start + 1:
                    raw, self.buf = self.buf[start + 1:end], self.buf[end:]
                    return raw.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
                if end == start + 1:
                    self.buf = self.buf[end:]
                    continue
            data = self.conn.recv(65536)
            if not data:
                return None
            self.buf += data

    def _reply(self, op: int, value: int = 0, data: bytes = b"", error: int = 0) -> None:
        # ROM: 4 status bytes (status, error, 2 reserved); the stub sends 2.
        status = bytes((1 if error else 0, error)) + (b"" if self.stub else b"\x00\x00")
        body = data + status
        self.conn.sendall(slip_encode(struct.pack("<BBHI", 1, op, len(body), value) + body))

    def _handle(self, packet: bytes) -> None:
        if len(packet) < 8 or packet[0] != 0:
            return
        _, op, size, checksum = struct.unpack("<BBHI", packet[:8])
        data = packet[8:8 + size]
        sim = self.sim
        sim.commands.append(op)
        if op == SYNC:
            if data != b"\x07\x07\x12\x20" + b"\x55" * 32:
                return
            # The ROM answers SYNC eight times with a non-zero value; a stub with 0.
            for _ in range(8):
                self._reply(op, 0 if self.stub else 0x20120707)
        elif op == READ_REG:
            (addr,) = struct.unpack("<I", data[:4])
            self._reply(op, self._read_reg(addr))
        elif op == WRITE_REG:
            addr, value, mask, _ = struct.unpack("<IIII", data[:16])
            self._write_reg(addr, value, mask)
            self._reply(op)
        elif op == GET_SECURITY_INFO:
            if sim.chip.chip_id is None:
                self._reply(op, error=ERR_INVALID_MESSAGE)   # the ESP32 ROM has no such command
            else:
                self._reply(op, data=struct.pack("<IBBBBBBBBII", 0, 0, *([0] * 7), sim.chip.chip_id, 0))
        elif op in (SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE):
            self._reply(op)
        elif op == MEM_BEGIN or op == MEM_DATA:
            self._reply(op)
        elif op == MEM_END:
            self._reply(op)
            (no_entry, _entry) = struct.unpack("<II", data[:8])
            if not no_entry:
                # The uploaded flasher stub starts and greets (esptool waits for "OHAI").
                self.stub = True
                self.conn.sendall(slip_encode(b"OHAI"))
        elif op in (FLASH_BEGIN, FLASH_DEFL_BEGIN):
            self._flash_begin(op, data)
        elif op in (FLASH_DATA, FLASH_DEFL_DATA):
            self._flash_data(op, data, checksum)
        elif op in (FLASH_END, FLASH_DEFL_END):
            self.inflate = None
            self._reply(op)
        elif op == SPI_FLASH_MD5:
            addr, length = struct.unpack("<II", data[:8])
            digest = hashlib.md5(sim.flash[addr:addr + length]).digest()
            # The ROM replies with 32 hex characters, the stub with the 16 raw bytes.
            self._reply(op, data=digest if self.stub else digest.hex().encode())
        elif op == ERASE_FLASH and self.stub:
            sim.flash[:] = b"\xff" * len(sim.flash)
            self._reply(op)
        elif op == ERASE_REGION and self.stub:
            addr, length = struct.unpack("<II", data[:8])
            sim.flash[addr:addr + length] = b"\xff" * length
            self._reply(op)
        else:
            self._reply(op, error=ERR_INVALID_MESSAGE)

    # -- registers: eFuses, the magic word, and the SPI flash controller -----------------

    def _read_reg(self, addr: int) -> int:
        chip = self.sim.chip
        if addr == chip.spi_base:          # SPI_CMD_REG: a user command finishes at once
            return 0
        return self.sim.regs.get(addr, 0)

    def _write_reg(self, addr: int, value: int, mask: int) -> None:
        chip = self.sim.chip
        old = self.sim.regs.get(addr, 0)
        self.sim.regs[addr] = (old & ~mask) | (value & mask)
        if addr == chip.spi_base and value & SPI_CMD_USR:
            opcode = self.sim.regs.get(chip.spi_base + chip.spi_usr2, 0) & 0xFF
            # RDID: Winbond W25Q32 (EF 40 16); RDSFDP at 0: the "SFDP" signature.
            w0 = {RDID: 0x1640EF, RDSFDP: 0x50444653}.get(opcode, 0)
            self.sim.regs[chip.spi_base + chip.spi_w0] = w0

    # -- flash writes ---------------------------------------------------------------------

    def _flash_begin(self, op: int, data: bytes) -> None:
        size, _blocks, _block_size, offset = struct.unpack("<IIII", data[:16])
        if offset + size > len(self.sim.flash):
            self._reply(op, error=ERR_FAILED_TO_ACT)
            return
        if not self.stub or op == FLASH_BEGIN:
            # The ROM erases the whole (sector-rounded) region up front.
            end = (offset + size + SECTOR - 1) // SECTOR * SECTOR
            self.sim.flash[offset:end] = b"\xff" * (end - offset)
        self.write_at = offset
        self.write_end = offset + size
        self.inflate = zlib.decompressobj() if op == FLASH_DEFL_BEGIN else None
        self._reply(op)

    def _flash_data(self, op: int, data: bytes, checksum: int) -> None:
        length, _seq = struct.unpack("<II", data[:8])
        block = data[16:16 + length]
        # ESP ROM checksum: 0xEF XORed with every data byte.
        check = 0xEF
        for b in block:
            check ^= b
        if check != checksum:
            self._reply(op, error=ERR_BAD_CRC)
            return
        sim = self.sim
        self.blocks += 1
        if sim.drop_after_blocks is not None and sim.drops_left > 0 and self.blocks > sim.drop_after_blocks:
            sim.drops_left -= 1
            raise _LinkDropped   # the cable is pulled: no reply, the connection closes
        raw = self.inflate.decompress(block) if self.inflate is not None else block
        if self.stub:
            # The stub erases sector by sector as it writes.
            first = self.write_at // SECTOR * SECTOR
            last = (self.write_at + len(raw) + SECTOR - 1) // SECTOR * SECTOR
            for s in range(first, min(last, len(sim.flash)), SECTOR):
                if s >= self.write_at:
                    sim.flash[s:s + SECTOR] = b"\xff" * SECTOR
        sim.flash[self.write_at:self.write_at + len(raw)] = raw
        self.write_at += len(raw)
        sim.bytes_written += len(raw)
        self._reply(op)

"""HLK-LD2410 / LD2410B / LD2410C 24 GHz presence radar on a UART (256000 8N1): parses the
report frames it streams (~10 Hz) and reads its firmware version through command frames."""
# Sections cited are from Hi-Link "LD2410C Serial Communication Protocol V1.00" (2022-11-07):
# 3.2 command frame, 3.3 ACK frame, 3.4 command workflow, 4.1 enable configuration,
# 4.2 end configuration, 4.8 read firmware version, 5.1 report frame, 5.2 intra-frame data,
# 5.3 target state, 5.4 basic target data, 5.5 engineering mode data. All values little-endian.
import time

from micropython import const

# 5.1: report frame = F4 F3 F2 F1, length u16, intra-frame data, F8 F7 F6 F5.
_REPORT_HEAD0 = const(0xF4)
_REPORT_TAIL = const(b"\xf8\xf7\xf6\xf5")
# 3.2/3.3: command and ACK frames = FD FC FB FA, length u16, data, 04 03 02 01.
_CMD_HEAD0 = const(0xFD)
_CMD_HEAD = const(b"\xfd\xfc\xfb\xfa")
_CMD_TAIL = const(b"\x04\x03\x02\x01")
_REPORT_HEAD = const(b"\xf4\xf3\xf2\xf1")
_FRAME_OVERHEAD = const(10)  # head 4 + length 2 + tail 4
# 5.2: intra-frame data = type, 0xAA, target data, 0x55, check 0x00.
_TYPE_ENGINEERING = const(0x01)
_TYPE_BASIC = const(0x02)
_DATA_HEAD = const(0xAA)
_DATA_TAIL = const(0x55)
_DATA_CHECK = const(0x00)
_BASIC_LEN = const(13)  # 5.4: type + 0xAA + 9 target bytes + 0x55 + check
_MAX_GATE = const(8)    # 7.3: gates 0..8
# Longest intra-frame length accepted: engineering data is 35 bytes (5.5 example) and newer
# firmware appends a few; anything longer is line noise read as a length.
_MAX_LEN = const(64)
# 4.1, 4.2, 4.8 command words; 3.3: an ACK echoes the word with 0x0100 set.
_CMD_ENABLE_CONFIG = const(0x00FF)
_CMD_END_CONFIG = const(0x00FE)
_CMD_READ_FIRMWARE = const(0x00A0)
_ACK_FLAG = const(0x0100)
_ENABLE_CONFIG_VALUE = const(b"\x01\x00")
# RX buffer: two longest frames; the parser always leaves less than one frame behind.
_RX_SIZE = const(2 * (_MAX_LEN + _FRAME_OVERHEAD))
_MAX_READS_PER_POLL = const(32)  # 32 x 148 bytes: far more than 256000 baud delivers per poll

# 5.3 target state: 0 none, 1 moving, 2 still, 3 moving and still.
_TARGET_NONE = const(0)
_TARGET_BOTH = const(3)


class LD2410:
    def __init__(self, uart):
        self.uart = uart
        self._rx = bytearray(_RX_SIZE)
        self.pos = 0      # bytes held in _rx (the write position)
        self._ack = None  # the latest ACK's data (3.3): command word | 0x0100, return value
        # Latest report (5.4); raw values as the radar sends them.
        self.target_state = _TARGET_NONE
        self.moving_cm = 0
        self.moving_energy = 0
        self.still_cm = 0
        self.still_energy = 0
        self.detect_cm = 0
        # Engineering mode (5.5): per-gate energies of the latest engineering frame.
        self.engineering = False
        self.moving_gates = bytearray(_MAX_GATE + 1)
        self.still_gates = bytearray(_MAX_GATE + 1)
        # Health counters.
        self.frames = 0
        self.bad_frames = 0
        self.junk_bytes = 0
        self.last_frame_ms = None
        self.firmware = None
        self.started_ms = time.ticks_ms()

    # --- public --------------------------------------------------------------------
    def poll(self):
        """Reads every byte the UART holds and parses it; returns the number of good
        report frames. Never blocks."""
        uart = self.uart
        mv = memoryview(self._rx)
        good = 0
        for _ in range(_MAX_READS_PER_POLL):
            avail = uart.any()
            if not avail:
                break
            n = self.pos
            space = _RX_SIZE - n
            got = uart.readinto(mv[n:n + (avail if avail < space else space)])
            if not got:
                break
            self.pos = n + got
            good += self._parse()
        return good

    def target(self):
        """True when the latest report has any target, moving or still."""
        return self.target_state != _TARGET_NONE

    def silent_ms(self):
        """Milliseconds since the last good report frame (since construction before any)."""
        ref = self.started_ms if self.last_frame_ms is None else self.last_frame_ms
        return time.ticks_diff(time.ticks_ms(), ref)

    def probe(self, timeout_ms=1500, read_firmware=True):
        """Waits for the first good report frame; raises OSError if none comes (radar
        missing, unpowered or on another baud rate). Then, optionally, reads the firmware
        version (None if the radar's RX line is not wired: reports still work)."""
        start = time.ticks_ms()
        while not self.poll():
            if time.ticks_diff(time.ticks_ms(), start) >= timeout_ms:
                raise OSError("LD2410: no report frame in %d ms (%d bad frames, %d junk bytes)"
                              % (timeout_ms, self.bad_frames, self.junk_bytes))
            time.sleep_ms(10)
        if read_firmware:
            self.read_firmware()

    def read_firmware(self, timeout_ms=300):
        """3.4 workflow: enable configuration, read firmware version, end configuration.
        Returns e.g. "1.07.22091615" and keeps it in self.firmware, or None."""
        try:
            if self._write(_CMD_ENABLE_CONFIG, _ENABLE_CONFIG_VALUE, timeout_ms):
                a = self._write(_CMD_READ_FIRMWARE, b"", timeout_ms)
                if a is not None and len(a) >= 10:
                    # 4.8: status u16, firmware type u16, major u16 (0x0107 -> "1.07"),
                    # minor u32 LE printed as hex digits, as ESPHome's ld2410 does. (4.8's
                    # example ACK has minor bytes 16 15 09 22, i.e. "22091516", though its
                    # caption reads V1.07.22091615.)
                    self.firmware = "%d.%02X.%02X%02X%02X%02X" % (
                        a[7], a[6], a[11], a[10], a[9], a[8])
        finally:
            # Always leave configuration mode: the radar sends no reports while in it.
            self._write(_CMD_END_CONFIG, b"", timeout_ms)
        return self.firmware

    # --- parsing -------------------------------------------------------------------
    def _parse(self):
        buf = self._rx
        n = self.pos
        i = 0
        good = 0
        while i < n:
            b = buf[i]
            if b != _REPORT_HEAD0 and b != _CMD_HEAD0:
                self.junk_bytes += 1
                i += 1
                continue
            head = _REPORT_HEAD if b == _REPORT_HEAD0 else _CMD_HEAD
            k = 1
            while k < 4 and i + k < n and buf[i + k] == head[k]:
                k += 1
            if k < 4:
                if i + k >= n:
                    break  # a header may be arriving: keep it for the next read
                self.junk_bytes += 1
                i += 1
                continue
            if n - i < 6:
                break
            length = buf[i + 4] | buf[i + 5] << 8
            if length > _MAX_LEN or length < 2:
                self.bad_frames += 1  # impossible length: resync on the next header
                i += 4
                continue
            end = i + _FRAME_OVERHEAD + length
            if end > n:
                break
            tail = _REPORT_TAIL if b == _REPORT_HEAD0 else _CMD_TAIL
            if (buf[end - 4] != tail[0] or buf[end - 3] != tail[1]
                    or buf[end - 2] != tail[2] or buf[end - 1] != tail[3]):
                # Bad tail: bytes lost or inserted. The next frame may start inside what
                # we took for this one, so search again from just after this header.
                self.bad_frames += 1
                i += 4
                continue
            if b == _REPORT_HEAD0:
                if self._report(i + 6, length):
                    good += 1
                else:
                    self.bad_frames += 1
            else:
                # 3.3 ACK: command word | 0x0100, then the return value (status u16
                # first). Without the flag it is our own command echoed back
                # (half-duplex wiring), not an ACK.
                word = buf[i + 6] | buf[i + 7] << 8
                if word & _ACK_FLAG:
                    self._ack = bytes(buf[i + 6:end - 4])
            i = end
        if i:
            rest = n - i
            if rest:
                mv = memoryview(buf)
                mv[:rest] = mv[i:n]
            self.pos = rest
        return good

    def _report(self, start, length):
        buf = self._rx
        kind = buf[start]
        if (buf[start + 1] != _DATA_HEAD or buf[start + length - 2] != _DATA_TAIL
                or buf[start + length - 1] != _DATA_CHECK or length < _BASIC_LEN):
            return False
        t = start + 2
        state = buf[t]
        if state > _TARGET_BOTH:
            return False
        if kind == _TYPE_BASIC:
            if length != _BASIC_LEN:
                return False
            self.engineering = False
        elif kind == _TYPE_ENGINEERING:
            # 5.5: after the 9 basic bytes: max moving gate M, max still gate S, M+1
            # moving energies, S+1 still energies, then firmware-specific extra bytes.
            m = buf[t + 9]
            s = buf[t + 10]
            if (m > _MAX_GATE or s > _MAX_GATE
                    or _BASIC_LEN + 2 + (m + 1) + (s + 1) > length):
                return False
            g = t + 11
            mg = self.moving_gates
            sg = self.still_gates
            for j in range(_MAX_GATE + 1):
                mg[j] = buf[g + j] if j <= m else 0
                sg[j] = buf[g + m + 1 + j] if j <= s else 0
            self.engineering = True
        else:
            return False
        # 5.4: state, moving cm u16, moving energy, still cm u16, still energy, detect cm u16.
        self.target_state = state
        self.moving_cm = buf[t + 1] | buf[t + 2] << 8
        self.moving_energy = buf[t + 3]
        self.still_cm = buf[t + 4] | buf[t + 5] << 8
        self.still_energy = buf[t + 6]
        self.detect_cm = buf[t + 7] | buf[t + 8] << 8
        self.frames += 1
        self.last_frame_ms = time.ticks_ms()
        return True

    # --- commands ------------------------------------------------------------------
    def _write(self, cmd, value, timeout_ms):
        """Sends one command frame and waits (polling) for its ACK. Returns the ACK's
        data on status 0, else None (refused, or no ACK in time)."""
        # 3.2: head, length u16 (command word + value), command word u16, value, tail.
        n = 2 + len(value)
        frame = _CMD_HEAD + bytes((n & 0xFF, n >> 8, cmd & 0xFF, cmd >> 8)) + value + _CMD_TAIL
        self._ack = None
        self.uart.write(frame)
        start = time.ticks_ms()
        while True:
            self.poll()
            a = self._ack
            if a is not None and a[0] | a[1] << 8 == cmd | _ACK_FLAG:
                return a if len(a) >= 4 and a[2] == 0 and a[3] == 0 else None
            if time.ticks_diff(time.ticks_ms(), start) >= timeout_ms:
                return None
            time.sleep_ms(5)

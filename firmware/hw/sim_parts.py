"""Bus-level simulations of the non-I2C parts (LD2410 UART, PIR pin, INMP441 I2S) so the
real drivers run on the unix port. Each reads a shared `room` (people, moving, noise_dba)
and a `clock()` returning sim Unix seconds; fault injection is a plain attribute."""
import array
import math
import struct
import time

from hw.prng import XorShift32

# --- HLK-LD2410 ---------------------------------------------------------------------
# Hi-Link LD2410C serial protocol V1.00: 5.1 report frame, 3.3 ACK frame, 4.x commands.
_REPORT_HEAD = b"\xf4\xf3\xf2\xf1"
_REPORT_TAIL = b"\xf8\xf7\xf6\xf5"
_CMD_HEAD = b"\xfd\xfc\xfb\xfa"
_CMD_TAIL = b"\x04\x03\x02\x01"
_CMD_ENABLE_CONFIG = 0x00FF
_CMD_END_CONFIG = 0x00FE
_CMD_READ_FIRMWARE = 0x00A0
# 4.1 ACK return: status 0, protocol version 1, buffer size 0x40.
_ENABLE_CONFIG_RETURN = b"\x00\x00\x01\x00\x40\x00"
# 4.8 ACK return for V1.07.22091615: status, type 0x0100, major 0x0107, minor 0x22091615.
_FIRMWARE_RETURN = b"\x00\x00\x00\x01\x07\x01\x16\x15\x09\x22"
SIM_LD2410_FIRMWARE = "1.07.22091615"
_UART_RX_FIFO = 512  # bytes the host side buffers before it drops new ones (like a full FIFO)


class SimLD2410Uart:
    """The UART a real LD2410 drives, as machine.UART: any(), read(), readinto(), write().

    Emits one basic report frame per sim second (the real part sends ~10 Hz; at 60x real
    time that would be 600 frames a second per node). Faults: `present = False` (no bytes
    at all), `garbage = True` (junk between frames and some frames corrupted so that a
    parser can tell: broken tail or marker, or a byte slipped in)."""

    def __init__(self, room, clock, seed=1, present=True, garbage=False):
        self.room = room
        self.clock = clock
        self.present = present
        self.garbage = garbage
        self.config_mode = False
        self.frames_sent = 0
        self.corrupted_sent = 0
        self._rng = XorShift32(seed * 104729 + 3)
        self._out = bytearray(_UART_RX_FIFO)
        self._rd = 0
        self._wr = 0
        self._cmd = bytearray()
        self._last_s = None
        # 5.4 basic frame, 23 bytes; fields patched in place per frame.
        self._frame = bytearray(_REPORT_HEAD + b"\x0d\x00\x02\xaa" + bytes(9) + b"\x55\x00"
                                + _REPORT_TAIL)
        self._still_cm = 150 + self._rng.randint(0, 400)

    # machine.UART
    def any(self):
        self._tick()
        return self._wr - self._rd

    def read(self, n=-1):
        self._tick()
        avail = self._wr - self._rd
        if n is None or n < 0 or n > avail:
            n = avail
        if not n:
            return None
        data = bytes(self._out[self._rd:self._rd + n])
        self._rd += n
        return data

    def readinto(self, buf, nbytes=-1):
        self._tick()
        avail = self._wr - self._rd
        n = len(buf) if nbytes < 0 else min(nbytes, len(buf))
        if n > avail:
            n = avail
        if not n:
            return None
        buf[:n] = memoryview(self._out)[self._rd:self._rd + n]
        self._rd += n
        return n

    def write(self, buf):
        if self.present:
            self._cmd.extend(buf)
            self._commands()
        return len(buf)

    # internals
    def _tick(self):
        if not self.present or self.config_mode:
            return
        s = int(self.clock())
        if s == self._last_s:
            return
        self._last_s = s
        self._report()

    def _put(self, data):
        n = len(data)
        if self._rd == self._wr:
            self._rd = self._wr = 0
        if self._wr + n > _UART_RX_FIFO:
            rest = self._wr - self._rd
            self._out[:rest] = memoryview(self._out)[self._rd:self._wr]
            self._rd = 0
            self._wr = rest
            if rest + n > _UART_RX_FIFO:
                return  # FIFO full: the bytes are lost, as on a real UART
        self._out[self._wr:self._wr + n] = data
        self._wr += n

    def _report(self):
        room = self.room
        rnd = self._rng
        people = room.people
        if people <= 0:
            state, mov_cm, mov_e, still_cm, still_e = 0, 0, 0, 0, 0
        else:
            # A seated class: a strong still target a few metres out, drifting slowly;
            # motion adds a moving target nearer or farther (DOMAIN.md: still keeps the
            # room occupied, moving is the fast edge).
            self._still_cm = max(80, min(600, self._still_cm + rnd.randint(-20, 20)))
            still_cm = self._still_cm
            still_e = min(100, 35 + 2 * people + rnd.randint(0, 15))
            if room.moving:
                state = 3
                mov_cm = 75 + rnd.randint(0, 525)
                mov_e = 30 + rnd.randint(0, 70)
            else:
                state, mov_cm, mov_e = 2, 0, 0
        detect_cm = mov_cm if state == 3 and mov_cm < still_cm else still_cm
        f = self._frame
        f[8] = state
        f[9] = mov_cm & 0xFF
        f[10] = mov_cm >> 8
        f[11] = mov_e
        f[12] = still_cm & 0xFF
        f[13] = still_cm >> 8
        f[14] = still_e
        f[15] = detect_cm & 0xFF
        f[16] = detect_cm >> 8
        self.frames_sent += 1
        if not self.garbage:
            self._put(f)
            return
        if rnd.random() < 0.5:
            self._put(self._junk(1 + rnd.randint(0, 11)))
        r = rnd.random()
        if r < 0.15:
            bad = bytearray(f)
            kind = rnd.randint(0, 2)
            if kind == 0:
                bad[19 + rnd.randint(0, 3)] ^= 0x5A  # broken tail
            elif kind == 1:
                bad[7] = 0x00  # 0xAA head marker lost
            else:
                bad = bad[:12] + self._junk(1) + bad[12:]  # a byte slipped in
            self.corrupted_sent += 1
            self._put(bad)
        else:
            self._put(f)

    def _junk(self, n):
        out = bytearray(n)
        for i in range(n):
            b = self._rng.next() & 0xFF
            # No header start bytes in junk, so a parser's bad_frames equals
            # corrupted_sent exactly (tests count on it).
            out[i] = b if b not in (0xF4, 0xFD) else 0x00
        return out

    def _commands(self):
        # 3.2 command frames; anything before a header is dropped.
        c = self._cmd
        while True:
            i = c.find(_CMD_HEAD)
            if i < 0:
                self._cmd = c[-3:] if len(c) > 3 else c
                return
            if len(c) - i < 6:
                self._cmd = c[i:]
                return
            length = c[i + 4] | c[i + 5] << 8
            end = i + 10 + length
            if end > len(c):
                self._cmd = c[i:]
                return
            if bytes(c[end - 4:end]) == _CMD_TAIL and length >= 2:
                self._answer(c[i + 6] | c[i + 7] << 8)
            c = c[end:]

    def _answer(self, word):
        if word == _CMD_ENABLE_CONFIG:
            self.config_mode = True
            ret = _ENABLE_CONFIG_RETURN
        elif word == _CMD_END_CONFIG:
            self.config_mode = False
            ret = b"\x00\x00"
        elif word == _CMD_READ_FIRMWARE and self.config_mode:
            ret = _FIRMWARE_RETURN
        else:
            ret = b"\x01\x00"  # 3.3: status 1 = failure (unknown here, or not in config)
        ack = word | 0x0100
        n = 2 + len(ret)
        self._put(_CMD_HEAD + bytes((n & 0xFF, n >> 8, ack & 0xFF, ack >> 8)) + ret + _CMD_TAIL)


# --- PIR (AM312) ----------------------------------------------------------------------
_PIR_HOLD_S = 2  # AM312: output high ~2 s after a trigger, then it can trigger again


class SimPirPin:
    """A machine.Pin-like PIR output. The sim layer calls step(t) once per sim second;
    it raises the line (and calls the IRQ handler) when someone moved and the output was
    low. ticks_ms() is sim time in ticks, for the driver's debounce."""

    IN = 1
    IRQ_RISING = 1   # the ESP32 port's values
    IRQ_FALLING = 2

    def __init__(self, room, clock, present=True):
        self.room = room
        self.clock = clock
        self.present = present
        self.edges_fired = 0
        self._level = 0
        self._high_until = None
        self._trigger = 0
        self._handler = None
        self._t0 = clock()

    def irq(self, handler=None, trigger=IRQ_RISING | IRQ_FALLING):
        self._handler = handler
        self._trigger = trigger

    def value(self, v=None):
        return self._level

    def ticks_ms(self):
        return time.ticks_add(0, int((self.clock() - self._t0) * 1000))

    def step(self, t):
        """Advance the sensor to sim second t; returns the rising edges fired (0 or 1)."""
        if self._high_until is not None and t >= self._high_until:
            self._level = 0
            self._high_until = None
        if not self.present:
            return 0
        room = self.room
        if room.people > 0 and room.moving and self._level == 0:
            self._level = 1
            self._high_until = t + _PIR_HOLD_S
            self.edges_fired += 1
            if self._handler is not None and self._trigger & self.IRQ_RISING:
                self._handler(self)
            return 1
        return 0


# --- INMP441 over I2S -----------------------------------------------------------------
# DS-INMP441 "Understanding Sensitivity": 94 dB SPL at 1 kHz -> sine of peak
# (2^23 - 1) * 10^(-26/20) counts; 24-bit samples left-justified in 32-bit slots.
_PEAK_AT_94DB = (2 ** 23 - 1) * 10 ** (-26 / 20)
_FULL_SCALE = 2 ** 23 - 1
_TONE_HZ = 1000
_NOISE_REL = 0.03  # uniform noise +/-3% of the tone peak: -32 dB, moves the level 0.003 dB


class SimI2S:
    """machine.I2S (RX, 32-bit, mono) from an INMP441 in the room: a 1 kHz tone at
    room.noise_dba (A(1 kHz) = 0 dB, so its LAeq is the room level) plus a little noise.
    readinto() accepts a bytearray or an array('i') and tiles a precomputed block of
    four tone periods, rebuilt only when the level changes. `present = False` gives zeros."""

    def __init__(self, room, clock, sample_rate=16000, seed=1, present=True):
        if sample_rate % _TONE_HZ:
            raise ValueError("sample_rate must be a multiple of 1000")
        self.room = room
        self.clock = clock
        self.sample_rate = sample_rate
        self.present = present
        self._rng = XorShift32(seed * 7907 + 11)
        self._block_n = 4 * (sample_rate // _TONE_HZ)
        self._ints = array.array("i", bytes(4 * self._block_n))
        self._bytes = bytearray(4 * self._block_n)
        self._zeros_i = array.array("i", bytes(4 * self._block_n))
        self._zeros_b = bytearray(4 * self._block_n)
        self._level = None
        self._phase = 0  # position in the block, in samples, carried across reads

    def readinto(self, buf):
        if isinstance(buf, (bytearray, bytes)):
            unit = 4
            src = self._zeros_b
        else:
            unit = 1
            src = self._zeros_i
        if self.present:
            self._build(self.room.noise_dba)
            src = self._bytes if unit == 4 else self._ints
        src = memoryview(src)
        total = len(buf) // unit  # samples
        dst = memoryview(buf)
        bn = self._block_n
        pos = 0
        ph = self._phase
        while pos < total:
            take = bn - ph
            if take > total - pos:
                take = total - pos
            dst[pos * unit:(pos + take) * unit] = src[ph * unit:(ph + take) * unit]
            pos += take
            ph = (ph + take) % bn
        self._phase = ph
        return total * 4

    def _build(self, level_db):
        key = int(level_db * 100 + 0.5)
        if key == self._level:
            return
        self._level = key
        peak = _PEAK_AT_94DB * 10 ** ((key / 100 - 94) / 20)
        noise = peak * _NOISE_REL
        step = 2 * math.pi * _TONE_HZ / self.sample_rate
        rnd = self._rng.random
        for i in range(self._block_n):
            v = int(peak * math.sin(step * i) + noise * (2 * rnd() - 1))
            v = _FULL_SCALE if v > _FULL_SCALE else (-_FULL_SCALE if v < -_FULL_SCALE else v)
            self._ints[i] = v << 8
            struct.pack_into("<i", self._bytes, 4 * i, v << 8)

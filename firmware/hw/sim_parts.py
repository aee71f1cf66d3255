"""Bus-level simulations of the non-I2C parts (LD2410 UART, PIR pin, INMP441 I2S) so the
real drivers run on the unix port, reading a shared `room` and a sim-seconds `clock()`."""
# The room gives `people` (int), `moving` (someone moved this second) and `noise_dba`.
# Fault injection is a plain attribute (`present`, `garbage`), settable at any time.
# Cheap by design: at most one radar frame per sim second, one PIR step per sim second, and
# the microphone tiles a precomputed tone block. Pair SimI2S with INMP441(aweighting=False):
# its tone is at 1 kHz, where A-weighting is 0 dB, and the unweighted path is ~10x cheaper.
# Each part emulates only what the drivers use (the sim shares the node's heap).
import array
import math
import time

from micropython import const

from hw.scenario import XorShift32

# --- HLK-LD2410 ---------------------------------------------------------------------
# Hi-Link LD2410C serial protocol V1.00: 5.1 report frame, 3.3 ACK frame, 4.x commands.
_CMD_HEAD = const(b"\xfd\xfc\xfb\xfa")
_CMD_TAIL = const(b"\x04\x03\x02\x01")
_UART_RX_FIFO = const(512)  # bytes the host side buffers before it drops new ones


class SimLD2410Uart:
    """The UART a real LD2410 drives, as machine.UART: any(), readinto(), write().

    Emits one basic report frame per sim second (the real part sends ~10 Hz; at 60x real
    time that would be 600 frames a second per node). Answers enable / end configuration
    (4.1, 4.2) and read firmware version (4.8); any other command fails (status 1).
    Faults: `present = False` (no bytes at all), `garbage = True` (junk between frames
    and some frames corrupted so that a parser can tell: broken tail or marker, or a
    byte slipped in)."""

    config_mode = False
    frames_sent = 0
    corrupted_sent = 0
    _last = None  # the sim second of the latest report

    def __init__(self, room, clock, seed=1, present=True, garbage=False):
        self.room = room
        self.clock = clock
        self.present = present
        self.garbage = garbage
        self.rng = XorShift32(seed * 104729 + 3)
        self._rx = bytearray()  # the host's RX FIFO: bytes sent, not read yet
        # The report frame it sends (5.1, 5.4 basic, 23 bytes); the 9 target bytes are
        # patched in per frame.
        self._tx = bytearray(b"\xf4\xf3\xf2\xf1\x0d\x00\x02\xaa" + bytes(9)
                             + b"\x55\x00\xf8\xf7\xf6\xf5")
        self.still_cm = 150 + self.rng.randint(0, 400)

    # machine.UART
    def any(self):
        # The next report is due once per sim second, unless absent or configuring.
        s = int(self.clock())
        if self.present and not self.config_mode and s != self._last:
            self._last = s
            self._report()
        return len(self._rx)

    def readinto(self, buf, n=-1):
        n = min(self.any(), len(buf) if n < 0 else min(n, len(buf)))
        if not n:
            return None
        buf[:n] = self._rx[:n]
        self._rx[:n] = b""
        return n

    def write(self, buf):
        # A 3.2 command frame, whole in one write as the driver sends it: head, length
        # u16, command word u16 + value, tail. Anything else is ignored.
        n = len(buf)
        if self.present and n >= 12 and buf[:4] == _CMD_HEAD and buf[n - 4:] == _CMD_TAIL:
            cmd = buf[6] | buf[7] << 8
            if cmd == 0xFF:       # 4.1 enable: status 0, protocol 1, buffer 0x40
                self.config_mode = True
                ret = b"\x00\x00\x01\x00\x40\x00"
            elif cmd == 0xFE:     # 4.2 end configuration
                self.config_mode = False
                ret = b"\x00\x00"
            elif cmd == 0xA0 and self.config_mode:
                # 4.8: status, type 0x0100, major 0x0107, minor bytes 16 15 09 22: the
                # driver reads "1.07.22091516".
                ret = b"\x00\x00\x00\x01\x07\x01\x16\x15\x09\x22"
            else:
                ret = b"\x01\x00"  # 3.3: status 1 = failure
            # 3.3 ACK: the command word with 0x0100 set, then the return value.
            self.send(_CMD_HEAD + bytes((2 + len(ret), 0, cmd & 0xFF, cmd >> 8 | 1)) + ret + _CMD_TAIL)
        return n

    def send(self, data):
        # Into the host's RX FIFO (the UART driver's buffer).
        if len(self._rx) + len(data) <= _UART_RX_FIFO:
            self._rx += data  # else the FIFO is full: lost, as on a real UART

    def _report(self):
        room = self.room
        rnd = self.rng
        people = room.people
        state = mov_cm = mov_e = still_cm = still_e = 0
        if people > 0:
            # A seated class: a strong still target a few metres out, drifting slowly;
            # motion adds a moving target nearer or farther (DOMAIN.md: still keeps the
            # room occupied, moving is the fast edge).
            self.still_cm = still_cm = max(80, min(600, self.still_cm + rnd.randint(-20, 20)))
            still_e = min(100, 35 + 2 * people + rnd.randint(0, 15))
            state = 2
            if room.moving:
                state = 3
                mov_cm = 75 + rnd.randint(0, 525)
                mov_e = 30 + rnd.randint(0, 70)
        detect_cm = mov_cm if state == 3 and mov_cm < still_cm else still_cm
        f = self._tx
        f[8:17] = bytes((state, mov_cm & 0xFF, mov_cm >> 8, mov_e, still_cm & 0xFF,
                         still_cm >> 8, still_e, detect_cm & 0xFF, detect_cm >> 8))
        self.frames_sent += 1
        if self.garbage:
            # Junk is 0x00..0x7F: never a header's first byte (0xF4, 0xFD), so a parser's
            # bad_frames equals corrupted_sent exactly (tests count on it).
            if rnd.random() < 0.5:
                for _ in range(1 + rnd.randint(0, 11)):
                    self.send(bytes((rnd.next() & 0x7F,)))
            if rnd.random() < 0.15:
                f = bytearray(f)
                kind = rnd.randint(0, 2)
                if kind == 0:
                    f[19 + rnd.randint(0, 3)] ^= 0x5A  # broken tail
                elif kind == 1:
                    f[7] = 0x00  # 0xAA head marker lost
                else:
                    f = f[:12] + bytes((rnd.next() & 0x7F,)) + f[12:]  # a byte slipped in
                self.corrupted_sent += 1
        self.send(f)


# --- PIR (AM312) ----------------------------------------------------------------------
_PIR_HOLD_S = const(2)  # AM312: output high ~2 s after a trigger, then it can trigger again


class SimPirPin:
    """A machine.Pin-like PIR output. The sim layer calls step(t) once per sim second;
    it raises the line (and calls the IRQ handler) when someone moved and the output was
    low. ticks_ms() is sim time in ticks, for the driver's debounce."""

    IRQ_RISING = 1   # the ESP32 port's value (IRQ_FALLING, 2, is not simulated)
    state = 0  # the output line
    _held = 0  # the output is held high until this sim second
    handler = None

    def __init__(self, room, clock, present=True):
        self.room = room
        self.clock = clock
        self.present = present
        self._start_s = clock()
        self.started_ms = time.ticks_ms()

    def irq(self, handler=None, trigger=3):
        # Only a trigger with IRQ_RISING calls the handler: the line's fall is not an IRQ
        # any driver asks for.
        self.handler = handler if trigger & 1 else None

    def value(self):
        return self.state

    def ticks_ms(self):
        return time.ticks_add(self.started_ms, int((self.clock() - self._start_s) * 1000))

    def step(self, t):
        """Advance the sensor to sim second t; returns the rising edges fired (0 or 1)."""
        if self.state and t >= self._held:
            self.state = 0
        room = self.room
        if not self.present or self.state or not (room.people > 0 and room.moving):
            return 0
        self.state = 1
        self._held = t + _PIR_HOLD_S
        if self.handler is not None:
            self.handler(self)
        return 1


# --- INMP441 over I2S -----------------------------------------------------------------
# DS-INMP441 "Understanding Sensitivity": 94 dB SPL at 1 kHz -> sine of peak
# (2^23 - 1) * 10^(-26/20) counts; 24-bit samples left-justified in 32-bit slots.
_FULL_SCALE = const(0x7FFFFF)
_TONE_HZ = const(1000)


class SimI2S:
    """machine.I2S (RX, 32-bit, mono) from an INMP441 in the room: a 1 kHz tone at
    room.noise_dba (A(1 kHz) = 0 dB, so its LAeq is the room level) plus uniform noise of
    +/-3% of the peak (-32 dB: moves the level 0.003 dB). readinto() fills an array('i'),
    as the driver passes, by tiling a block of four tone periods, rebuilt only when the
    level changes. `present = False` gives zeros."""

    _last = None  # the level (0.01 dB) the block was built for; -1: absent

    def __init__(self, room, clock, sample_rate=16000, seed=1, present=True):
        if sample_rate % _TONE_HZ:
            raise ValueError("sample_rate must be a multiple of 1000")
        self.room = room
        self.sample_rate = sample_rate
        self.present = present
        self.rng = XorShift32(seed * 7907 + 11)
        self.block = array.array("i", bytes(16 * (sample_rate // _TONE_HZ)))
        self.pos = 0  # position in the block, in samples, carried across reads

    def readinto(self, buf):
        block = self.block
        bn = len(block)
        # Rebuild the block when the level (in 0.01 dB) or presence changed.
        key = int(self.room.noise_dba * 100 + 0.5) if self.present else -1
        if key != self._last:
            self._last = key
            # Peak at L dB SPL: (2^23 - 1) * 10^(-26/20) * 10^((L - 94)/20).
            peak = 0 if key < 0 else (2 ** 23 - 1) * 10 ** ((key / 100 - 120) / 20)
            step = 2 * math.pi * _TONE_HZ / self.sample_rate
            rnd = self.rng.random
            for i in range(bn):
                v = int(peak * (math.sin(step * i) + 0.03 * (2 * rnd() - 1)))
                block[i] = (_FULL_SCALE if v > _FULL_SCALE else max(v, -_FULL_SCALE)) << 8
        total = len(buf)
        src = memoryview(block)
        dst = memoryview(buf)
        pos = 0
        ph = self.pos
        while pos < total:
            take = min(bn - ph, total - pos)
            dst[pos:pos + take] = src[ph:ph + take]
            pos += take
            ph = (ph + take) % bn
        self.pos = ph
        return total * 4

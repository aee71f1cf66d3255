"""INMP441 I2S MEMS microphone: the room's noise level as LAeq in dB(A) over one short
capture, from a machine.I2S (RX, bits=32, MONO, L/R pin low) handed in by the board layer."""
# CPU cost of measure() on the MicroPython unix port (v1.29 bytecode, x86-64 AMD EPYC, heap
# 96 KB, SimI2S read included, 30 runs each, min / median in microseconds; A-weighting also
# filters a 256-sample warm-up):
#     n_samples  capture   A-weighted (default)    aweighting=False (dB(Z))
#        512      32 ms     1388 / 1419              92 /  93
#       1024      64 ms     2189 / 2357             183 / 184
#       2048     128 ms     3883 / 4214  <- default 308 / 373
#       4096     256 ms     7568 / 7898             719 / 740
# About 1.9 us per A-weighted sample (10 boxed float operations each, plus the GC they
# cause) against 0.18 us unweighted. 2048 samples is the IEC "Fast" span (125 ms) and stays
# under 5 ms; longer captures cost more than that, so the length is configurable and
# aweighting=False is the fallback: the unweighted Leq, dB(Z), which for classroom speech
# noise (energy mostly 300 Hz - 4 kHz, where A(f) is -7..+1.3 dB and ~0 dB at 1-2 kHz)
# approximates dB(A), reading high when low-frequency rumble (ventilation, traffic) is
# present. Virtual nodes (12 at 60x on 2 cores: ~144 measure() calls a second) should use
# it: the sim microphone is a 1 kHz tone, where dB(Z) equals dB(A). Not measured on an
# ESP32, where bytecode is an order of magnitude or more slower: time it on a board before
# raising n_samples. @micropython.native would save ~20% on the unix port, but the
# firmware's mpy-cross check compiles without -march, where that decorator is a
# SyntaxError ("invalid arch").
import array
import math

from micropython import const

# Datasheet DS-INMP441-00 rev 1.1, "Understanding Sensitivity": a 1 kHz tone of 1 Pa RMS
# (94 dB SPL) gives a sine of peak (2^23 - 1) * 10^(-26/20) = 420,426 counts, so its RMS,
# the reference in dB = 94 + 20 log10(rms / ref), is 420,426 / sqrt(2).
REF_RMS_COUNTS = (2 ** 23 - 1) * 10 ** (-26 / 20) / math.sqrt(2)
# "I2S Data Interface": 24-bit two's complement, MSB first, in a 32-SCK slot: the sample is
# left-justified in the 32-bit word machine.I2S(bits=32) returns.
_SLOT_SHIFT = const(8)
# "Power Management / Normal Operation": operational 2^18 SCK cycles after power-up. There
# are 64 SCK per WS frame, so that is 2^18 / 64 = 4096 samples at any rate: 256 ms at
# 16 kHz (the datasheet's 85 ms is for SCK = 3.072 MHz, i.e. 48 kHz).
_STARTUP_SAMPLES = const(4096)
# Filter warm-up discarded before the A-weighted sum (16 ms at 16 kHz; long enough for the
# 20.6 Hz poles to forget the zero start, checked at 31.5-6300 Hz to within 0.1 dB).
_WARMUP_SAMPLES = const(256)


class INMP441:
    def __init__(self, i2s, sample_rate=16000, n_samples=2048, aweighting=True,
                 chunk_samples=256, cal_db=0.0):
        if not 64 <= n_samples <= 65536:
            raise ValueError("n_samples must be 64..65536")
        if not 64 <= chunk_samples <= n_samples:
            raise ValueError("chunk_samples must be 64..n_samples")
        self.i2s = i2s
        self.sample_rate = sample_rate
        self.n_samples = n_samples
        # Unit-to-unit sensitivity is -26 +/-3 dBFS (datasheet table 1): a per-unit
        # correction measured at commissioning goes here.
        self.cal_db = cal_db
        # The A-weighting filter, or None for the unweighted dB(Z) fallback. Imported
        # only when used: the sim's nodes measure unweighted and never load it.
        self.aweighting = None
        if aweighting:
            from drivers.aweight import AWeighting
            self.aweighting = AWeighting(sample_rate)
        # One preallocated capture chunk (1 KB by default); a long capture is read and
        # filtered chunk by chunk (the filter keeps its state), so N costs no extra heap.
        self._rx = array.array("i", bytes(4 * chunk_samples))
        self._seen = False  # the start-up samples have been dropped
        self.last_db = None

    # --- public --------------------------------------------------------------------
    def measure(self):
        """LAeq over one capture of n_samples, in dB(A) (dB(Z) with aweighting=False).
        Raises OSError if the capture is constant (microphone gone)."""
        f = self.aweighting
        mv = memoryview(self._rx)
        need = n = self.n_samples
        warm = _WARMUP_SAMPLES
        energy = 0.0
        s1 = s2 = 0
        if f is not None:
            f.reset()
        while need > 0:
            got = self._read()
            if f is not None:
                start = 0
                if warm:
                    start = warm if warm < got else got
                    f.run(mv[:start], _SLOT_SHIFT)
                    warm -= start
                end = got if got - start < need else start + need
                energy += f.run(mv[start:end], _SLOT_SHIFT)
                need -= end - start
            else:
                # Unweighted: sums for the mean square about the mean (the part has its
                # own DC-blocking high-pass, datasheet "High-Pass Filter"; removing the
                # mean costs nothing).
                end = got if got < need else need
                for x in mv[:end]:
                    x >>= _SLOT_SHIFT
                    s1 += x
                    s2 += x * x
                need -= end
        energy += (s2 * n - s1 * s1) / n  # exact ints first: a constant gives exactly 0
        if energy <= 0:
            raise OSError("INMP441: constant samples (no microphone signal)")
        # dB SPL = 94 + 20 log10(rms / ref) ("Understanding Sensitivity").
        self.last_db = 94 + 20 * math.log10(math.sqrt(energy / n) / REF_RMS_COUNTS) + self.cal_db
        return self.last_db

    # probe() is one measurement: it raises OSError when no microphone answers, as an
    # unconnected SD line reads as a constant (all zeros, or all ones with a pull-up).
    probe = measure

    # --- internals -----------------------------------------------------------------
    def _read(self):
        # One chunk into _rx; returns its length in samples. The first read drops
        # whole chunks until the part is operational (datasheet start-up).
        left = 0 if self._seen else _STARTUP_SAMPLES
        while True:
            n = self.i2s.readinto(self._rx)
            if not n:
                raise OSError("INMP441: I2S read returned no data")
            if left <= 0:
                self._seen = True
                return n >> 2
            left -= n >> 2

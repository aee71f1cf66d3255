"""INMP441 I2S MEMS microphone: the room's noise level as LAeq in dB(A) over one short
capture, from a machine.I2S (RX, bits=32, MONO, L/R pin low) handed in by the board layer.

CPU cost of measure() on the MicroPython unix port (v1.29, x86-64 AMD EPYC, bytecode; the
SimI2S read included), fs = 16 kHz, A-weighting adds a 256-sample filter warm-up:
    n_samples   A-weighted (default)   aweighting=False (dB(Z))
       512          ~1.3 ms                 ~0.3 ms
      1024          ~2.3 ms                 ~0.6 ms
      2048          ~4.0 ms                 ~1.1 ms      <- default: 128 ms, the IEC "Fast" span
      4096          ~7.5 ms                 ~2.2 ms
(re-measure with tests/firmware/mp/test_inmp441.py::test_measure_cpu_figures, which prints
them). @micropython.native would save ~20% but the firmware's mpy-cross check compiles
without -march, where that decorator is a SyntaxError, so the loops are plain bytecode.
aweighting=False gives the unweighted Leq, dB(Z): for classroom speech noise (energy mostly
300 Hz - 4 kHz, where A(f) is within -7..+1.3 dB and near 0 around 1-2 kHz) it reads close
to dB(A), typically a few dB high when ventilation/traffic rumble is present. Use it where
CPU is tight (12 virtual nodes at 60x on 2 cores), and say so beside the figure.
"""
import array
import math

from micropython import const

from drivers.aweight import AWeighting

# Datasheet DS-INMP441-00 rev 1.1, "Understanding Sensitivity": a 1 kHz tone of 1 Pa RMS
# (94 dB SPL) gives a sine of peak (2^23 - 1) * 10^(-26/20) = 420,426 counts, so its RMS,
# the reference in dB = 94 + 20 log10(rms / ref), is 420,426 / sqrt(2).
REF_RMS_COUNTS = (2 ** 23 - 1) * 10 ** (-26 / 20) / math.sqrt(2)
REF_DB_SPL = 94.0
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
                 chunk_samples=512, cal_db=0.0):
        if not 64 <= n_samples <= 65536:
            raise ValueError("n_samples must be 64..65536")
        if not 64 <= chunk_samples <= n_samples:
            raise ValueError("chunk_samples must be 64..n_samples")
        self._i2s = i2s
        self.sample_rate = sample_rate
        self.n_samples = n_samples
        # Unit-to-unit sensitivity is -26 +/-3 dBFS (datasheet table 1): a per-unit
        # correction measured at commissioning goes here.
        self.cal_db = cal_db
        self._weight = AWeighting(sample_rate) if aweighting else None
        self.aweighting = bool(aweighting)
        # One preallocated capture chunk; a long capture is read and filtered chunk by
        # chunk (the filter keeps its state), so N costs no extra heap.
        self._buf = array.array("i", bytes(4 * chunk_samples))
        self._mv = memoryview(self._buf)
        self._settled = False
        self.last_db = None

    # --- public --------------------------------------------------------------------
    def probe(self):
        """Raises OSError when no microphone answers: an unconnected SD line reads as a
        constant (all zeros, or all ones with a pull-up)."""
        self._settle()
        got = self._read()
        buf = self._buf
        first = buf[0]
        for i in range(1, got):
            if buf[i] != first:
                return
        raise OSError("INMP441: no signal on I2S (%d samples all %d)" % (got, first))

    def measure(self):
        """LAeq over one capture of n_samples, in dB(A) (dB(Z) with aweighting=False).
        Raises OSError if the capture is constant (microphone gone)."""
        self._settle()
        if self._weight is not None:
            energy = self._capture_weighted()
        else:
            energy = self._capture_z()
        if energy <= 0:
            raise OSError("INMP441: constant samples (no microphone signal)")
        rms = math.sqrt(energy / self.n_samples)
        self.last_db = REF_DB_SPL + 20 * math.log10(rms / REF_RMS_COUNTS) + self.cal_db
        return self.last_db

    # --- internals -----------------------------------------------------------------
    def _read(self):
        n = self._i2s.readinto(self._buf)
        if not n:
            raise OSError("INMP441: I2S read returned no data")
        return n >> 2

    def _settle(self):
        # Drop what the part sends before it is operational (datasheet start-up).
        if self._settled:
            return
        left = _STARTUP_SAMPLES
        while left > 0:
            left -= self._read()
        self._settled = True

    def _capture_weighted(self):
        f = self._weight
        f.reset()
        mv = self._mv
        warm = _WARMUP_SAMPLES
        need = self.n_samples
        energy = 0.0
        while need > 0:
            got = self._read()
            start = 0
            if warm:
                start = warm if warm < got else got
                f.run(mv[:start], _SLOT_SHIFT)
                warm -= start
            end = got if got - start < need else start + need
            if end > start:
                energy += f.run(mv[start:end], _SLOT_SHIFT)
                need -= end - start
        return energy

    def _capture_z(self):
        # Unweighted: mean square about the mean (the part has its own DC-blocking
        # high-pass, datasheet "High-Pass Filter"; removing the mean costs nothing).
        mv = self._mv
        need = self.n_samples
        s1 = 0
        s2 = 0
        while need > 0:
            got = self._read()
            end = got if got < need else need
            for x in mv[:end]:
                x >>= _SLOT_SHIFT
                s1 += x
                s2 += x * x
            need -= end
        n = self.n_samples
        return s2 - s1 * s1 / n


def startup_ms(sample_rate):
    """How long the part needs after SCK starts, per the datasheet (2^18 SCK cycles)."""
    return _STARTUP_SAMPLES * 1000 // sample_rate


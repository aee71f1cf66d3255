"""A-weighting (IEC 61672-1) for 16 kHz microphone samples: an exact integer FIR for the
zeros and two float all-pole biquads for the poles, cheap enough for MicroPython bytecode."""
# Derivation (coefficients are computed here at construction, so the code is the record):
# IEC 61672-1:2013 Annex E gives the analogue A-weighting as four zeros at s = 0 and poles at
# f1 = 20.598997 Hz (double), f2 = 107.65265 Hz, f3 = 737.86223 Hz, f4 = 12194.217 Hz (double),
# normalised to 0 dB at 1 kHz. The low part s^4 / ((s+w1)^2 (s+w2)(s+w3)) goes through the
# bilinear transform, one first-order factor at a time:
#     s/(s+w)  ->  (1 - z^-1) / ((1+k) - (1-k) z^-1),   k = pi f / fs
# which gives the integer numerator (1 - z^-1)^4 and two all-pole biquads (f1,f1) and (f2,f3).
# The f4 pole pair lies above the 8 kHz Nyquist limit, where the bilinear transform squashes
# it to z = -1 (-5.8 dB at 6.3 kHz, -60 dB at 8 kHz); it is replaced by the FIR (16 + z^-1)^2,
# i.e. (1 + c z^-1)^2 with c = 1/16, fitted by evaluating the response against the analogue
# curve. Result at fs = 16 kHz, error against IEC 61672-1 nominal A(f): within 0.1 dB from
# 16 Hz to 5 kHz, +0.17 dB at 6.3 kHz, +0.9 dB at 8 kHz (the tightest class 1 tolerance,
# at 1 kHz, is +/-1.1 dB; at 8 kHz it is wider);
# A(100 Hz) = -19.1 dB. The whole numerator (1 - z^-1)^4 (16 + z^-1)^2 runs on exact integers,
# so a constant (DC) input gives exactly zero and only the poles need floats (10 float
# operations per sample). The gain is normalised to 1 at 1 kHz by evaluating the response.
# Single-precision floats (the ESP32 build) are enough: the zeros come first, so the
# high-gain 20.6 Hz poles only see the already-differentiated signal.
import math

from micropython import const

_FS_HZ = const(16000)  # the FIR replacement for the f4 pole pair is fitted for this rate only


def _poly_mag(data, w):
    """|sum data[i] z^-i| at z = e^{jw}: the magnitude response of the polynomial with
    coefficients `data` (no cmath: not every port has it)."""
    re = 0.0
    im = 0.0
    for i in range(len(data)):
        re += data[i] * math.cos(i * w)
        im -= data[i] * math.sin(i * w)
    return math.sqrt(re * re + im * im)


class AWeighting:
    """One A-weighting filter with its state; `run()` filters a slice of raw samples and
    returns the sum of squares of the weighted output (gain already applied)."""

    def __init__(self, sample_rate=_FS_HZ):
        if sample_rate != _FS_HZ:
            raise ValueError("A-weighting is designed for 16000 Hz, not %r" % sample_rate)
        # The bilinear s/(s+w) has denominator (1+k) - (1-k) z^-1, k = pi f / fs, i.e. a
        # pole at p = (1-k)/(1+k); the constant 1/(1+k) is left to the gain normalisation.
        k = math.pi * 20.598997 / _FS_HZ  # f1
        p1 = (1.0 - k) / (1.0 + k)
        k = math.pi * 107.65265 / _FS_HZ  # f2
        p2 = (1.0 - k) / (1.0 + k)
        k = math.pi * 737.86223 / _FS_HZ  # f3
        p3 = (1.0 - k) / (1.0 + k)
        # All-pole biquads 1 / (1 + a1 z^-1 + a2 z^-2): (f1, f1) and (f2, f3).
        a11 = -2.0 * p1
        a12 = p1 * p1
        a21 = -(p2 + p3)
        a22 = p2 * p3
        # Overall gain: 0 dB at 1 kHz (IEC 61672-1), from the response evaluated there.
        w = 2.0 * math.pi * 1000.0 / _FS_HZ
        gain = (_poly_mag((1.0, a11, a12), w) * _poly_mag((1.0, a21, a22), w)
                / (_poly_mag((1, -4, 6, -4, 1), w) * _poly_mag((256, 32, 1), w)))
        self._coef = (a11, a12, a21, a22, gain * gain)
        self.state = None

    def reset(self):
        """Forget the signal: the next run() starts from its first sample."""
        self.state = None

    def run(self, buf, shift=0):
        """Filters every value of `buf` (ints, e.g. a memoryview of an array('i'))
        after `>> shift`; returns the sum of squared weighted outputs."""
        a11, a12, a21, a22, g2 = self._coef
        # State: x[n-1], the three lower differences, two 4th differences (exact ints);
        # the last two outputs of each biquad (floats).
        s = self.state
        if s is None:
            if not len(buf):
                return 0.0
            # Start the differences from the first sample, not from zero: a step from 0
            # to a DC offset would ring in the 20 Hz poles for tens of milliseconds.
            s = (buf[0] >> shift, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0)
        p0, p1, p2, p3, q1, q2, y1, y2, u1, u2 = s
        acc = 0.0
        for x in buf:
            x >>= shift
            # (1 - z^-1)^4 as four running differences, exact integers.
            d = x - p0
            p0 = x
            e = d - p1
            p1 = d
            d = e - p2
            p2 = e
            e = d - p3
            p3 = d
            # (16 + z^-1)^2 = 256 + 32 z^-1 + z^-2
            d = (e << 8) + (q1 << 5) + q2
            q2 = q1
            q1 = e
            # Poles: f1 double, then f2 and f3.
            y = d - a11 * y1 - a12 * y2
            y2 = y1
            y1 = y
            u = y - a21 * u1 - a22 * u2
            u2 = u1
            u1 = u
            acc += u * u
        self.state = (p0, p1, p2, p3, q1, q2, y1, y2, u1, u2)
        return acc * g2

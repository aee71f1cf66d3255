"""A-weighting (IEC 61672-1) for 16 kHz microphone samples: an exact integer FIR for the
zeros and two float all-pole biquads for the poles, cheap enough for MicroPython bytecode.

Derivation (coefficients are computed here at construction, so the code is the record):
IEC 61672-1:2013 Annex E gives the analogue A-weighting as four zeros at s = 0 and poles at
f1 = 20.598997 Hz (double), f2 = 107.65265 Hz, f3 = 737.86223 Hz, f4 = 12194.217 Hz (double),
normalised to 0 dB at 1 kHz. The low part s^4 / ((s+w1)^2 (s+w2)(s+w3)) goes through the
bilinear transform, one first-order factor at a time:
    s/(s+w)  ->  (1 - z^-1) / ((1+k) - (1-k) z^-1),   k = pi f / fs
which gives the integer numerator (1 - z^-1)^4 and two all-pole biquads (f1,f1) and (f2,f3).
The f4 pole pair lies above the 8 kHz Nyquist limit, where the bilinear transform squashes
it to z = -1 (-5.8 dB at 6.3 kHz, -60 dB at 8 kHz); it is replaced by the FIR (16 + z^-1)^2,
i.e. (1 + c z^-1)^2 with c = 1/16, fitted by evaluating the response against the analogue
curve. Result at fs = 16 kHz, error against IEC 61672-1 nominal A(f): within 0.1 dB from
16 Hz to 5 kHz, +0.17 dB at 6.3 kHz, +0.9 dB at 8 kHz (all inside the class 1 limits);
A(100 Hz) = -19.1 dB. The whole numerator (1 - z^-1)^4 (16 + z^-1)^2 runs on exact integers,
so a constant (DC) input gives exactly zero and only the poles need floats (10 float
operations per sample). The gain is normalised to 1 at 1 kHz by evaluating the response.
"""
import math

FS_HZ = 16000  # the FIR replacement for the f4 pole pair is fitted for this rate only
F1_HZ = 20.598997
F2_HZ = 107.65265
F3_HZ = 737.86223


def _first_order(f_hz, fs_hz):
    # Denominator of the bilinear s/(s+w), normalised to a leading 1: 1 - p z^-1.
    k = math.pi * f_hz / fs_hz
    return (1.0 - k) / (1.0 + k), 1.0 + k


def _poly_mag(coeffs, w):
    """|sum c_i z^-i| at z = e^{jw} (no cmath: not every port has it)."""
    re = 0.0
    im = 0.0
    for i, c in enumerate(coeffs):
        re += c * math.cos(i * w)
        im -= c * math.sin(i * w)
    return math.sqrt(re * re + im * im)


class AWeighting:
    """One A-weighting filter with its state; `run()` filters a slice of raw samples and
    returns the sum of squares of the weighted output (gain already applied)."""

    def __init__(self, fs_hz=FS_HZ):
        if fs_hz != FS_HZ:
            raise ValueError("A-weighting is designed for %d Hz, not %r" % (FS_HZ, fs_hz))
        p1, g1 = _first_order(F1_HZ, fs_hz)
        p2, g2 = _first_order(F2_HZ, fs_hz)
        p3, g3 = _first_order(F3_HZ, fs_hz)
        # All-pole biquads 1 / (1 + a1 z^-1 + a2 z^-2).
        self.a11 = -2.0 * p1
        self.a12 = p1 * p1
        self.a21 = -(p2 + p3)
        self.a22 = p2 * p3
        # Overall gain: the bilinear factors' 1/(1+k) and unit response at 1 kHz.
        w = 2.0 * math.pi * 1000.0 / fs_hz
        num = _poly_mag((1, -4, 6, -4, 1), w) * _poly_mag((256, 32, 1), w)
        den = _poly_mag((1.0, self.a11, self.a12), w) * _poly_mag((1.0, self.a21, self.a22), w)
        self.gain = den / num
        self.reset()

    def reset(self):
        # Integer FIR state: x[n-1], the three lower differences, two 4th differences.
        # Float state: two outputs of each biquad.
        self._s = [0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0]
        self._primed = False

    def run(self, samples, shift=0):
        """Filters every value of `samples` (ints, e.g. a memoryview of an array('i'))
        after `>> shift`; returns the sum of squared weighted outputs."""
        a11 = self.a11
        a12 = self.a12
        a21 = self.a21
        a22 = self.a22
        p0, p1, p2, p3, q1, q2, y1, y2, u1, u2 = self._s
        if not self._primed and len(samples):
            # Start the differences from the first sample, not from zero: a step from 0
            # to a DC offset would ring in the 20 Hz poles for tens of milliseconds.
            p0 = samples[0] >> shift
            self._primed = True
        acc = 0.0
        for x in samples:
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
        s = self._s
        s[0] = p0
        s[1] = p1
        s[2] = p2
        s[3] = p3
        s[4] = q1
        s[5] = q2
        s[6] = y1
        s[7] = y2
        s[8] = u1
        s[9] = u2
        return acc * self.gain * self.gain

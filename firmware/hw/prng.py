"""xorshift32: a tiny deterministic generator, so a scenario with a given seed plays
out identically on every interpreter (MicroPython's `random` is port-specific)."""


class XorShift32:
    def __init__(self, seed):
        self.state = (seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def random(self):
        """Uniform float in [0, 1)."""
        return (self.next() >> 8) / 16777216.0

    def randint(self, lo, hi):
        return lo + self.next() % (hi - lo + 1)


def mix(*values):
    """Hash a few integers into one seed (FNV-1a over their 32-bit words)."""
    h = 2166136261
    for v in values:
        v &= 0xFFFFFFFF
        for _ in range(4):
            h ^= v & 0xFF
            h = (h * 16777619) & 0xFFFFFFFF
            v >>= 8
    return h

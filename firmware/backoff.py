"""Jittered exponential backoff for reconnects: never a tight loop, and a classroom
full of nodes that lost the broker together does not come back in lockstep."""
import random


class Backoff:
    def __init__(self, first_ms=1000, max_ms=120000):
        self.first_ms = first_ms
        self.max_ms = max_ms
        self.failures = 0

    def next_delay_ms(self):
        """Delay before the next attempt: full range doubles per failure, capped,
        drawn from its upper half (decorrelates nodes, keeps a floor)."""
        cap = min(self.max_ms, self.first_ms << min(self.failures, 16))
        self.failures += 1
        half = cap // 2
        return half + random.getrandbits(16) * (cap - half) // 65536

    def reset(self):
        self.failures = 0

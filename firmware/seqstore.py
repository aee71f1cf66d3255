"""Persistent, strictly increasing message sequence numbers (PROTOCOL.md `seq`).

The file holds a reserved ceiling, not the last value: a boot resumes from the
ceiling and reserves the next block, so flash is written once per BLOCK messages,
not once per window, and a power cut can only skip numbers, never repeat them."""
import os

BLOCK = 256
SEQ_MAX = 2147483647  # 2^31 - 1


def _write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class SeqStore:
    def __init__(self, path="seq.dat", block=BLOCK):
        self.path = path
        self.block = block
        start = 0
        try:
            with open(path) as f:
                start = int(f.read().strip())
        except (OSError, ValueError):
            start = 0
        self._next = start
        self._ceiling = start
        self._reserve()

    def _reserve(self):
        self._ceiling = min(SEQ_MAX, self._next + self.block)
        _write_atomic(self.path, str(self._ceiling))

    def take(self):
        if self._next >= self._ceiling:
            if self._next >= SEQ_MAX:
                raise OverflowError("seq exhausted")
            self._reserve()
        n = self._next
        self._next += 1
        return n

    def at_least(self, n):
        """Never hand out a number below n (e.g. the outbox's highest seq + 1, in case
        the seq file was lost or corrupted)."""
        if n > self._next:
            self._next = n
            if self._next >= self._ceiling:
                self._reserve()

    def peek(self):
        return self._next

"""Outbox: every window and event waits here until the broker's PUBACK, then goes.

This is the RAM outbox of the walking skeleton: bounded, oldest dropped first and
counted. The flash-backed outbox that survives reboots replaces it behind the same
interface (append / next_unsent / mark_sent / ack / rewind)."""

_UNSENT = 0
_INFLIGHT = 1


class Outbox:
    def __init__(self, max_records=64):
        self.max_records = max_records
        self._records = []   # [seq, topic_suffix, payload, state, pid], oldest first
        self.dropped = 0     # records dropped because the outbox was full

    def __len__(self):
        return len(self._records)

    def append(self, seq, suffix, payload):
        if len(self._records) >= self.max_records:
            self._records.pop(0)
            self.dropped += 1
        self._records.append([seq, suffix, payload, _UNSENT, 0])

    def next_unsent(self):
        for rec in self._records:
            if rec[3] == _UNSENT:
                return rec
        return None

    def inflight(self):
        n = 0
        for rec in self._records:
            if rec[3] == _INFLIGHT:
                n += 1
        return n

    def mark_sent(self, rec, pid):
        rec[3] = _INFLIGHT
        rec[4] = pid

    def ack(self, pid):
        """PUBACK for pid: the record is delivered and leaves the outbox."""
        for i, rec in enumerate(self._records):
            if rec[3] == _INFLIGHT and rec[4] == pid:
                self._records.pop(i)
                return True
        return False

    def rewind(self):
        """The link dropped: everything in flight is sent again, oldest first."""
        for rec in self._records:
            rec[3] = _UNSENT
            rec[4] = 0

"""Flash outbox: every window and event gets its `seq` and is appended to a compact record
log on flash before it is published, and leaves only after the broker's PUBACK; after an
outage or a reboot the backlog is replayed oldest first.

Layout: a ring of SEGMENTS files ob/0..ob/{n-1}, each at most SEGMENT_BYTES, written
append-only. A record is
    0xCF | kind u8 | body_len u8 | seq u32 | body | crc32 u32 (over kind..body)
36 bytes for a window (binary, not JSON: 72 h of 60 s windows = 4320 x 36 B = 155 KB),
16 for an event. A torn record (power cut mid-write) fails its length or CRC and ends
its segment; at boot the torn tail is cut off so appends never follow garbage.
The read pointer (segment, offset of the oldest unacked record) is saved lazily, every
_PTR_SAVE_ACKS acks: after a power cut a few delivered records are sent again, which the
server's (device_id, seq) key makes harmless. When the ring is full the oldest segment
is dropped and its unsent records are counted in `dropped`.

`seq` (PROTOCOL.md) is strictly increasing across reboots: seq.dat holds a reserved
ceiling, not the last value, so flash is written once per `block` records and a power
cut can only skip numbers, never repeat them; a boot never starts below the highest seq
on flash + 1, so a lost seq.dat cannot make the server drop new data as duplicates."""
import binascii
import os
import struct

from micropython import const

_MAGIC = const(0xCF)
_WINDOW = const(1)        # record kinds
_EVENT = const(2)
_HEAD = const(7)
_WINDOW_LEN = const(36)   # _HEAD + 25-byte body + CRC
_EVENT_LEN = const(16)    # _HEAD + 5-byte body + CRC
_PTR_SAVE_ACKS = const(32)
_MAX_INFLIGHT = const(8)  # QoS 1 publishes awaiting PUBACK at once
SEGMENT_BYTES = const(32768)
SEGMENTS = const(8)
SEQ_MAX = const(2147483647)  # 2^31 - 1
_NULL16 = const(0xFFFF)
_NULL32 = const(0xFFFFFFFF)
_NULL_TEMP = const(-32768)
# ts, win, occupied_s, present, pir, radar_s, co2_ppm, temp_c*10, rh_pct*10, lux, noise_dba*10
_WINDOW_FMT = const("<IHHBHHHhHIH")
# PROTOCOL.md payloads; JSON objects are unordered, these follow the document's order.
_TELEMETRY_JSON = const('{"v":1,"seq":%d,"ts":%d,"win":%d,"occ":{"occupied_s":%d,"present":%s,'
                        '"pir":%s,"radar_s":%s},"env":{"co2_ppm":%s,"temp_c":%s,"rh_pct":%s,'
                        '"lux":%s,"noise_dba":%s}}')
_EVENT_JSON = const('{"v":1,"seq":%d,"ts":%d,"present":%s}')


def _enc(v, null, scale=1):
    # A report value -> its record field: `null` for None, else the integer (x scale).
    return null if v is None else int(round(v * scale))


def _dec(v, null, scale=1):
    # A record field -> its JSON text value: null, the integer, or the value / scale.
    return "null" if v == null else (v / scale if scale > 1 else v)


class Outbox:
    def __init__(self, root="ob", segment_bytes=SEGMENT_BYTES, segments=SEGMENTS,
                 seq_path="seq.dat", block=256):
        self.root = root
        self.segment_bytes = segment_bytes
        self.segments = segments
        self.dropped = 0       # records lost because the ring was full
        self.torn = 0          # torn records found (and cut) at boot
        self.max_seq = -1      # highest seq on flash
        self.pending = 0       # records on flash not yet acked
        # Records sent and awaiting PUBACK, oldest first, flat: pid, segment, end offset.
        self.inflight = []
        self.acks = 0          # acks since the pointer was last saved
        # One record, read or written: the one at segment held_seg (-1: none), offset
        # held_off, so the record just appended is sent without reading it back.
        self.buf = bytearray(_WINDOW_LEN)
        self.held_seg = -1
        self.held_off = 0
        try:
            os.mkdir(root)
        except OSError:
            pass
        try:
            with open(root + "/ptr") as f:
                a, b = f.read().split()
            first, rd = int(a), int(b)
        except (OSError, ValueError):
            first, rd = 0, 0
        # Segment numbers grow forever (file = number % segments); the live ones are
        # first..last. A pointer to a vanished segment means start afresh there.
        last = first
        while last + 1 < first + segments and self._size(last + 1) >= 0:
            last += 1
        if self._size(first) < 0:
            rd = 0
        self.first = first
        self.rd = rd           # offset of the oldest unacked record in segment `first`
        self.last = last       # the segment appended to
        for n in range(first, last + 1):
            # Find the valid records; cut a torn tail so appends never follow garbage.
            end, count = self._scan(n, rd if n == first else 0)
            size = self._size(n)
            if end < size:
                self.torn += 1
                path = self._path(n)
                mv = memoryview(self.buf)
                with open(path, "rb") as src, open(path + ".tmp", "wb") as dst:
                    left = end
                    while left:
                        k = src.readinto(mv[:min(left, _WINDOW_LEN)])
                        if not k:
                            break
                        dst.write(mv[:k])
                        left -= k
                os.rename(path + ".tmp", path)
            self.pending += count
        self.tail = end        # bytes in segment `last` (valid records only, after the cut)
        self.seg = first       # the cursor: next record to send ...
        self.off = rd          # ... and its offset
        self.nxt = rd          # end of the record next_unsent() returned
        # seq: resume from the reserved ceiling, never below what is on flash.
        self.seq_path = seq_path
        self.block = block
        try:
            with open(seq_path) as f:
                start = int(f.read().strip())
        except (OSError, ValueError):
            start = 0
        self.seq = max(start, self.max_seq + 1)  # the next seq to give
        self.ceiling = self.seq
        self._reserve()

    # --- flash --------------------------------------------------------------------------
    def _path(self, n):
        return "%s/%d" % (self.root, n % self.segments)

    def _size(self, n):
        try:
            return os.stat(self._path(n))[6]
        except OSError:
            return -1

    def _remove(self, n):
        try:
            os.remove(self._path(n))
        except OSError:
            pass

    def _read(self, f, off):
        """Reads the record at off into buf; returns its length, or 0 when no whole,
        valid record is there (end of segment, torn or corrupted)."""
        buf = self.buf
        f.seek(off)
        got = f.readinto(buf) or 0
        kind = buf[1]
        n = _WINDOW_LEN if kind == _WINDOW else _EVENT_LEN
        if (got < n or buf[0] != _MAGIC or kind not in (_WINDOW, _EVENT) or buf[2] != n - _HEAD - 4
                or struct.unpack_from("<I", buf, n - 4)[0] != binascii.crc32(memoryview(buf)[1:n - 4])):
            return 0
        return n

    def _scan(self, n, start):
        """-> (end of the last valid record in segment n, records from offset start),
        raising max_seq to the highest seq seen."""
        end = count = 0
        self.held_seg = -1
        try:
            f = open(self._path(n), "rb")
        except OSError:
            return 0, 0
        with f:
            while True:
                k = self._read(f, end)
                if not k:
                    break
                if end >= start:
                    count += 1
                seq = struct.unpack_from("<I", self.buf, 3)[0]
                if seq > self.max_seq:
                    self.max_seq = seq
                end += k
        return end, count

    def _reserve(self):
        self.ceiling = min(SEQ_MAX, self.seq + self.block)
        with open(self.seq_path + ".tmp", "w") as f:
            f.write(str(self.ceiling))
        os.rename(self.seq_path + ".tmp", self.seq_path)

    def flush(self):
        """Persists the read pointer (every _PTR_SAVE_ACKS acks, and before a planned
        reboot or stop)."""
        tmp = self.root + "/ptr.tmp"
        with open(tmp, "w") as f:
            f.write("%d %d" % (self.first, self.rd))
        os.rename(tmp, self.root + "/ptr")
        self.acks = 0

    # --- writing ------------------------------------------------------------------------
    def append_window(self, report):
        """report: the tuple WindowAggregator.add_second() returns (the fields of
        _WINDOW_FMT, None for null). Returns the record's seq."""
        r = report
        return self._append(_WINDOW, struct.pack(
            _WINDOW_FMT, r[0], r[1], r[2], 1 if r[3] else 0, _enc(r[4], _NULL16), _enc(r[5], _NULL16),
            _enc(r[6], _NULL16), _enc(r[7], _NULL_TEMP, 10), _enc(r[8], _NULL16, 10), _enc(r[9], _NULL32),
            _enc(r[10], _NULL16, 10)))

    def append_event(self, ts, present):
        """A presence change at ts. Returns the record's seq."""
        return self._append(_EVENT, struct.pack("<IB", ts, 1 if present else 0))

    def _append(self, kind, body):
        seq = self.seq
        if seq >= self.ceiling:
            if seq >= SEQ_MAX:
                raise OverflowError("seq exhausted")  # wrapping would repeat stored seqs
            self._reserve()
        self.seq = seq + 1
        n = _HEAD + len(body) + 4
        if self.tail + n > self.segment_bytes:
            if self.last + 1 - self.first >= self.segments:
                # Ring full: the oldest segment goes, with whatever was still unsent in it.
                first = self.first
                unsent = self._scan(first, self.rd)[1]
                self.dropped += unsent
                self.pending -= unsent
                fl = self.inflight
                self.inflight = [fl[i + j] for i in range(0, len(fl), 3) if fl[i + 1] != first
                                 for j in range(3)]
                self._remove(first)
                self.first = first + 1
                self.rd = 0
                if self.seg <= first:
                    self.seg = first + 1
                    self.off = 0
                self.flush()
            self.last += 1
            self._remove(self.last)  # a stale file from a previous lap of the ring
            self.tail = 0
        rec = memoryview(self.buf)[:n]  # built here: _scan() above reads into buf
        rec[0] = _MAGIC
        rec[1] = kind
        rec[2] = len(body)
        struct.pack_into("<I", rec, 3, seq)
        rec[_HEAD:n - 4] = body
        struct.pack_into("<I", rec, n - 4, binascii.crc32(rec[1:n - 4]))
        with open(self._path(self.last), "ab") as f:  # closed: on flash before the seq is used
            f.write(rec)
        self.held_seg = self.last
        self.held_off = self.tail
        self.tail += n
        self.pending += 1
        if seq > self.max_seq:
            self.max_seq = seq
        return seq

    # --- sending ------------------------------------------------------------------------
    def __len__(self):
        return self.pending

    def next_unsent(self):
        """(topic suffix, PROTOCOL.md payload) of the oldest record not yet sent on this
        connection, or None (nothing left, or _MAX_INFLIGHT records await their PUBACK)."""
        if len(self.inflight) >= 3 * _MAX_INFLIGHT:
            return None
        seg = self.seg
        while seg <= self.last:
            if seg == self.held_seg and self.off == self.held_off:
                n = _EVENT_LEN if self.buf[1] == _EVENT else _WINDOW_LEN  # already in buf
            else:
                self.held_seg = -1
                try:
                    with open(self._path(seg), "rb") as f:
                        n = self._read(f, self.off)
                except OSError:
                    n = 0
                if n:
                    self.held_seg = seg
                    self.held_off = self.off
            if n:
                self.nxt = self.off + n
                buf = self.buf
                seq = struct.unpack_from("<I", buf, 3)[0]
                if buf[1] == _EVENT:
                    r = struct.unpack_from("<IB", buf, _HEAD)  # ts, present
                    return "event", _EVENT_JSON % (seq, r[0], "true" if r[1] else "false")
                r = struct.unpack_from(_WINDOW_FMT, buf, _HEAD)
                return "telemetry", _TELEMETRY_JSON % (
                    seq, r[0], r[1], r[2], "true" if r[3] else "false", _dec(r[4], _NULL16),
                    _dec(r[5], _NULL16), _dec(r[6], _NULL16), _dec(r[7], _NULL_TEMP, 10),
                    _dec(r[8], _NULL16, 10), _dec(r[9], _NULL32), _dec(r[10], _NULL16, 10))
            if seg == self.last:
                return None
            seg += 1
            self.seg = seg
            self.off = 0
        return None

    def mark_sent(self, pid):
        """The record next_unsent() returned went out as packet pid."""
        self.inflight += (pid, self.seg, self.nxt)
        self.off = self.nxt

    def ack(self, pid):
        """PUBACK for pid: the record is delivered; the read pointer moves past every
        delivered record at the head. False for a pid not in flight."""
        fl = self.inflight
        for i in range(0, len(fl), 3):
            if fl[i] == pid:
                fl[i] = -1
                break
        else:
            return False
        while fl and fl[0] == -1:
            self.first = fl[1]
            self.rd = fl[2]
            del fl[:3]
            self.pending -= 1
            self.acks += 1
        # A segment fully delivered and no longer written to can go.
        while self.first < self.last and self.rd >= self._size(self.first):
            self._remove(self.first)
            self.first += 1
            self.rd = 0
            self.flush()
        if self.acks >= _PTR_SAVE_ACKS:
            self.flush()
        return True

    def rewind(self):
        """The link dropped: everything in flight is sent again, oldest first."""
        self.inflight = []
        self.seg = self.first
        self.off = self.rd

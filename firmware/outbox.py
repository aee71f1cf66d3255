"""Flash outbox: every window and event is appended to a compact record log on flash
before it is published, and leaves only after the broker's PUBACK; after an outage or a
reboot the backlog is replayed oldest first.

Layout: a ring of SEGMENTS files ob/0..ob/{n-1}, each at most SEGMENT_BYTES, written
append-only. A record is
    0xCF | kind u8 | body_len u8 | seq u32 | body | crc32 u32 (over kind..body)
36 bytes for a window (binary, not JSON: 72 h of 60 s windows = 4320 x 36 B = 155 KB),
16 for an event. A torn record (power cut mid-write) fails its length or CRC and ends
its segment; at boot the torn tail is cut off so appends never follow garbage.
The read pointer (segment, offset of the oldest unacked record) is saved lazily, every
PTR_SAVE_ACKS acks: after a power cut a few delivered records are sent again, which the
server's (device_id, seq) key makes harmless. When the ring is full the oldest segment
is dropped and its unsent records are counted in `dropped`."""
import binascii
import json
import os
import struct

from micropython import const

_MAGIC = const(0xCF)
KIND_TELEMETRY = const(1)
KIND_EVENT = const(2)
_HEAD = const(7)
_CRC = const(4)
PTR_SAVE_ACKS = const(32)
SEGMENT_BYTES = 32 * 1024
SEGMENTS = 8
_NULL16 = const(0xFFFF)
_NULL32 = 0xFFFFFFFF
_NULL_TEMP = const(-32768)
# ts, win, occupied_s, present, pir, radar_s, co2_ppm, temp_c*10, rh_pct*10, lux, noise_dba*10
_WINDOW_FMT = "<IHHBHHHhHIH"
_EVENT_FMT = "<IB"
_SUFFIX = {KIND_TELEMETRY: "telemetry", KIND_EVENT: "event"}


def _u16(v):
    return _NULL16 if v is None else int(v)


def _x10(v, null):
    return null if v is None else int(round(v * 10))


def encode_window(report):
    occ = report["occ"]
    env = report["env"]
    lux = env["lux"]
    return struct.pack(
        _WINDOW_FMT, report["ts"], report["win"], occ["occupied_s"], 1 if occ["present"] else 0,
        _u16(occ["pir"]), _u16(occ["radar_s"]), _u16(env["co2_ppm"]),
        _x10(env["temp_c"], _NULL_TEMP), _x10(env["rh_pct"], _NULL16),
        _NULL32 if lux is None else int(lux), _x10(env["noise_dba"], _NULL16))


def _n16(v):
    return None if v == _NULL16 else v


def _d10(v, null):
    return None if v == null else v / 10


def decode_payload(kind, seq, body):
    """Record -> the PROTOCOL.md JSON payload (bytes)."""
    if kind == KIND_EVENT:
        ts, present = struct.unpack(_EVENT_FMT, body)
        doc = {"v": 1, "seq": seq, "ts": ts, "present": bool(present)}
    else:
        ts, win, occ_s, present, pir, radar, co2, temp, rh, lux, noise = struct.unpack(_WINDOW_FMT, body)
        doc = {"v": 1, "seq": seq, "ts": ts, "win": win,
               "occ": {"occupied_s": occ_s, "present": bool(present), "pir": _n16(pir), "radar_s": _n16(radar)},
               "env": {"co2_ppm": _n16(co2), "temp_c": _d10(temp, _NULL_TEMP), "rh_pct": _d10(rh, _NULL16),
                       "lux": None if lux == _NULL32 else lux, "noise_dba": _d10(noise, _NULL16)}}
    return json.dumps(doc, separators=(",", ":"))


def _crc(buf):
    return binascii.crc32(buf) & 0xFFFFFFFF


class Record:
    __slots__ = ("seg", "off", "end", "kind", "seq", "pid", "payload")

    def __init__(self, seg, off, end, kind, seq):
        self.seg = seg
        self.off = off
        self.end = end
        self.kind = kind
        self.seq = seq
        self.pid = 0
        self.payload = None

    @property
    def suffix(self):
        return _SUFFIX[self.kind]


class Outbox:
    def __init__(self, root="ob", segment_bytes=SEGMENT_BYTES, segments=SEGMENTS):
        self.root = root
        self.segment_bytes = segment_bytes
        self.segments = segments
        self.dropped = 0       # records lost because the ring was full
        self.torn = 0          # torn records found (and cut) at boot
        self.max_seq = -1      # highest seq on flash, so seq never goes back
        self._pending = 0
        self._inflight = []    # Records sent and awaiting PUBACK, in send order
        self._acks_unsaved = 0
        try:
            os.mkdir(root)
        except OSError:
            pass
        self._first, self._rd_off = self._load_ptr()
        self._recover()

    # --- paths and pointer -------------------------------------------------------
    def _path(self, n):
        return "%s/%d" % (self.root, n % self.segments)

    def _load_ptr(self):
        try:
            with open(self.root + "/ptr") as f:
                a, b = f.read().split()
            return int(a), int(b)
        except (OSError, ValueError):
            return 0, 0

    def _save_ptr(self):
        tmp = self.root + "/ptr.tmp"
        with open(tmp, "w") as f:
            f.write("%d %d" % (self._first, self._rd_off))
        os.rename(tmp, self.root + "/ptr")
        self._acks_unsaved = 0

    def _size(self, n):
        try:
            return os.stat(self._path(n))[6]
        except OSError:
            return -1

    # --- boot -------------------------------------------------------------------------
    def _recover(self):
        """Find the segments on flash, cut torn tails, count what is pending."""
        # Segment numbers grow forever (file = number % segments); the live ones are
        # _first.._last. A pointer to a vanished segment means start afresh there.
        last = self._first
        while last + 1 < self._first + self.segments and self._size(last + 1) >= 0:
            last += 1
        self._last = last
        if self._size(self._first) < 0:
            self._rd_off = 0
        for n in range(self._first, self._last + 1):
            valid_end, count, max_seq = self._scan(n, self._rd_off if n == self._first else 0)
            if valid_end < self._size(n):
                self.torn += 1
                self._truncate(n, valid_end)
            self._pending += count
            if max_seq > self.max_seq:
                self.max_seq = max_seq
        self._cursor = (self._first, self._rd_off)  # next record to send

    def _scan(self, n, start):
        """-> (end of the last valid record, records from start, max seq in segment)."""
        end = 0
        count = 0
        max_seq = -1
        try:
            f = open(self._path(n), "rb")
        except OSError:
            return 0, 0, -1
        with f:
            off = 0
            while True:
                rec = self._read_at(f, off)
                if rec is None:
                    break
                kind, seq, body, nxt = rec
                if off >= start:
                    count += 1
                if seq > max_seq:
                    max_seq = seq
                off = end = nxt
        return end, count, max_seq

    def _truncate(self, n, length):
        path = self._path(n)
        with open(path, "rb") as f:
            keep = f.read(length)
        with open(path + ".tmp", "wb") as f:
            f.write(keep)
        os.rename(path + ".tmp", path)

    @staticmethod
    def _read_at(f, off):
        f.seek(off)
        head = f.read(_HEAD)
        if len(head) < _HEAD or head[0] != _MAGIC or head[1] not in _SUFFIX:
            return None
        blen = head[2]
        rest = f.read(blen + _CRC)
        if len(rest) < blen + _CRC:
            return None
        body = rest[:blen]
        if struct.unpack("<I", rest[blen:])[0] != _crc(head[1:] + body):
            return None
        return head[1], struct.unpack("<I", head[3:7])[0], body, off + _HEAD + blen + _CRC

    # --- writing ------------------------------------------------------------------------
    def append_window(self, seq, report):
        self._append(KIND_TELEMETRY, seq, encode_window(report))

    def append_event(self, seq, ts, present):
        self._append(KIND_EVENT, seq, struct.pack(_EVENT_FMT, ts, 1 if present else 0))

    def _append(self, kind, seq, body):
        rec = bytearray(_HEAD + len(body) + _CRC)
        rec[0] = _MAGIC
        rec[1] = kind
        rec[2] = len(body)
        struct.pack_into("<I", rec, 3, seq)
        rec[_HEAD:_HEAD + len(body)] = body
        struct.pack_into("<I", rec, _HEAD + len(body), _crc(rec[1:_HEAD + len(body)]))
        if self._size(self._last) + len(rec) > self.segment_bytes:
            self._next_segment()
        with open(self._path(self._last), "ab") as f:
            f.write(rec)
        self._pending += 1
        if seq > self.max_seq:
            self.max_seq = seq

    def _next_segment(self):
        if self._last + 1 - self._first >= self.segments:
            # Ring full: the oldest segment goes, with whatever was still unsent in it.
            _, unsent, _ = self._scan(self._first, self._rd_off)
            self.dropped += unsent
            self._pending -= unsent
            self._inflight = [r for r in self._inflight if r.seg != self._first]
            self._remove(self._first)
            self._first += 1
            self._rd_off = 0
            if self._cursor[0] < self._first:
                self._cursor = (self._first, 0)
            self._save_ptr()
        self._last += 1
        self._remove(self._last)  # a stale file from a previous lap of the ring

    def _remove(self, n):
        try:
            os.remove(self._path(n))
        except OSError:
            pass

    # --- sending --------------------------------------------------------------------------
    def __len__(self):
        return self._pending

    def inflight(self):
        return len(self._inflight)

    def next_unsent(self):
        """The oldest record not yet sent on this connection, or None."""
        seg, off = self._cursor
        while seg <= self._last:
            try:
                with open(self._path(seg), "rb") as f:
                    rec = self._read_at(f, off)
            except OSError:
                rec = None
            if rec is not None:
                kind, seq, body, nxt = rec
                r = Record(seg, off, nxt, kind, seq)
                r.payload = decode_payload(kind, seq, body)
                return r
            if seg == self._last:
                return None
            seg += 1
            off = 0
            self._cursor = (seg, 0)
        return None

    def mark_sent(self, rec, pid):
        rec.pid = pid
        rec.payload = None  # the JSON is on the wire; keep the heap small
        self._inflight.append(rec)
        self._cursor = (rec.seg, rec.end)

    def ack(self, pid):
        """PUBACK for pid: the record is delivered; move the read pointer past every
        delivered record at the head."""
        for i, r in enumerate(self._inflight):
            if r.pid == pid:
                break
        else:
            return False
        r.pid = -1
        while self._inflight and self._inflight[0].pid == -1:
            done = self._inflight.pop(0)
            self._first, self._rd_off = done.seg, done.end
            self._pending -= 1
            self._acks_unsaved += 1
        self._retire_segments()
        if self._acks_unsaved >= PTR_SAVE_ACKS:
            self._save_ptr()
        return True

    def _retire_segments(self):
        # A segment fully delivered and no longer written to can go.
        while self._first < self._last and self._rd_off >= self._size(self._first):
            self._remove(self._first)
            self._first += 1
            self._rd_off = 0
            self._save_ptr()

    def rewind(self):
        """The link dropped: everything in flight is sent again, oldest first."""
        self._inflight = []
        self._cursor = (self._first, self._rd_off)

    def flush(self):
        """Persist the read pointer now (before a planned reboot or stop)."""
        self._save_ptr()

"""LD2410 radar driver (firmware/drivers/ld2410.py): report frames built byte by byte from
the Hi-Link serial protocol layout, resync on garbage, split reads, probe and the command
/ ACK exchange, against a scripted UART and the sim layer's SimLD2410Uart."""
from drivers.ld2410 import LD2410
from hw.sim_parts import SimLD2410Uart

HEAD = b"\xf4\xf3\xf2\xf1"
TAIL = b"\xf8\xf7\xf6\xf5"
# Datasheet 5.4 example, verbatim: still target, energy 59 (0x3B).
DATASHEET_BASIC = bytes([0xF4, 0xF3, 0xF2, 0xF1, 0x0D, 0x00, 0x02, 0xAA, 0x02, 0x51, 0x00,
                         0x00, 0x00, 0x00, 0x3B, 0x00, 0x00, 0x55, 0x00,
                         0xF8, 0xF7, 0xF6, 0xF5])
# Datasheet 5.5 example, verbatim: engineering mode, gates 0..8, two extra bytes.
DATASHEET_ENGINEERING = bytes([
    0xF4, 0xF3, 0xF2, 0xF1, 0x23, 0x00, 0x01, 0xAA, 0x03, 0x1E, 0x00, 0x3C, 0x00, 0x00,
    0x39, 0x00, 0x00, 0x08, 0x08,
    0x3C, 0x22, 0x05, 0x03, 0x03, 0x04, 0x03, 0x06, 0x05,
    0x00, 0x00, 0x39, 0x10, 0x13, 0x06, 0x06, 0x08, 0x04,
    0x03, 0x05, 0x55, 0x00, 0xF8, 0xF7, 0xF6, 0xF5])


def basic(state, moving_cm, moving_e, still_cm, still_e, detect_cm):
    """A basic report frame, one field at a time in datasheet order (5.1, 5.2, 5.4)."""
    f = bytearray(HEAD)
    f.append(13)            # intra-frame length, u16 LE
    f.append(0)
    f.append(0x02)          # data type: basic
    f.append(0xAA)          # head
    f.append(state)
    f.append(moving_cm & 0xFF)
    f.append(moving_cm >> 8)
    f.append(moving_e)
    f.append(still_cm & 0xFF)
    f.append(still_cm >> 8)
    f.append(still_e)
    f.append(detect_cm & 0xFF)
    f.append(detect_cm >> 8)
    f.append(0x55)          # tail
    f.append(0x00)          # check
    f.extend(TAIL)
    assert len(f) == 23
    return bytes(f)


class ScriptedUart:
    """machine.UART stand-in: hands out queued chunks, one chunk per poll() round trip
    (any() reports only the current chunk), and records what was written."""

    def __init__(self, *chunks):
        self.chunks = [bytes(c) for c in chunks]
        self.written = []

    def feed(self, data):
        self.chunks.append(bytes(data))

    def any(self):
        while self.chunks and not self.chunks[0]:
            self.chunks.pop(0)
        return len(self.chunks[0]) if self.chunks else 0

    def readinto(self, buf):
        if not self.any():
            return None
        c = self.chunks[0]
        n = min(len(buf), len(c))
        buf[:n] = c[:n]
        self.chunks[0] = c[n:]
        return n

    def write(self, buf):
        self.written.append(bytes(buf))
        return len(buf)


class Room:
    def __init__(self, people=0, moving=False, noise_dba=35.0):
        self.people = people
        self.moving = moving
        self.noise_dba = noise_dba


class Clock:
    def __init__(self, t=1764300000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_datasheet_basic_frame_parses_to_still_target():
    r = LD2410(ScriptedUart(DATASHEET_BASIC))
    assert r.poll() == 1
    assert (r.target_state, r.moving_cm, r.moving_energy, r.still_cm, r.still_energy,
            r.detect_cm) == (2, 81, 0, 0, 59, 0)
    assert r.target() and not r.engineering
    assert r.frames == 1 and r.bad_frames == 0 and r.junk_bytes == 0
    assert r.last_frame_ms is not None


def test_built_basic_frame_decodes_u16_distances_little_endian():
    r = LD2410(ScriptedUart(basic(3, 0x012C, 77, 0x0258, 100, 0x0123)))
    assert r.poll() == 1
    assert r.target_state == 3
    assert r.moving_cm == 300 and r.moving_energy == 77
    assert r.still_cm == 600 and r.still_energy == 100
    assert r.detect_cm == 291


def test_each_target_state_and_target_bool():
    u = ScriptedUart()
    r = LD2410(u)
    for state, expect in ((0, False), (1, True), (2, True), (3, True), (0, False)):
        u.feed(basic(state, 10, 20, 30, 40, 50))
        assert r.poll() == 1
        assert r.target_state == state and r.target() is expect


def test_datasheet_engineering_frame_parses_basic_fields_and_gate_energies():
    r = LD2410(ScriptedUart(DATASHEET_ENGINEERING))
    assert r.poll() == 1
    assert r.engineering
    assert (r.target_state, r.moving_cm, r.moving_energy, r.still_cm, r.still_energy,
            r.detect_cm) == (3, 30, 60, 0, 57, 0)
    assert bytes(r.moving_gates) == bytes([0x3C, 0x22, 0x05, 0x03, 0x03, 0x04, 0x03, 0x06, 0x05])
    assert bytes(r.still_gates) == bytes([0x00, 0x00, 0x39, 0x10, 0x13, 0x06, 0x06, 0x08, 0x04])


def test_engineering_frame_with_fewer_gates_zeroes_the_rest():
    # Max moving gate 2, max still gate 3: 3 + 4 energies, no extra bytes.
    data = bytearray([0x01, 0xAA, 0x01, 0x64, 0x00, 0x32, 0x00, 0x00, 0x00, 0x64, 0x00, 2, 3,
                      11, 12, 13, 21, 22, 23, 24, 0x55, 0x00])
    frame = HEAD + bytes([len(data), 0]) + bytes(data) + TAIL
    r = LD2410(ScriptedUart(frame))
    assert r.poll() == 1
    assert r.target_state == 1 and r.moving_cm == 100 and r.moving_energy == 50
    assert bytes(r.moving_gates) == bytes([11, 12, 13, 0, 0, 0, 0, 0, 0])
    assert bytes(r.still_gates) == bytes([21, 22, 23, 24, 0, 0, 0, 0, 0])


def test_engineering_frame_claiming_more_gates_than_its_length_is_bad():
    data = bytearray([0x01, 0xAA, 0x01, 0x64, 0x00, 0x32, 0x00, 0x00, 0x00, 0x64, 0x00, 8, 8,
                      11, 12, 0x55, 0x00])
    frame = HEAD + bytes([len(data), 0]) + bytes(data) + TAIL
    r = LD2410(ScriptedUart(frame, basic(2, 0, 0, 120, 50, 120)))
    assert r.poll() == 1
    assert r.bad_frames == 1 and r.still_cm == 120 and not r.engineering


def test_garbage_before_and_between_frames_is_skipped():
    junk1 = b"\x00\x13\x37\xf3\xf2\xaa\x55"
    junk2 = b"\xf4\xf3\x99" + b"\x01\x02\x03"  # a header that breaks off, then noise
    stream = junk1 + basic(2, 0, 0, 150, 60, 150) + junk2 + basic(3, 90, 40, 200, 70, 90)
    r = LD2410(ScriptedUart(stream))
    assert r.poll() == 2
    assert r.frames == 2 and r.bad_frames == 0
    assert r.junk_bytes == len(junk1) + len(junk2)
    assert r.target_state == 3 and r.moving_cm == 90 and r.still_cm == 200


def test_garbage_inside_a_frame_drops_it_counts_it_and_parses_the_next():
    good = basic(2, 0, 0, 150, 60, 150)
    broken = good[:12] + b"\x42\x42" + good[12:]  # two bytes slipped in: tail misplaced
    nxt = basic(1, 300, 80, 0, 0, 300)
    r = LD2410(ScriptedUart(broken + nxt))
    assert r.poll() == 1
    assert r.bad_frames == 1 and r.frames == 1
    assert (r.target_state, r.moving_cm, r.moving_energy) == (1, 300, 80)


def test_truncated_frame_followed_by_a_good_one_resyncs_inside_the_claimed_length():
    # 10 bytes of a frame then a whole frame: the good header lies inside the span the
    # broken frame's length claims, so the parser must search again from there.
    r = LD2410(ScriptedUart(basic(2, 0, 0, 111, 1, 111)[:10] + basic(2, 0, 0, 222, 2, 222)))
    assert r.poll() == 1
    assert r.bad_frames == 1 and r.still_cm == 222


def test_bad_tail_and_bad_markers_are_dropped_and_counted():
    good = basic(2, 0, 0, 150, 60, 150)
    bad_tail = good[:-1] + b"\x00"
    no_head = good[:7] + b"\x00" + good[8:]           # 0xAA replaced
    no_data_tail = good[:17] + b"\x54" + good[18:]    # 0x55 replaced
    bad_type = good[:6] + b"\x07" + good[7:]          # neither basic nor engineering
    bad_state = good[:8] + b"\x04" + good[9:]         # target state beyond 3
    r = LD2410(ScriptedUart(bad_tail + no_head + no_data_tail + bad_type + bad_state
                            + basic(1, 99, 9, 0, 0, 99)))
    assert r.poll() == 1
    assert r.bad_frames == 5 and r.frames == 1
    assert r.moving_cm == 99


def test_impossible_length_is_dropped_counted_and_the_next_frame_parsed():
    huge = HEAD + b"\xff\x7f" + b"\x02\xaa" + bytes(9) + b"\x55\x00" + TAIL
    r = LD2410(ScriptedUart(huge + basic(2, 0, 0, 321, 33, 321)))
    assert r.poll() == 1
    assert r.bad_frames == 1 and r.still_cm == 321


def test_frame_split_at_every_position_across_two_reads():
    frame = basic(3, 0x0102, 55, 0x0304, 66, 0x0102)
    for cut in range(1, len(frame)):
        u = ScriptedUart(frame[:cut])
        r = LD2410(u)
        assert r.poll() == 0, cut
        u.feed(frame[cut:])
        assert r.poll() == 1, cut
        assert (r.moving_cm, r.still_cm, r.bad_frames, r.junk_bytes) == (258, 772, 0, 0), cut


def test_poll_consumes_everything_available_in_one_call():
    frames = b"".join(basic(2, 0, 0, 100 + i, 50, 100 + i) for i in range(20))
    u = ScriptedUart(frames[:200], frames[200:])  # more than one RX buffer's worth
    r = LD2410(u)
    assert r.poll() == 20
    assert u.any() == 0 and r.still_cm == 119


def test_ack_frames_in_the_stream_are_not_reports():
    ack = b"\xfd\xfc\xfb\xfa\x04\x00\xfe\x01\x00\x00\x04\x03\x02\x01"
    r = LD2410(ScriptedUart(ack + basic(2, 0, 0, 150, 60, 150) + ack))
    assert r.poll() == 1
    assert r.frames == 1 and r.bad_frames == 0 and r.junk_bytes == 0


def test_probe_raises_oserror_when_no_radar_answers():
    r = LD2410(ScriptedUart())
    try:
        r.probe(timeout_ms=60, read_firmware=False)
    except OSError as e:
        assert "LD2410" in str(e)
    else:
        raise AssertionError("probe() passed without a radar")


def test_probe_raises_oserror_when_only_garbage_arrives():
    r = LD2410(ScriptedUart(b"\x00\x11\x22" * 20, basic(2, 0, 0, 1, 1, 1)[:-1] + b"\x00"))
    try:
        r.probe(timeout_ms=60, read_firmware=False)
    except OSError:
        # The 60 junk bytes, and the 19 after the broken frame's header.
        assert r.bad_frames == 1 and r.junk_bytes == 60 + 19 and r.frames == 0
    else:
        raise AssertionError("probe() passed on garbage")


def test_probe_raises_on_absent_sim_radar():
    r = LD2410(SimLD2410Uart(Room(5, True), Clock(), present=False))
    try:
        r.probe(timeout_ms=60)
    except OSError:
        pass
    else:
        raise AssertionError("probe() passed with the sim radar absent")


def test_probe_reads_firmware_version_through_config_mode():
    u = SimLD2410Uart(Room(3, False), Clock())
    r = LD2410(u)
    r.probe()
    assert r.frames >= 1 and r.target_state == 2
    assert r.firmware == "1.07.22091516"  # the sim answers 4.8 with the datasheet bytes
    assert not u.config_mode  # end configuration was sent and acknowledged


def test_read_firmware_sends_exact_command_frames():
    # 4.1 / 4.8 / 4.2 command frames, and the ACKs of the datasheet examples.
    acks = [b"\xfd\xfc\xfb\xfa\x08\x00\xff\x01\x00\x00\x01\x00\x40\x00\x04\x03\x02\x01",
            b"\xfd\xfc\xfb\xfa\x0c\x00\xa0\x01\x00\x00\x00\x01\x07\x01\x16\x15\x09\x22"
            b"\x04\x03\x02\x01",
            b"\xfd\xfc\xfb\xfa\x04\x00\xfe\x01\x00\x00\x04\x03\x02\x01"]

    class AckingUart(ScriptedUart):
        def write(self, buf):
            n = ScriptedUart.write(self, buf)
            self.feed(acks[len(self.written) - 1])
            return n

    u = AckingUart()
    r = LD2410(u)
    assert r.read_firmware(timeout_ms=100) == "1.07.22091516"
    assert u.written == [
        b"\xfd\xfc\xfb\xfa\x04\x00\xff\x00\x01\x00\x04\x03\x02\x01",
        b"\xfd\xfc\xfb\xfa\x02\x00\xa0\x00\x04\x03\x02\x01",
        b"\xfd\xfc\xfb\xfa\x02\x00\xfe\x00\x04\x03\x02\x01",
    ]


def test_read_firmware_without_rx_wiring_returns_none_and_still_ends_config():
    u = ScriptedUart(basic(2, 0, 0, 150, 60, 150))
    r = LD2410(u)
    assert r.read_firmware(timeout_ms=30) is None
    assert r.firmware is None and r.frames == 1  # reports parsed while waiting
    assert u.written[-1] == b"\xfd\xfc\xfb\xfa\x02\x00\xfe\x00\x04\x03\x02\x01"


def test_failed_ack_status_gives_no_firmware():
    fail = b"\xfd\xfc\xfb\xfa\x04\x00\xff\x01\x01\x00\x04\x03\x02\x01"  # status 1

    class Refusing(ScriptedUart):
        def write(self, buf):
            self.feed(fail)
            return ScriptedUart.write(self, buf)

    u = Refusing()
    r = LD2410(u)
    assert r.read_firmware(timeout_ms=30) is None
    assert len(u.written) == 2  # enable (refused), then end configuration; no A0


def test_silent_ms_counts_from_the_last_good_frame():
    import time
    u = ScriptedUart()
    r = LD2410(u)
    time.sleep_ms(30)
    assert r.silent_ms() >= 30  # no frame yet: silent since start
    u.feed(basic(2, 0, 0, 150, 60, 150))
    r.poll()
    assert r.silent_ms() < 30
    time.sleep_ms(40)
    u.feed(b"\x00" * 10)
    r.poll()
    assert r.silent_ms() >= 40  # junk is not a frame

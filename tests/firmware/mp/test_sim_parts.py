"""Bus-level sims of the non-I2C parts (firmware/hw/sim_parts.py): the LD2410 UART emits
real report frames (checked byte by byte) and ACKs, at most one frame per sim second, with
absent / garbage faults; the PIR pin fires its IRQ on motion; the I2S mic gives 24-bit
left-justified samples at the room's level."""
import array
import math

from drivers.ld2410 import LD2410
from hw.sim_parts import SimI2S, SimLD2410Uart, SimPirPin

T0 = 1764300000


class Room:
    def __init__(self, people=0, moving=False, noise_dba=40.0):
        self.people = people
        self.moving = moving
        self.noise_dba = noise_dba


class Clock:
    def __init__(self, t=T0 + 0.25):
        self.t = t

    def __call__(self):
        return self.t


def read(u, n=-1):
    """machine.UART.read() over readinto(): None when nothing is waiting."""
    buf = bytearray(u.any() if n < 0 else n)
    got = u.readinto(buf)
    return bytes(buf[:got]) if got else None


def _u16(b, i):
    return b[i] | b[i + 1] << 8


def _check_basic_frame(f):
    """Layout of a basic report frame (protocol 5.1/5.2/5.4); returns the 9 target bytes."""
    assert len(f) == 23, f
    assert f[0:4] == b"\xf4\xf3\xf2\xf1"
    assert _u16(f, 4) == 13
    assert f[6] == 0x02 and f[7] == 0xAA
    assert f[17] == 0x55 and f[18] == 0x00
    assert f[19:23] == b"\xf8\xf7\xf6\xf5"
    return f[8:17]


def test_ld2410_sim_empty_room_sends_no_target_frame():
    u = SimLD2410Uart(Room(0), Clock())
    assert u.any() == 23
    t = _check_basic_frame(read(u, 23))
    assert t == bytes(9)


def test_ld2410_sim_seated_class_is_a_still_target_at_a_plausible_distance():
    u = SimLD2410Uart(Room(25, moving=False), Clock())
    t = _check_basic_frame(read(u))
    assert t[0] == 2
    assert _u16(t, 1) == 0 and t[3] == 0  # no moving target
    still_cm = _u16(t, 4)
    assert 80 <= still_cm <= 600 and 1 <= t[6] <= 100
    assert _u16(t, 7) == still_cm


def test_ld2410_sim_movement_adds_a_moving_target():
    u = SimLD2410Uart(Room(25, moving=True), Clock())
    t = _check_basic_frame(read(u))
    assert t[0] == 3
    mov, still = _u16(t, 1), _u16(t, 4)
    assert 75 <= mov <= 600 and 1 <= t[3] <= 100
    assert 80 <= still <= 600
    assert _u16(t, 7) == min(mov, still)


def test_ld2410_sim_sends_at_most_one_frame_per_sim_second():
    clock = Clock()
    u = SimLD2410Uart(Room(3), clock)
    assert u.any() == 23
    clock.t += 0.5  # same second
    assert u.any() == 23
    clock.t += 0.5  # next second
    assert u.any() == 46
    clock.t += 30  # a long gap still gives one frame, not a backlog
    assert u.any() == 69


def test_ld2410_sim_readinto_read_and_nbytes():
    u = SimLD2410Uart(Room(3), Clock())
    buf = bytearray(10)
    assert u.readinto(buf) == 10
    head = bytes(buf)
    assert u.readinto(buf, 3) == 3
    mid = bytes(buf[:3])
    rest = read(u)
    assert len(rest) == 10
    _check_basic_frame(head + mid + rest)
    assert read(u) is None and u.readinto(buf) is None


def test_ld2410_sim_absent_sends_nothing_and_answers_nothing():
    clock = Clock()
    u = SimLD2410Uart(Room(10, True), clock, present=False)
    for _ in range(5):
        clock.t += 1
        assert u.any() == 0 and read(u) is None
    u.write(b"\xfd\xfc\xfb\xfa\x04\x00\xff\x00\x01\x00\x04\x03\x02\x01")
    assert u.any() == 0


def test_ld2410_sim_acks_enable_config_with_the_datasheet_bytes_and_pauses_reports():
    clock = Clock()
    u = SimLD2410Uart(Room(3), clock)
    read(u)  # drain this second's report
    assert u.write(b"\xfd\xfc\xfb\xfa\x04\x00\xff\x00\x01\x00\x04\x03\x02\x01") == 14
    assert read(u) == b"\xfd\xfc\xfb\xfa\x08\x00\xff\x01\x00\x00\x01\x00\x40\x00\x04\x03\x02\x01"
    clock.t += 3
    assert u.any() == 0  # configuration mode: no reports
    u.write(b"\x00\xfd\xfc\xfb\xfa\x02\x00\xfe\x00\x04\x03\x02\x01")  # not a frame: ignored
    assert u.any() == 0
    u.write(b"\xfd\xfc\xfb\xfa\x02\x00\xfe\x00\x04\x03\x02\x01")
    assert read(u, 14) == b"\xfd\xfc\xfb\xfa\x04\x00\xfe\x01\x00\x00\x04\x03\x02\x01"
    assert u.any() == 23  # reports again, from this second on
    clock.t += 1
    assert u.any() == 46


def test_ld2410_sim_refuses_firmware_read_outside_config_mode():
    u = SimLD2410Uart(Room(0), Clock())
    read(u)
    u.write(b"\xfd\xfc\xfb\xfa\x02\x00\xa0\x00\x04\x03\x02\x01")
    assert read(u) == b"\xfd\xfc\xfb\xfa\x04\x00\xa0\x01\x01\x00\x04\x03\x02\x01"


def test_ld2410_sim_garbage_mode_is_survived_by_the_driver():
    clock = Clock()
    room = Room(6, moving=False)
    u = SimLD2410Uart(room, clock, seed=7, garbage=True)
    r = LD2410(u)
    for s in range(300):
        room.moving = s % 3 == 0
        clock.t += 1
        r.poll()
    assert u.frames_sent == 300
    assert 20 <= u.corrupted_sent <= 80, u.corrupted_sent
    assert r.bad_frames == u.corrupted_sent
    assert r.frames == u.frames_sent - u.corrupted_sent
    assert r.junk_bytes > 100
    assert r.target_state in (2, 3) and 80 <= r.still_cm <= 600


def test_ld2410_sim_same_seed_same_stream():
    def stream(seed):
        clock = Clock()
        u = SimLD2410Uart(Room(4, True), clock, seed=seed, garbage=True)
        out = b""
        for _ in range(20):
            clock.t += 1
            out += read(u) or b""
        return out
    assert stream(3) == stream(3)
    assert stream(3) != stream(4)


def test_pir_sim_fires_handler_on_motion_and_retriggers_after_two_seconds():
    room = Room(4, moving=True)
    pin = SimPirPin(room, Clock())
    seen = []
    pin.irq(trigger=SimPirPin.IRQ_RISING, handler=lambda p: seen.append(p.value()))
    fired = [pin.step(T0 + s) for s in range(6)]
    assert fired == [1, 0, 1, 0, 1, 0]
    assert seen == [1, 1, 1]


def test_pir_sim_no_edges_without_motion_or_people_or_when_absent():
    room = Room(4, moving=False)
    pin = SimPirPin(room, Clock())
    calls = []
    pin.irq(trigger=SimPirPin.IRQ_RISING, handler=lambda p: calls.append(1))
    assert [pin.step(T0 + s) for s in range(5)] == [0] * 5
    room.people, room.moving = 0, True
    assert [pin.step(T0 + 5 + s) for s in range(5)] == [0] * 5
    gone = SimPirPin(Room(10, True), Clock(), present=False)
    gone.irq(trigger=SimPirPin.IRQ_RISING, handler=lambda p: calls.append(1))
    assert [gone.step(T0 + s) for s in range(5)] == [0] * 5
    assert calls == [] and gone.value() == 0


def test_pir_sim_output_falls_after_the_hold_and_no_edge_while_high():
    room = Room(2, moving=True)
    pin = SimPirPin(room, Clock())
    assert pin.step(T0) == 1 and pin.value() == 1
    room.moving = False
    pin.step(T0 + 1)
    assert pin.value() == 1
    pin.step(T0 + 2)
    assert pin.value() == 0


def test_pir_sim_handler_only_for_rising_trigger():
    pin = SimPirPin(Room(2, True), Clock())
    calls = []
    pin.irq(trigger=2, handler=lambda p: calls.append(1))  # machine.Pin.IRQ_FALLING
    assert pin.step(T0) == 1 and calls == []


def test_pir_sim_ticks_follow_the_sim_clock():
    import time
    clock = Clock()
    pin = SimPirPin(Room(), clock)
    a = pin.ticks_ms()
    clock.t += 2.5
    assert time.ticks_diff(pin.ticks_ms(), a) == 2500


def _samples24(buf):
    return [v >> 8 for v in buf]


def test_i2s_sim_slots_are_24_bit_left_justified():
    ints = array.array("i", bytes(4 * 64))
    assert SimI2S(Room(noise_dba=80.0), Clock()).readinto(ints) == 256  # bytes, as machine.I2S
    raw = bytes(ints)  # the slots as they sit in memory (little-endian on the ESP32)
    for i in range(64):
        assert ints[i] & 0xFF == 0 and raw[4 * i] == 0  # low byte of the slot is padding
        assert -(1 << 31) <= ints[i] < (1 << 31)
    assert max(ints) > 0 > min(ints)


def test_i2s_sim_tone_peak_matches_the_datasheet_sensitivity():
    # 80 dB SPL: peak = 420,426 * 10^(-14/20) counts; the noise adds at most 3%.
    buf = array.array("i", bytes(4 * 160))
    SimI2S(Room(noise_dba=80.0), Clock()).readinto(buf)
    s = _samples24(buf)
    want = 420426 * 10 ** (-14 / 20)
    assert want * 0.97 <= max(s) <= want * 1.03
    assert -want * 1.03 <= min(s) <= -want * 0.97
    # 1 kHz: the sign pattern repeats every 16 samples.
    rms = math.sqrt(sum(v * v for v in s) / len(s))
    assert abs(20 * math.log10(rms / (want / math.sqrt(2)))) <= 0.05


def test_i2s_sim_is_continuous_across_reads_of_any_size():
    a = array.array("i", bytes(4 * 100))
    SimI2S(Room(noise_dba=60.0), Clock(), seed=3).readinto(a)
    i2s = SimI2S(Room(noise_dba=60.0), Clock(), seed=3)
    parts = []
    for n in (7, 41, 52):
        b = array.array("i", bytes(4 * n))
        i2s.readinto(b)
        parts.extend(b)
    assert list(a) == parts


def test_i2s_sim_absent_gives_zeros_and_level_changes_take_effect():
    room = Room(noise_dba=50.0)
    i2s = SimI2S(room, Clock(), present=False)
    buf = array.array("i", bytes(4 * 64))
    i2s.readinto(buf)
    assert max(buf) == 0 and min(buf) == 0
    i2s.present = True
    i2s.readinto(buf)
    p50 = max(_samples24(buf))
    room.noise_dba = 70.0
    i2s.readinto(buf)
    p70 = max(_samples24(buf))
    assert 9.0 <= p70 / p50 <= 11.0  # +20 dB is 10x in amplitude

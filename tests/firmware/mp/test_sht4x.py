"""SHT4x driver (firmware/drivers/sht4x.py): exact command bytes, the 9 ms wait, the
datasheet conversion and RH cropping on a recording bus, then against SimSHT4x."""
from crc8 import CRCError
from drivers.sht4x import SHT4x
from hw.sim_i2c import SimI2C, SimSHT4x
from test_scd4x import Clock, FakeBus, Room, raises

ADDR = 0x44
# 0x6666 -> -45 + 175 * 26214 / 65535 = 25.0 C; 0x9999 -> -6 + 125 * 39321 / 65535 = 69.0 %
MEASURE_REPLY = b"\x66\x66\x93\x99\x99\xbe"
SERIAL_REPLY = b"\x0b\xad\x2b\xca\xfe\x58"


def _sensor(replies=()):
    bus = FakeBus(replies)
    return bus, SHT4x(bus, sleep_ms=bus.sleep_ms)


def test_probe_reads_the_serial_with_command_0x89():
    bus, s = _sensor([SERIAL_REPLY])
    assert s.probe() == 0x0BADCAFE and s.serial == 0x0BADCAFE
    assert bus.log == [("w", ADDR, b"\x89"), ("s", 10), ("r", ADDR, 6)], bus.log


def test_probe_raises_oserror_when_no_part_answers():
    bus = FakeBus(missing=True)
    assert raises(OSError, SHT4x(bus, sleep_ms=bus.sleep_ms).probe).errno == 19


def test_probe_raises_crc_error_on_a_bad_serial_crc():
    _, s = _sensor([SERIAL_REPLY[:5] + b"\x59"])
    raises(CRCError, s.probe)


def test_measure_sends_0xfd_waits_9ms_and_converts():
    bus, s = _sensor([MEASURE_REPLY])
    t, rh = s.measure()
    assert bus.log == [("w", ADDR, b"\xfd"), ("s", 9), ("r", ADDR, 6)], bus.log
    assert abs(t - 25.0) < 1e-6 and abs(rh - 69.0) < 1e-6, (t, rh)


def test_measure_crops_rh_to_0_100():
    # S_RH 0xffff -> 119 %RH and 0x0000 -> -6 %RH by the formula; both are cropped.
    _, s = _sensor([b"\x66\x66\x93\xff\xff\xac", b"\x66\x66\x93\x00\x00\x81"])
    assert s.measure()[1] == 100.0
    assert s.measure()[1] == 0.0


def test_measure_raises_crc_error_on_either_word():
    _, s = _sensor([MEASURE_REPLY[:2] + b"\x94" + MEASURE_REPLY[3:],
                    MEASURE_REPLY[:5] + b"\xbf"])
    raises(CRCError, s.measure)
    raises(CRCError, s.measure)


def test_sim_round_trip_within_one_count():
    clock = Clock()
    room = Room(temp_c=23.45, rh_pct=51.2)
    s = SHT4x(SimI2C([SimSHT4x(room, clock)]), sleep_ms=clock.sleep_ms)
    assert s.probe() == 0x0BADCAFE
    t, rh = s.measure()
    assert abs(t - 23.45) <= 175 / 65535 and abs(rh - 51.2) <= 125 / 65535, (t, rh)
    room.rh_pct = 100.0
    assert s.measure()[1] == 100.0


def test_sim_measure_waits_out_the_measurement_time():
    # The sim NACKs a read header before tMEAS,h (8.3 ms); the driver's 9 ms covers it.
    clock = Clock()
    s = SHT4x(SimI2C([SimSHT4x(Room(), clock)]), sleep_ms=clock.sleep_ms)
    assert abs(s.measure()[0] - 22.3) < 0.01
    short = SHT4x(SimI2C([SimSHT4x(Room(), clock)]), sleep_ms=lambda ms: clock.sleep_ms(8))
    assert raises(OSError, short.measure).errno == 19


def test_sim_crc_errors_and_absent_part():
    clock = Clock()
    part = SimSHT4x(Room(), clock)
    s = SHT4x(SimI2C([part]), sleep_ms=clock.sleep_ms)
    part.crc_errors = True
    raises(CRCError, s.probe)
    raises(CRCError, s.measure)
    part.present = False
    assert raises(OSError, s.probe).errno == 19

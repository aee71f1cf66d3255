"""SCD4x driver (firmware/drivers/scd4x.py): exact bytes and waits of the SCD4x datasheet
v1.3 sequences on a recording bus, then the same driver against the SimSCD41 part."""
import micropython

from crc8 import CRCError
from drivers.scd4x import SCD4x
from hw.sim_i2c import SimI2C, SimSCD41

ADDR = 0x62
SERIAL_REPLY = b"\xf8\x96\x31\x9f\x07\xc2\x3b\xbe\x89"   # 3.9.2 example
SERIAL = 273325796834238
MEASUREMENT_REPLY = b"\x01\xf4\x33\x66\x67\xa2\x5e\xb9\x3c"  # 3.5.2: 500 ppm, 25 C, 37 %
READY = b"\x80\x06\x04"
NOT_READY = b"\x80\x00\xa2"
T_STEP = 175 / 65536   # one count of the temperature word
RH_STEP = 100 / 65536


# FakeBus, Clock, Room and raises are shared with test_sht4x / test_bh1750 /
# test_sim_i2c, which import them from here.
class FakeBus:
    """machine.I2C stand-in that records writes, reads and the driver's sleeps in
    order and answers reads from a script."""

    def __init__(self, replies=(), missing=False):
        self.log = []
        self.replies = list(replies)
        self.missing = missing

    def writeto(self, addr, buf, stop=True):
        if self.missing:
            raise OSError(19)
        self.log.append(("w", addr, bytes(buf)))
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        if self.missing:
            raise OSError(19)
        reply = self.replies.pop(0)
        assert len(reply) == len(buf), (reply, len(buf))
        for i in range(len(buf)):
            buf[i] = reply[i]
        self.log.append(("r", addr, len(buf)))

    def sleep_ms(self, ms):
        self.log.append(("s", ms))


class Clock:
    """Sim Unix seconds; the driver's sleeps advance it, as real time would."""

    def __init__(self, t=1764300000.0):
        self.t = t

    def __call__(self):
        return self.t

    def sleep_ms(self, ms):
        self.t += ms / 1000


class Room:
    def __init__(self, co2_ppm=812.0, temp_c=22.3, rh_pct=45.6, lux=300.0):
        self.co2_ppm = co2_ppm
        self.temp_c = temp_c
        self.rh_pct = rh_pct
        self.lux = lux


def _probed(replies=()):
    bus = FakeBus([SERIAL_REPLY] + list(replies))
    s = SCD4x(bus, sleep_ms=bus.sleep_ms)
    s.probe()
    bus.log = []
    return bus, s


def _sim(room=None):
    clock = Clock()
    part = SimSCD41(room or Room(), clock)
    s = SCD4x(SimI2C([part]), sleep_ms=clock.sleep_ms)
    return clock, part, s


def raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised" % exc_type.__name__)


# --- exact datasheet sequences on a recording bus ---------------------------------------
def test_probe_stops_waits_500ms_reads_serial_then_starts_periodic():
    bus = FakeBus([SERIAL_REPLY])
    s = SCD4x(bus, sleep_ms=bus.sleep_ms)
    assert s.probe() == SERIAL and s.serial == SERIAL
    assert bus.log == [("w", ADDR, b"\x3f\x86"), ("s", 500),
                       ("w", ADDR, b"\x36\x82"), ("s", 1), ("r", ADDR, 9),
                       ("w", ADDR, b"\x21\xb1")], bus.log


def test_probe_raises_oserror_enodev_when_no_part_answers():
    bus = FakeBus(missing=True)
    e = raises(OSError, SCD4x(bus, sleep_ms=bus.sleep_ms).probe)
    assert e.errno == 19, e


def test_probe_raises_crc_error_on_bad_serial_crc_and_does_not_start():
    bus = FakeBus([SERIAL_REPLY[:8] + b"\x88"])
    raises(CRCError, SCD4x(bus, sleep_ms=bus.sleep_ms).probe)
    assert ("w", ADDR, b"\x21\xb1") not in bus.log, bus.log


def test_read_parses_the_datasheet_example_after_data_ready():
    bus, s = _probed([READY, MEASUREMENT_REPLY])
    co2, t, rh = s.read()
    assert bus.log == [("w", ADDR, b"\xe4\xb8"), ("s", 1), ("r", ADDR, 3),
                       ("w", ADDR, b"\xec\x05"), ("s", 1), ("r", ADDR, 9)], bus.log
    assert co2 == 500 and isinstance(co2, int)
    assert abs(t - 25.0) < 0.01 and abs(rh - 37.0) < 0.01, (t, rh)
    # No sleep in read() is longer than the 1 ms command execution time.
    assert max(e[1] for e in bus.log if e[0] == "s") == 1


def test_read_returns_none_when_low_11_bits_of_data_ready_are_zero():
    # 0x8000 and 0x0800 have bits set, but only above the 11-bit mask (3.8.2).
    bus, s = _probed([NOT_READY, b"\x08\x00\xb6"])
    assert s.read() is None
    assert s.read() is None
    assert ("w", ADDR, b"\xec\x05") not in bus.log, bus.log


def test_read_treats_any_low_bit_as_ready():
    bus, s = _probed([b"\x00\x01\xb0", MEASUREMENT_REPLY])
    assert s.read()[0] == 500


def test_read_raises_crc_error_on_a_bad_measurement_or_data_ready_crc():
    _, s = _probed([READY, MEASUREMENT_REPLY[:8] + b"\x3d"])
    raises(CRCError, s.read)
    _, s = _probed([b"\x80\x06\x05"])
    raises(CRCError, s.read)


def test_read_not_ready_path_allocates_nothing():
    class StaticBus:
        def writeto(self, addr, buf, stop=True):
            return 2

        def readfrom_into(self, addr, buf, stop=True):
            for i in range(len(buf)):
                buf[i] = NOT_READY[i]

    s = SCD4x(StaticBus(), sleep_ms=lambda ms: None)
    out = [0]
    micropython.heap_lock()
    try:
        out[0] = s.read()
    finally:
        micropython.heap_unlock()
    assert out[0] is None


def test_set_temperature_offset_sends_the_datasheet_example_between_stop_and_start():
    bus, s = _probed()
    s.configure(temperature_offset_c=5.4)   # 3.6.1 example: 0x07e6, CRC 0x48
    assert bus.log == [("w", ADDR, b"\x3f\x86"), ("s", 500),
                       ("w", ADDR, b"\x24\x1d\x07\xe6\x48"), ("s", 1),
                       ("w", ADDR, b"\x21\xb1")], bus.log


def test_set_altitude_and_asc_words_and_crcs():
    bus, s = _probed()
    s.configure(altitude_m=1950)
    s.configure(asc=True)
    s.configure(asc=False)
    writes = [e[2] for e in bus.log if e[0] == "w" and len(e[2]) == 5]
    assert writes == [b"\x24\x27\x07\x9e\x09", b"\x24\x16\x00\x01\xb0",
                      b"\x24\x16\x00\x00\x81"], writes


def test_set_ambient_pressure_is_sent_while_measuring_without_stop():
    bus, s = _probed()
    s.set_ambient_pressure_hpa(987)   # 3.6.5 example: 98 700 Pa -> 0x03db, CRC 0x42
    assert bus.log == [("w", ADDR, b"\xe0\x00\x03\xdb\x42"), ("s", 1)], bus.log


def test_configure_applies_several_settings_in_one_stop_start_cycle():
    bus, s = _probed()
    s.configure(asc=False, altitude_m=50, temperature_offset_c=4.0)
    cmds = [e[2][:2] for e in bus.log if e[0] == "w"]
    assert cmds == [b"\x3f\x86", b"\x24\x1d", b"\x24\x27", b"\x24\x16", b"\x21\xb1"], cmds


def test_setter_before_probe_leaves_the_part_idle():
    bus = FakeBus()
    s = SCD4x(bus, sleep_ms=bus.sleep_ms)
    s.configure(asc=False)
    assert ("w", ADDR, b"\x21\xb1") not in bus.log, bus.log
    assert bus.log[0] == ("w", ADDR, b"\x3f\x86"), bus.log


def test_setters_reject_out_of_range_values_without_touching_the_bus():
    bus, s = _probed()
    for kw in ({"temperature_offset_c": -0.1}, {"temperature_offset_c": 20.5},
               {"altitude_m": -1}, {"altitude_m": 3001}, {"asc": False, "altitude_m": 3001}):
        raises(ValueError, lambda: s.configure(**kw))
    for hpa in (699, 1201):
        raises(ValueError, s.set_ambient_pressure_hpa, hpa)
    assert bus.log == [], bus.log


# --- the same driver against the simulated part -----------------------------------------
def test_sim_round_trip_co2_temperature_and_humidity():
    room = Room(co2_ppm=812, temp_c=22.3, rh_pct=45.6)
    clock, part, s = _sim(room)
    assert s.probe() == SERIAL and part.measuring
    assert s.read() is None            # first measurement lands 5 s after start
    clock.t += 5
    co2, t, rh = s.read()
    assert abs(co2 - 812) <= 1, co2
    assert abs(t - 22.3) <= T_STEP and abs(rh - 45.6) <= RH_STEP, (t, rh)
    assert s.read() is None            # the buffer is emptied on read-out


def test_sim_values_are_taken_at_measurement_time():
    room = Room(co2_ppm=600)
    clock, part, s = _sim(room)
    s.probe()
    clock.t += 5
    assert s.read()[0] == 600
    room.co2_ppm = 1430.4
    clock.t += 5
    assert s.read()[0] == 1430


def test_sim_missing_or_absent_part_makes_probe_raise_oserror():
    clock, part, s = _sim()
    part.present = False
    assert raises(OSError, s.probe).errno == 19
    s = SCD4x(SimI2C([]), sleep_ms=clock.sleep_ms)
    assert raises(OSError, s.probe).errno == 19


def test_sim_crc_errors_raise_crc_error_in_probe_and_read():
    clock, part, s = _sim()
    part.crc_errors = True
    raises(CRCError, s.probe)
    part.crc_errors = False
    s.probe()
    clock.t += 5
    part.crc_errors = True
    raises(CRCError, s.read)


def test_sim_probe_recovers_a_part_left_measuring_by_an_earlier_boot():
    clock, part, s = _sim()
    SimI2C([part]).writeto(ADDR, b"\x21\xb1")
    assert part.measuring
    assert s.probe() == SERIAL and part.measuring


def test_sim_setters_reach_the_part_and_restart_measurement():
    room = Room(temp_c=21.0)
    clock, part, s = _sim(room)
    s.probe()
    s.configure(asc=False)
    s.configure(altitude_m=1950)
    s.configure(temperature_offset_c=6.0)   # 2 degC more than the 4 degC factory default
    assert part.measuring and not part.asc_enabled and part.altitude_m == 1950
    assert part.temp_offset_word == round(6.0 * 65536 / 175)
    s.set_ambient_pressure_hpa(987.4)
    assert part.pressure_hpa == 987 and part.measuring
    clock.t += 5
    co2, t, rh = s.read()
    assert abs(t - 19.0) <= 2 * T_STEP, t

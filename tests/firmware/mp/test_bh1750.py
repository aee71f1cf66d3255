"""BH1750 driver (firmware/drivers/bh1750.py): one opcode per write, the first-conversion
wait in probe() and counts / 1.2 on a recording bus, then against SimBH1750."""
from drivers.bh1750 import BH1750
from hw.sim_i2c import SimBH1750, SimI2C
from test_scd4x import Clock, FakeBus, Room, raises

ADDR = 0x23


def test_probe_powers_on_then_starts_continuous_h_mode_and_waits_180ms():
    bus = FakeBus()
    BH1750(bus, sleep_ms=bus.sleep_ms).probe()
    assert bus.log == [("w", ADDR, b"\x01"), ("w", ADDR, b"\x10"), ("s", 180)], bus.log


def test_read_converts_the_datasheet_example():
    # Technical Note "Read format": 1000_0011 1001_0000 -> 33680 / 1.2 = 28067 lx.
    bus = FakeBus([b"\x83\x90"])
    lux = BH1750(bus, sleep_ms=bus.sleep_ms).read()
    assert bus.log == [("r", ADDR, 2)], bus.log
    assert abs(lux - 28066.67) < 0.01, lux


def test_probe_raises_oserror_when_no_part_answers_at_either_address():
    bus = FakeBus(missing=True)
    assert raises(OSError, BH1750(bus, sleep_ms=bus.sleep_ms).probe).errno == 19
    bus = FakeBus()
    BH1750(bus, address=0x5C, sleep_ms=bus.sleep_ms).probe()
    assert bus.log[0] == ("w", 0x5C, b"\x01"), bus.log


def test_sim_round_trip_within_one_count():
    clock = Clock()
    room = Room(lux=412.5)
    s = BH1750(SimI2C([SimBH1750(room, clock)]), sleep_ms=clock.sleep_ms)
    s.probe()
    assert abs(s.read() - 412.5) <= 0.5 / 1.2
    room.lux = 0.0
    assert s.read() == 0.0
    room.lux = 1e6                      # saturates at 65535 counts
    assert abs(s.read() - 65535 / 1.2) < 1e-6


def test_sim_reads_zero_until_the_first_conversion_ends():
    clock = Clock()
    part = SimBH1750(Room(lux=500.0), clock)
    bus = SimI2C([part])
    bus.writeto(ADDR, b"\x01")
    bus.writeto(ADDR, b"\x10")
    s = BH1750(bus, sleep_ms=clock.sleep_ms)
    assert s.read() == 0.0
    clock.sleep_ms(120)
    assert abs(s.read() - 500.0) <= 0.5 / 1.2


def test_sim_absent_part():
    clock = Clock()
    part = SimBH1750(Room(), clock)
    s = BH1750(SimI2C([part]), sleep_ms=clock.sleep_ms)
    part.present = False
    assert raises(OSError, s.probe).errno == 19
    assert raises(OSError, s.read).errno == 19

"""The sim I2C bus and parts (firmware/hw/sim_i2c.py) at the byte level: routing and
NACKs, and each part's answers, CRCs, state and timing against its datasheet."""
from crc8 import checked_word
from hw.sim_i2c import SimBH1750, SimI2C, SimSCD41, SimSHT4x
from test_scd4x import Clock, Room, raises

SCD = 0x62


def _scd(room=None):
    clock = Clock()
    part = SimSCD41(room or Room(), clock)
    return clock, part, SimSI(part)


class SimSI(SimI2C):
    """SimI2C with one-line helpers for the SCD41 sequences (3.3)."""

    def __init__(self, part):
        SimI2C.__init__(self, [part])
        self.addr = part.address

    def cmd(self, code):
        self.writeto(self.addr, bytes((code >> 8, code & 0xFF)))

    def word(self, clock, code):
        self.cmd(code)
        clock.sleep_ms(1)
        return checked_word(self.readfrom(self.addr, 3), 0)


def test_scan_lists_only_present_parts_and_dict_form_routes_too():
    clock = Clock()
    scd, sht, bh = SimSCD41(Room(), clock), SimSHT4x(Room()), SimBH1750(Room())
    bus = SimI2C([bh, sht, scd])
    assert bus.scan() == [0x23, 0x44, 0x62]
    sht.present = False
    assert bus.scan() == [0x23, 0x62]
    assert SimI2C({0x5C: bh}).scan() == [0x5C]


def test_unknown_address_and_absent_part_raise_enodev_on_every_call():
    part = SimBH1750(Room())
    bus = SimI2C([part])
    for addr in (0x10, 0x23):
        if addr == 0x23:
            part.present = False
        assert raises(OSError, bus.writeto, addr, b"\x01").errno == 19
        assert raises(OSError, bus.readfrom_into, addr, bytearray(2)).errno == 19
        assert raises(OSError, bus.readfrom, addr, 2).errno == 19


def test_zero_length_write_probes_the_address_only():
    part = SimBH1750(Room())
    bus = SimI2C([part])
    assert bus.writeto(0x23, b"") == 0
    assert not part.powered
    assert bus.writeto(0x23, b"\x01") == 1 and part.powered


# --- SCD41 --------------------------------------------------------------------------------
def test_scd41_starts_idle_and_nacks_read_measurement_without_data():
    clock, part, bus = _scd()
    assert not part.measuring
    assert bus.word(clock, 0xE4B8) & 0x07FF == 0
    bus.cmd(0xEC05)                          # the command is ACKed ...
    clock.sleep_ms(1)
    assert raises(OSError, bus.readfrom, SCD, 9).errno == 19   # ... the read header is not


def test_scd41_data_ready_every_5_s_and_cleared_by_read_out():
    clock, part, bus = _scd(Room(co2_ppm=812))
    bus.cmd(0x21B1)
    clock.sleep_ms(4990)
    assert bus.word(clock, 0xE4B8) == 0x8000
    clock.sleep_ms(10)
    assert bus.word(clock, 0xE4B8) == 0x8006
    bus.cmd(0xEC05)
    clock.sleep_ms(1)
    rx = bus.readfrom(SCD, 9)
    assert checked_word(rx, 0) == 812
    assert bus.word(clock, 0xE4B8) == 0x8000
    clock.sleep_ms(5000)
    assert bus.word(clock, 0xE4B8) == 0x8006


def test_scd41_read_header_before_the_1ms_execution_time_is_nacked():
    clock, part, bus = _scd()
    bus.cmd(0x3682)
    assert raises(OSError, bus.readfrom, SCD, 9).errno == 19
    clock.sleep_ms(1)
    rx = bus.readfrom(SCD, 9)
    assert (checked_word(rx, 0), checked_word(rx, 3), checked_word(rx, 6)) == (0xF896, 0x9F07, 0x3BBE)
    assert rx == b"\xf8\x96\x31\x9f\x07\xc2\x3b\xbe\x89"     # datasheet 3.9.2 bytes


def test_scd41_while_measuring_nacks_idle_only_commands_but_takes_pressure():
    clock, part, bus = _scd()
    bus.cmd(0x21B1)
    for frame in (b"\x36\x82", b"\x21\xb1", b"\x24\x16\x00\x00\x81", b"\x24\x27\x07\x9e\x09"):
        assert raises(OSError, bus.writeto, SCD, frame).errno == 19, frame
    bus.writeto(SCD, b"\xe0\x00\x03\xdb\x42")
    assert part.pressure_hpa == 987 and part.measuring and part.asc_enabled


def test_scd41_nacks_everything_for_500_ms_after_stop():
    clock, part, bus = _scd()
    bus.cmd(0x21B1)
    bus.cmd(0x3F86)
    assert not part.measuring
    clock.sleep_ms(499)
    assert raises(OSError, bus.cmd, 0x3682).errno == 19
    clock.sleep_ms(1)
    assert bus.word(clock, 0x2313) == 1          # ASC enabled by default


def test_scd41_nacks_a_write_whose_argument_crc_is_wrong():
    clock, part, bus = _scd()
    assert raises(OSError, bus.writeto, SCD, b"\x24\x27\x07\x9e\x0a").errno == 19
    assert part.altitude_m == 0
    bus.writeto(SCD, b"\x24\x27\x07\x9e\x09")
    assert part.altitude_m == 1950
    clock.sleep_ms(1)
    assert bus.word(clock, 0x2322) == 1950


def test_scd41_crc_errors_flag_corrupts_only_the_crc_bytes():
    clock, part, bus = _scd()
    part.crc_errors = True
    bus.cmd(0x3682)
    clock.sleep_ms(1)
    rx = bus.readfrom(SCD, 9)
    assert rx[0:2] == b"\xf8\x96" and rx[3:5] == b"\x9f\x07" and rx[6:8] == b"\x3b\xbe"
    assert rx[2] != 0x31 and rx[5] != 0xC2 and rx[8] != 0x89


def test_scd41_temperature_offset_default_persist_and_reinit():
    clock, part, bus = _scd()
    assert bus.word(clock, 0x2318) == 1498       # 4 degC factory default
    bus.writeto(SCD, b"\x24\x1d\x07\xe6\x48")     # 5.4 degC (3.6.1 example)
    clock.sleep_ms(1)
    bus.cmd(0x3615)                               # persist, 800 ms
    clock.sleep_ms(800)
    bus.writeto(SCD, b"\x24\x16\x00\x00\x81")     # ASC off, not persisted
    clock.sleep_ms(1)
    bus.cmd(0x3646)                               # reinit reloads the persisted settings
    clock.sleep_ms(20)
    assert part.temp_offset_word == 0x07E6 and part.asc_enabled


def test_scd41_single_shot_measures_once_after_5_s():
    clock, part, bus = _scd(Room(co2_ppm=1234))
    bus.cmd(0x219D)
    clock.sleep_ms(4999)
    assert raises(OSError, bus.cmd, 0xE4B8).errno == 19   # busy measuring
    clock.sleep_ms(1)
    assert bus.word(clock, 0xE4B8) & 0x07FF
    bus.cmd(0xEC05)
    clock.sleep_ms(1)
    assert checked_word(bus.readfrom(SCD, 9), 0) == 1234
    bus.cmd(0x2196)                                        # RH/T only: CO2 reads 0
    clock.sleep_ms(50)
    bus.cmd(0xEC05)
    clock.sleep_ms(1)
    assert checked_word(bus.readfrom(SCD, 9), 0) == 0


# --- SHT4x --------------------------------------------------------------------------------
def test_sht4x_answers_only_after_a_command_and_only_once():
    bus = SimI2C([SimSHT4x(Room(temp_c=25.0, rh_pct=69.0))])
    assert raises(OSError, bus.readfrom, 0x44, 6).errno == 19
    bus.writeto(0x44, b"\xfd")
    assert bus.readfrom(0x44, 6) == b"\x66\x66\x93\x99\x99\xbe"
    assert raises(OSError, bus.readfrom, 0x44, 6).errno == 19
    assert raises(OSError, bus.writeto, 0x44, b"\xfd\xfd").errno == 19
    assert raises(OSError, bus.writeto, 0x44, b"\x39").errno == 19   # heater: not simulated


def test_sht4x_medium_and_low_repeatability_times_and_soft_reset():
    clock = Clock()
    bus = SimI2C([SimSHT4x(Room(), clock)])
    for cmd, ms in ((b"\xf6", 4.5), (b"\xe0", 1.6)):
        bus.writeto(0x44, cmd)
        clock.sleep_ms(ms - 0.2)
        assert raises(OSError, bus.readfrom, 0x44, 6).errno == 19
        clock.sleep_ms(0.2)
        assert len(bus.readfrom(0x44, 6)) == 6
    bus.writeto(0x44, b"\x94")
    assert raises(OSError, bus.writeto, 0x44, b"\x89").errno == 19
    clock.sleep_ms(1)
    bus.writeto(0x44, b"\x89")
    rx = bus.readfrom(0x44, 6)
    assert (checked_word(rx, 0) << 16 | checked_word(rx, 3)) == 0x0BADCAFE


# --- BH1750 -------------------------------------------------------------------------------
def test_bh1750_one_opcode_per_write_and_unknown_opcodes_nacked():
    bus = SimI2C([SimBH1750(Room())])
    assert raises(OSError, bus.writeto, 0x23, b"\x01\x10").errno == 19
    assert raises(OSError, bus.writeto, 0x23, b"\x55").errno == 19


def test_bh1750_modes_and_mtreg_scale_the_counts():
    room = Room(lux=1000.0)
    part = SimBH1750(room)
    bus = SimI2C([part])

    def counts():
        rx = bus.readfrom(0x23, 2)
        return rx[0] << 8 | rx[1]

    bus.writeto(0x23, b"\x01")
    bus.writeto(0x23, b"\x10")
    assert counts() == 1200                    # lux * 1.2 at MTreg 69
    bus.writeto(0x23, b"\x11")
    assert counts() == 2400                    # H-resolution mode 2: 0.5 lx per count
    bus.writeto(0x23, b"\x13")
    room.lux = 1001.0
    assert counts() == 1200                    # L-resolution: 4-count steps (1201 -> 1200)
    bus.writeto(0x23, b"\x42")                 # MTreg high bits 010 -> 0b010_00101 = 69
    bus.writeto(0x23, b"\x7f")                 # low bits 11111 -> 0b010_11111 = 95
    assert part.mtreg == 95
    bus.writeto(0x23, b"\x10")
    assert counts() == round(1001.0 * 1.2 * 95 / 69)
    bus.writeto(0x23, b"\x20")                 # one-time: measures, then powers down
    room.lux = 10.0
    assert counts() == round(10.0 * 1.2 * 95 / 69)
    assert not part.powered
    room.lux = 20.0
    assert counts() == round(10.0 * 1.2 * 95 / 69)   # no new measurement

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


class Bus(SimI2C):
    """SimI2C plus machine.I2C.readfrom, which the drivers do not use."""

    def readfrom(self, addr, nbytes):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf)
        return bytes(buf)


class SimSI(Bus):
    """The bus with one-line helpers for the SCD41 sequences (3.3)."""

    def __init__(self, part):
        Bus.__init__(self, [part])
        self.addr = part.address

    def cmd(self, code):
        self.writeto(self.addr, bytes((code >> 8, code & 0xFF)))

    def word(self, clock, code):
        self.cmd(code)
        clock.sleep_ms(1)
        return checked_word(self.readfrom(self.addr, 3), 0)


def test_routes_by_address_to_present_parts_only():
    clock = Clock()
    scd, sht, bh = SimSCD41(Room(), clock), SimSHT4x(Room()), SimBH1750(Room(), address=0x5C)
    bus = Bus([bh, sht, scd])
    assert (scd.address, sht.address, bh.address) == (0x62, 0x44, 0x5C)
    bus.writeto(0x5C, b"\x01")
    assert bh.powered
    bus.writeto(0x44, b"\x89")
    assert len(bus.readfrom(0x44, 6)) == 6
    sht.present = False
    assert raises(OSError, bus.writeto, 0x44, b"\x89").errno == 19
    assert raises(OSError, bus.writeto, 0x23, b"\x01").errno == 19


def test_unknown_address_and_absent_part_raise_enodev_on_every_call():
    part = SimBH1750(Room())
    bus = Bus([part])
    for addr in (0x10, 0x23):
        if addr == 0x23:
            part.present = False
        assert raises(OSError, bus.writeto, addr, b"\x01").errno == 19
        assert raises(OSError, bus.readfrom_into, addr, bytearray(2)).errno == 19
        assert raises(OSError, bus.readfrom, addr, 2).errno == 19


def test_zero_length_write_probes_the_address_only():
    part = SimBH1750(Room())
    bus = Bus([part])
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


def test_scd41_temperature_offset_default_set_and_get():
    clock, part, bus = _scd()
    assert bus.word(clock, 0x2318) == 1498       # 4 degC factory default
    bus.writeto(SCD, b"\x24\x1d\x07\xe6\x48")     # 5.4 degC (3.6.1 example)
    clock.sleep_ms(1)
    assert bus.word(clock, 0x2318) == 0x07E6 == part.temp_offset_word


def test_scd41_persist_and_reinit_are_acked_with_their_times_other_commands_nacked():
    # The sim only ACKs persist_settings (800 ms) and reinit (20 ms), idle only.
    clock, part, bus = _scd()
    bus.cmd(0x3615)
    clock.sleep_ms(799)
    assert raises(OSError, bus.cmd, 0x3646).errno == 19
    clock.sleep_ms(1)
    bus.cmd(0x3646)
    clock.sleep_ms(19)
    assert raises(OSError, bus.cmd, 0x3682).errno == 19
    clock.sleep_ms(1)
    bus.cmd(0x21B1)
    assert raises(OSError, bus.cmd, 0x3615).errno == 19   # not while measuring
    bus.cmd(0x3F86)
    clock.sleep_ms(500)
    # Not simulated: single shot (3.10), low-power periodic (3.8.1), self test (3.9.3).
    for code in (0x219D, 0x2196, 0x21AC, 0x3639):
        assert raises(OSError, bus.cmd, code).errno == 19, code


# --- SHT4x --------------------------------------------------------------------------------
def test_sht4x_answers_only_after_a_command_and_only_once():
    bus = Bus([SimSHT4x(Room(temp_c=25.0, rh_pct=69.0))])
    assert raises(OSError, bus.readfrom, 0x44, 6).errno == 19
    bus.writeto(0x44, b"\xfd")
    assert bus.readfrom(0x44, 6) == b"\x66\x66\x93\x99\x99\xbe"
    assert raises(OSError, bus.readfrom, 0x44, 6).errno == 19
    assert raises(OSError, bus.writeto, 0x44, b"\xfd\xfd").errno == 19
    assert raises(OSError, bus.writeto, 0x44, b"\x39").errno == 19   # heater: not simulated


def test_sht4x_medium_and_low_repeatability_times_and_soft_reset():
    clock = Clock()
    bus = Bus([SimSHT4x(Room(), clock)])
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
def test_bh1750_one_opcode_per_write_and_unsimulated_opcodes_nacked():
    bus = Bus([SimBH1750(Room())])
    assert raises(OSError, bus.writeto, 0x23, b"\x01\x10").errno == 19
    # Not simulated: other modes (H2, L, one-time) and MTreg changes.
    for op in (0x11, 0x13, 0x20, 0x21, 0x23, 0x42, 0x7F, 0x55):
        assert raises(OSError, bus.writeto, 0x23, bytes((op,))).errno == 19, op


def test_bh1750_continuous_h_counts_power_and_reset():
    room = Room(lux=1000.0)
    part = SimBH1750(room)
    bus = Bus([part])

    def counts():
        rx = bus.readfrom(0x23, 2)
        return rx[0] << 8 | rx[1]

    bus.writeto(0x23, b"\x01")
    assert part.powered and counts() == 0      # powered on, no measurement yet
    bus.writeto(0x23, b"\x10")
    assert counts() == 1200                    # lux * 1.2 at MTreg 69
    room.lux = 1e6
    assert counts() == 0xFFFF                  # saturates
    bus.writeto(0x23, b"\x00")                 # power down: the register keeps its value
    assert not part.powered and counts() == 0xFFFF
    bus.writeto(0x23, b"\x07")                 # reset is ignored while powered down
    assert counts() == 0xFFFF
    bus.writeto(0x23, b"\x01")
    bus.writeto(0x23, b"\x07")                 # reset clears the data register
    assert counts() == 0

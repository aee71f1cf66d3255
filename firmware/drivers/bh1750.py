"""ROHM BH1750FVI ambient light in continuous high-resolution mode (1 lx, MTreg 69).
Cited: BH1750FVI Technical Note Rev.B (2009), instruction set, timing and I2C format."""
import time

from micropython import const

# One opcode per write, each with its own STOP ("I2C Bus Access", write format).
_POWER_ON = const(0x01)        # wait for a measurement command
_CONT_H_RES = const(0x10)      # continuously H-resolution mode: 1 lx, every ~120 ms
# tHR: 120 ms typ, 180 ms max ("Electrical Characteristics"). Until the first
# conversion ends the data register still holds 0, so probe() waits it out once and
# read() never has to sleep.
_FIRST_CONVERSION_MS = const(180)


class BH1750:
    def __init__(self, i2c, address=0x23, sleep_ms=time.sleep_ms):
        # address 0x23 with ADDR low, 0x5C with ADDR high.
        self.i2c = i2c
        self.address = address
        self.sleep_ms = sleep_ms
        self._cmd = bytearray(1)
        self._rx = bytearray(2)

    def probe(self):
        """Power on and start continuous H-resolution mode. The part has no ID
        register: its ACKs are the proof it is there. OSError if nothing answers."""
        cmd = self._cmd
        try:
            for op in (_POWER_ON, _CONT_H_RES):
                cmd[0] = op
                self.i2c.writeto(self.address, cmd)
        except OSError as e:
            raise OSError(e.errno, "no BH1750 answering at 0x%02x" % self.address)
        self.sleep_ms(_FIRST_CONVERSION_MS)

    def read(self):
        """Illuminance in lux from the latest conversion. Raises OSError."""
        rx = self._rx
        self.i2c.readfrom_into(self.address, rx)  # 2 bytes, high byte first, no CRC
        # "Read format" example: 0x8390 -> 33680 / 1.2 = 28067 lx. The 1.2 is the
        # typical sensor-out/actual ratio; lux = counts / 1.2 * 69 / MTreg, MTreg = 69.
        return ((rx[0] << 8) | rx[1]) / 1.2

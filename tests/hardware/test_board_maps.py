"""Board pin maps (hardware/boards/*.json, read by firmware/hw/esp32.py): schema, one use
per GPIO, no GPIO the chip or its dev board reserves, and parts flags that match the buses."""
import json
from pathlib import Path

import pytest

BOARDS_DIR = Path(__file__).resolve().parents[2] / "hardware" / "boards"
BOARD_FILES = sorted(BOARDS_DIR.glob("*.json"))

# The maps hardware/README.md documents; a missing one is a deleted file, not a pass.
EXPECTED_BOARDS = {"s3-v1", "s3-lite", "esp32-devkit", "c3-mini"}

PARTS = ("co2", "th", "lux", "radar", "pir", "mic")
I2C_PARTS = ("co2", "th", "lux")  # SCD41, SHT40, BH1750 share the one I2C bus
REQUIRED_KEYS = {"board", "chip", "led", "led_active_low", "parts"}
# Present exactly when a part that needs them is fitted (see test_parts_match_bus_keys).
BUS_KEYS = {
    "i2c": ("id", "sda", "scl", "freq"),
    "radar_uart": ("id", "tx", "rx", "baud"),
    "i2s_mic": ("id", "sck", "ws", "sd"),
}
OPTIONAL_KEYS = set(BUS_KEYS) | {"pir"}

# Pins the ESP32 drives. Everything else in a map (UART RX, PIR out, I2S SD) is an input.
# I2C is open-drain but the pad still has to pull low, so SDA/SCL count as outputs.
OUTPUT_ROLES = {"i2c.sda", "i2c.scl", "radar_uart.tx", "i2s_mic.sck", "i2s_mic.ws", "led"}

# GPIO numbers that exist on each chip (ESP-IDF "GPIO & RTC GPIO" reference, per target).
GPIOS = {
    "esp32": set(range(0, 20)) | {21, 22, 23, 25, 26, 27} | set(range(32, 40)),
    "esp32s3": set(range(0, 22)) | set(range(26, 49)),
    "esp32c3": set(range(0, 22)),
}


def _reasons(*groups):
    out = {}
    for pins, why in groups:
        for pin in pins:
            out[pin] = why
    return out


# GPIOs a board map must never use, with the reason and where it is documented.
FORBIDDEN = {
    "esp32": _reasons(
        # ESP32 Series Datasheet, "Strapping Pins": GPIO0/2 boot mode, GPIO5 SDIO timing,
        # MTDI (GPIO12) flash voltage (a pulled-up GPIO12 browns out 3.3 V flash),
        # MTDO (GPIO15) boot log. ESP-IDF esp32 GPIO table marks the same five.
        ({0, 2, 5, 12, 15}, "strapping pin (ESP32 datasheet, Strapping Pins)"),
        # ESP-IDF esp32 GPIO reference: "GPIO6-11 are usually used for SPI flash".
        (range(6, 12), "SPI0/1 flash (ESP-IDF esp32 GPIO reference)"),
        # Same table: GPIO16/17 are SPI0/1 (PSRAM) on WROVER modules; left free so the
        # classic map also fits a DevKitC fitted with a WROVER.
        ({16, 17}, "PSRAM on WROVER modules (ESP-IDF esp32 GPIO reference)"),
    ),
    "esp32s3": _reasons(
        # ESP32-S3 Series Datasheet, "Strapping Pins": GPIO0 + GPIO46 boot mode,
        # GPIO45 VDD_SPI voltage, GPIO46 ROM log, GPIO3 JTAG signal source.
        ({0, 3, 45, 46}, "strapping pin (ESP32-S3 datasheet, Strapping Pins)"),
        # ESP-IDF esp32s3 GPIO reference: GPIO19/20 are USB D-/D+ (USB Serial/JTAG,
        # the DevKitC-1 "USB" port).
        ({19, 20}, "USB D-/D+ (ESP-IDF esp32s3 GPIO reference)"),
        # ESP-IDF esp32s3 GPIO reference: "GPIO26-32 are usually used for SPI flash
        # and PSRAM" (in-module flash + quad PSRAM of the N8R2).
        (range(26, 33), "SPI0/1 flash/PSRAM (ESP-IDF esp32s3 GPIO reference)"),
        # ESP32-S3-WROOM-1 datasheet pin notes / DevKitC-1 user guide: with octal flash or
        # octal PSRAM (N8R8, N16R8, WROOM-2) GPIO33-37 carry the extra data lines. Free on
        # an N8R2 (quad PSRAM), avoided so one map fits every DevKitC-1 variant.
        (range(33, 38), "octal flash/PSRAM data on R8/WROOM-2 modules (ESP32-S3-WROOM-1 datasheet)"),
        # ESP32-S3-DevKitC-1 user guide: the addressable RGB LED is on GPIO48 (board v1.0)
        # or GPIO38 (v1.1). It is a WS2812, not a plain LED, and it is already wired.
        ({38, 48}, "on-board RGB LED of DevKitC-1 v1.0/v1.1 (DevKitC-1 user guide)"),
    ),
    "esp32c3": _reasons(
        # ESP32-C3 Series Datasheet, "Strapping Pins" (also the ESP32-C3 book, Table 5.5):
        # GPIO2, GPIO8, GPIO9. On the SuperMini GPIO8 is the blue LED, GPIO9 the BOOT key.
        ({2, 8, 9}, "strapping pin (ESP32-C3 datasheet, Strapping Pins)"),
        # ESP-IDF esp32c3 GPIO reference: "GPIO12-17 are usually used for SPI flash";
        # GPIO11 is VDD_SPI (flash supply) unless an eFuse turns it into a GPIO (check).
        ({11}, "VDD_SPI flash supply by default (ESP32-C3 datasheet pin table)"),
        (range(12, 18), "SPI0/1 in-package flash (ESP-IDF esp32c3 GPIO reference)"),
        # ESP-IDF esp32c3 GPIO reference: GPIO18/19 are USB-JTAG, the SuperMini's only USB.
        ({18, 19}, "USB D-/D+ (ESP-IDF esp32c3 GPIO reference)"),
    ),
}

# ESP-IDF esp32 GPIO reference: "GPIO34-39 can only be set as input mode and do not have
# software pullup or pulldown functions". The S3 and C3 have no input-only GPIOs.
INPUT_ONLY = {"esp32": set(range(34, 40)), "esp32s3": set(), "esp32c3": set()}

# UART0 carries the ROM boot log and a MicroPython REPL (ESP32_GENERIC*/mpconfigboard.h:
# MICROPY_HW_ENABLE_UART_REPL). Anything driven onto the RX pin is typed into that REPL
# (a stray 0x03 is Ctrl-C), so RX is never used. TX may only drive the status LED, which
# then just flickers with the boot log (the C3 SuperMini has no other free pin for it).
CONSOLE = {"esp32": {"tx": 1, "rx": 3}, "esp32s3": {"tx": 43, "rx": 44},
           "esp32c3": {"tx": 21, "rx": 20}}

# Peripheral instance ids MicroPython accepts per chip: ESP32/S3 have I2C0-1, UART0-2,
# I2S0-1; the C3 has I2C0, UART0-1 and one I2S (I2S0). UART0 is the console (above).
PERIPHERAL_IDS = {
    "esp32": {"i2c": {0, 1}, "radar_uart": {1, 2}, "i2s_mic": {0, 1}},
    "esp32s3": {"i2c": {0, 1}, "radar_uart": {1, 2}, "i2s_mic": {0, 1}},
    "esp32c3": {"i2c": {0}, "radar_uart": {1}, "i2s_mic": {0}},
}

LD2410_BAUD = 256000  # HLK-LD2410 manual: UART 256000 8N1 (DOMAIN.md "Sensor facts")
I2C_FREQS = {100000, 400000}  # standard / fast mode; all three I2C parts support both


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def pin_roles(board: dict) -> list[tuple[str, int]]:
    """(role, gpio) for every pin the map assigns, e.g. ("i2c.sda", 8)."""
    roles = []
    for bus, keys in BUS_KEYS.items():
        if bus in board:
            roles += [(f"{bus}.{k}", board[bus][k]) for k in keys if k not in ("id", "freq", "baud")]
    for key in ("pir", "led"):
        if key in board:
            roles.append((key, board[key]))
    return roles


boards = pytest.mark.parametrize("path", BOARD_FILES, ids=lambda p: p.stem)


def test_the_documented_board_maps_exist():
    assert EXPECTED_BOARDS <= {p.stem for p in BOARD_FILES}, f"missing in {BOARDS_DIR}"


@boards
def test_map_parses_and_has_the_schema_keys(path):
    board = load(path)
    keys = set(board)
    assert REQUIRED_KEYS <= keys, f"missing {sorted(REQUIRED_KEYS - keys)}"
    assert keys <= REQUIRED_KEYS | OPTIONAL_KEYS, f"unknown keys {sorted(keys - REQUIRED_KEYS - OPTIONAL_KEYS)}"
    # firmware/hw/esp32.py opens boards/<cfg["board"]>.json, so the name is the file name.
    assert board["board"] == path.stem
    assert board["chip"] in GPIOS
    assert isinstance(board["led_active_low"], bool)
    assert set(board["parts"]) == set(PARTS)
    assert all(isinstance(v, bool) for v in board["parts"].values())
    for bus, sub in BUS_KEYS.items():
        if bus in board:
            assert set(board[bus]) == set(sub), f"{bus} keys"
            assert all(type(v) is int for v in board[bus].values()), f"{bus} values must be ints"
    for _, gpio in pin_roles(board):
        assert type(gpio) is int
    if "radar_uart" in board:
        assert board["radar_uart"]["baud"] == LD2410_BAUD
    if "i2c" in board:
        assert board["i2c"]["freq"] in I2C_FREQS


@boards
def test_no_gpio_is_used_twice(path):
    roles = pin_roles(load(path))
    seen: dict[int, str] = {}
    for role, gpio in roles:
        assert gpio not in seen, f"GPIO{gpio} is both {seen[gpio]} and {role}"
        seen[gpio] = role


@boards
def test_no_gpio_the_chip_or_board_reserves(path):
    board = load(path)
    chip = board["chip"]
    for role, gpio in pin_roles(board):
        assert gpio in GPIOS[chip], f"{role}: {chip} has no GPIO{gpio}"
        assert gpio not in FORBIDDEN[chip], f"{role}: GPIO{gpio} is {FORBIDDEN[chip][gpio]}"


@boards
def test_outputs_are_not_on_input_only_pins(path):
    board = load(path)
    for role, gpio in pin_roles(board):
        if role in OUTPUT_ROLES:
            assert gpio not in INPUT_ONLY[board["chip"]], f"{role}: GPIO{gpio} is input-only"


@boards
def test_console_uart_pins_are_left_to_the_console(path):
    board = load(path)
    console = CONSOLE[board["chip"]]
    for role, gpio in pin_roles(board):
        assert gpio != console["rx"], f"{role}: GPIO{gpio} is the UART0 REPL input"
        if gpio == console["tx"]:
            assert role == "led", f"{role}: GPIO{gpio} is UART0 TX (boot log)"


@boards
def test_peripheral_ids_exist_on_the_chip(path):
    board = load(path)
    for bus, ids in PERIPHERAL_IDS[board["chip"]].items():
        if bus in board:
            assert board[bus]["id"] in ids, f"{bus} id {board[bus]['id']} on {board['chip']}"


@boards
def test_parts_match_bus_keys(path):
    board = load(path)
    parts = board["parts"]
    # A fitted part needs its bus; a bus key with nothing on it is a stale map.
    for key, fitted in (("i2c", any(parts[p] for p in I2C_PARTS)), ("radar_uart", parts["radar"]),
                        ("i2s_mic", parts["mic"]), ("pir", parts["pir"])):
        assert (key in board) == fitted, f'"{key}" key present={key in board} but part fitted={fitted}'

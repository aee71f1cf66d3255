"""Sensirion CRC-8 (firmware/crc8.py) against the datasheet examples and a bitwise
reference, plus the word framing helpers the SCD4x/SHT4x drivers share."""
import micropython

from crc8 import CRCError, checked_word, crc8, put_word


def _bitwise(data):
    # The datasheet's reference algorithm (SCD4x v1.3, 3.11), one bit at a time.
    c = 0xFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ 0x31) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def test_crc_of_beef_is_0x92_the_datasheet_example():
    assert crc8(b"\xbe\xef") == 0x92


def test_crc_of_scd4x_datasheet_words():
    # read_measurement 0x01f4/0x6667/0x5eb9 (3.5.2), serial 0xf896 0x31 0x9f07 0xc2
    # 0x3bbe 0x89 (3.9.2), set_ambient_pressure 0x03db 0x42 (3.6.5).
    cases = ((b"\x01\xf4", 0x33), (b"\x66\x67", 0xA2), (b"\x5e\xb9", 0x3C),
             (b"\xf8\x96", 0x31), (b"\x9f\x07", 0xC2), (b"\x3b\xbe", 0x89),
             (b"\x03\xdb", 0x42))
    for data, expected in cases:
        assert crc8(data) == expected, (data, crc8(data), expected)


def test_table_matches_bitwise_reference_for_every_byte_and_many_words():
    for b in range(256):
        assert crc8(bytes((b,))) == _bitwise((b,)), b
    for hi in range(0, 256, 7):
        for lo in range(0, 256, 13):
            assert crc8(bytes((hi, lo))) == _bitwise((hi, lo)), (hi, lo)


def test_start_end_cover_only_that_slice():
    buf = b"\x00\x11\xbe\xef\x22"
    assert crc8(buf, 2, 4) == 0x92
    assert crc8(buf, 2) == _bitwise(b"\xbe\xef\x22")
    assert crc8(memoryview(buf)[2:4]) == 0x92
    assert crc8(b"") == 0xFF  # init value, nothing folded in


def test_checked_word_returns_the_word_or_raises_crc_error():
    buf = b"\x00\x01\xf4\x33"
    assert checked_word(buf, 1) == 500
    try:
        checked_word(b"\x01\xf4\x34", 0)
    except CRCError as e:
        assert isinstance(e, ValueError)
    else:
        raise AssertionError("bad CRC accepted")


def test_put_word_writes_big_endian_word_and_its_crc():
    buf = bytearray(5)
    put_word(buf, 2, 0x03DB)
    assert bytes(buf) == b"\x00\x00\x03\xdb\x42"


def test_crc_and_checked_word_do_not_allocate():
    # The drivers call these on every read; a locked heap turns any allocation into
    # a MemoryError.
    buf = bytearray(b"\x66\x67\xa2")
    view = memoryview(buf)[:3]
    out = [0, 0, 0]
    micropython.heap_lock()
    try:
        out[0] = crc8(buf, 0, 2)
        out[1] = crc8(view, 0, 2)
        out[2] = checked_word(view, 0)
    finally:
        micropython.heap_unlock()
    assert out == [0xA2, 0xA2, 0x6667], out

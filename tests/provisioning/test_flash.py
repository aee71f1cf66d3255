"""`flash` against the ROM loader simulator through real esptool (socket:// URL): chip
detection, MAC, erase, compressed write at the chip's offset, MD5 verify; a link cut
mid-write is retried or reported, and a rerun recovers; an image already there is kept."""
from __future__ import annotations

import pytest

from provisioning import firmware_cache
from provisioning.errors import ProvisionError
from provisioning.flash import flash
from tests.provisioning import rom_sim
from tests.provisioning.images import esp_image
from tests.provisioning.rom_sim import RomSimulator


@pytest.fixture
def make_sim():
    sims = []

    def factory(chip="esp32", mac="24:0a:c4:12:34:56"):
        sims.append(RomSimulator(chip, mac).start())
        return sims[-1]

    yield factory
    for s in sims:
        s.stop()


@pytest.mark.parametrize("chip,offset", [("esp32", 0x1000), ("esp32s3", 0x0), ("esp32c3", 0x0)])
def test_flash_writes_the_image_at_the_chips_offset_and_reads_the_mac(make_sim, chip, offset):
    sim = make_sim(chip, mac="84:f7:03:aa:bb:0c")
    sim.flash[0x300000:0x300010] = b"old filesystem!!"      # erased by the chip erase
    image = esp_image(chip)
    result = flash(sim.url, lambda c: image if c == chip else b"")
    assert (result.chip, result.offset, result.size) == (chip, offset, len(image))
    assert result.mac == "84:f7:03:aa:bb:0c" and result.device_id == "cf-84f703aabb0c"
    assert bytes(sim.flash[offset:offset + len(image)]) == image
    assert sim.flash[0x300000:0x300010] == b"\xff" * 16
    assert offset == 0 or sim.flash[:offset] == b"\xff" * offset
    ops = set(sim.commands)
    assert {rom_sim.ERASE_FLASH, rom_sim.FLASH_DEFL_BEGIN, rom_sim.FLASH_DEFL_DATA, rom_sim.SPI_FLASH_MD5} <= ops
    assert rom_sim.FLASH_DATA not in ops        # compressed writes only
    assert not result.already_flashed and result.attempts == []


def test_rerun_with_the_same_image_writes_nothing(make_sim):
    sim = make_sim()
    image = esp_image()
    flash(sim.url, lambda c: image)
    sim.commands.clear()
    again = flash(sim.url, lambda c: image)
    assert again.already_flashed
    assert rom_sim.FLASH_DEFL_DATA not in sim.commands and rom_sim.ERASE_FLASH not in sim.commands


def test_a_link_cut_mid_write_is_retried_at_115200_from_a_fresh_connection(make_sim):
    sim = make_sim()
    image = esp_image(size=400_000)
    sim.inject_link_drop(after_blocks=2, times=1)
    result = flash(sim.url, lambda c: image)
    assert result.attempts and result.attempts[0].startswith("460800 baud")
    assert result.baud == 115200
    assert bytes(sim.flash[0x1000:0x1000 + len(image)]) == image


def test_a_failed_flash_is_reported_plainly_and_a_rerun_recovers(make_sim):
    sim = make_sim()
    image = esp_image(size=400_000)
    sim.inject_link_drop(after_blocks=1, times=1000)      # a bad cable: every attempt is cut
    with pytest.raises(ProvisionError) as e:
        flash(sim.url, lambda c: image)
    message = str(e.value)
    assert "\n" not in message and "460800 baud" in message and "115200 baud" in message and "rerun" in message
    assert bytes(sim.flash[0x1000:0x1000 + len(image)]) != image       # half written
    sim.inject_link_drop(after_blocks=1, times=0)                       # cable replaced
    result = flash(sim.url, lambda c: image)
    assert not result.already_flashed and bytes(sim.flash[0x1000:0x1000 + len(image)]) == image


def test_a_chip_other_than_the_one_asked_for_is_refused(make_sim):
    sim = make_sim("esp32")
    with pytest.raises(ProvisionError, match="is an ESP32, not esp32s3"):
        flash(sim.url, lambda c: esp_image(c), chip="esp32s3")
    assert rom_sim.FLASH_DEFL_DATA not in sim.commands


def test_firmware_cache_checks_the_checksum_and_knows_the_chip_from_the_header(tmp_path):
    root = tmp_path / "cache"
    f = tmp_path / "ESP32_GENERIC_S3-20251209-v1.27.0.bin"
    f.write_bytes(esp_image("esp32s3"))
    with pytest.raises(ProvisionError, match="not the published"):
        firmware_cache.add(f, sha256="0" * 64, root=root)
    import hashlib
    entry = firmware_cache.add(f, sha256=hashlib.sha256(f.read_bytes()).hexdigest(), root=root)
    assert (entry.chip, entry.version) == ("esp32s3", "1.27.0")
    newer = tmp_path / "ESP32_GENERIC_S3-20260301-v1.28.0.bin"
    newer.write_bytes(esp_image("esp32s3", seed=2))
    firmware_cache.add(newer, root=root)
    found, data = firmware_cache.find("esp32s3", root=root)
    assert found.version == "1.28.0" and data == newer.read_bytes()
    with pytest.raises(ProvisionError, match="no MicroPython image for esp32c3"):
        firmware_cache.find("esp32c3", root=root)
    with pytest.raises(ProvisionError, match="built for esp32s3, not esp32"):
        firmware_cache.add(f, chip="esp32", root=root)


def test_cli_flash_takes_the_image_into_the_cache_and_prints_one_result_line(make_sim, tmp_path, monkeypatch, capsys):
    from provisioning.cli import main
    monkeypatch.setenv("CAMPUS_PROVISION_HOME", str(tmp_path / "home"))
    sim = make_sim("esp32s3", mac="84:f7:03:00:00:01")
    image = tmp_path / "ESP32_GENERIC_S3-20251209-v1.27.0.bin"
    image.write_bytes(esp_image("esp32s3"))
    assert main(["flash", "--port", sim.url, "--firmware", str(image)]) == 0
    assert main(["flash", "--port", sim.url]) == 0           # from the cache; already there
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("esp32s3 84:f7:03:00:00:01 (cf-84f703000001): ") and "verified" in out[0]
    assert "image already in flash, nothing written" in out[1]
    assert bytes(sim.flash[:len(image.read_bytes())]) == image.read_bytes()
    assert main(["firmware", "list"]) == 0
    assert "esp32s3  1.27.0" in capsys.readouterr().out


def test_parallel_flashes_keep_esptool_output_in_their_own_logs_and_the_screen_intact(make_sim, capsys):
    """A batch flashes several boards at once: esptool's chatter must not reach the
    screen, and the screen must not end up redirected into one board's log."""
    import sys
    import threading
    before = sys.stdout, sys.stderr
    sims = [make_sim("esp32", mac=f"24:0a:c4:00:01:{i:02x}") for i in range(3)]
    image = esp_image(size=100_000)
    sims[1].inject_link_drop(after_blocks=1, times=1000)       # one fails: its error names both attempts
    results: dict[int, object] = {}

    def run(i: int) -> None:
        try:
            results[i] = flash(sims[i].url, lambda c: image)
        except ProvisionError as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    print("technician's progress line")
    for t in threads:
        t.join()
    print("after the batch")
    assert (sys.stdout, sys.stderr) == before
    out, err = capsys.readouterr()
    assert out == "technician's progress line\nafter the batch\n" and err == ""
    assert isinstance(results[1], ProvisionError) and "115200 baud" in str(results[1])
    for i in (0, 2):
        assert bytes(sims[i].flash[0x1000:0x1000 + len(image)]) == image

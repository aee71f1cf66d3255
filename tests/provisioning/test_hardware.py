"""The same flows on a real board (off by default):
pytest -m hardware tests/provisioning --port /dev/ttyUSB0 --chip esp32s3 --firmware ESP32_GENERIC_S3-...bin
Flash erases the board. Run flash first, then deploy (the order of this file)."""
from __future__ import annotations

from pathlib import Path

import pytest

from provisioning import firmware_cache
from provisioning.board import Board
from provisioning.deploy import deploy
from provisioning.flash import IMAGE_OFFSETS, flash
from provisioning.install import _open_board

pytestmark = pytest.mark.hardware


def test_flash_on_a_real_board_then_a_rerun_writes_nothing(request, board_port, tmp_path):
    image_file = request.config.getoption("--firmware")
    if not image_file:
        pytest.fail("give --firmware FILE (a MicroPython image for the board's chip)", pytrace=False)
    entry = firmware_cache.add(Path(image_file), root=tmp_path)
    image = firmware_cache.find(entry.chip, root=tmp_path)[1]
    first = flash(board_port, lambda chip: image, chip=request.config.getoption("--chip"), force=True)
    assert first.chip == entry.chip and first.offset == IMAGE_OFFSETS[entry.chip]
    assert first.device_id.startswith("cf-") and not first.already_flashed
    again = flash(board_port, lambda chip: image, chip=first.chip)
    assert again.already_flashed and again.mac == first.mac


def test_deploy_on_a_real_board_then_a_rerun_uploads_nothing(board_port):
    with _open_board(board_port, wait_s=20) as board:
        info = board.info()
        assert info.mac and info.platform.startswith("esp32")
        first = deploy(board)
        again = deploy(board)
    assert first.uploaded or first.unchanged
    assert not again.changed and again.bytes_uploaded == 0
    with Board(board_port) as board:
        assert board.file_hashes(["main.py"])["main.py"] is not None

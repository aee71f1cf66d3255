"""`campus-provision`: the technician's CLI. Thin: parse, call the provisioning library,
print one line per step. Errors are one line: what failed and what to do."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

try:   # typer >= 0.25 carries its own copy of click; older typer uses click itself
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc  # type: ignore[no-redef]

from provisioning import firmware_cache
from provisioning.batch import batch as run_batch, read_batch, summary_table
from provisioning.board import Board
from provisioning.deploy import REPO_FIRMWARE_DIR, deploy as deploy_files
from provisioning.errors import ProvisionError
from provisioning.flash import FAST_BAUD, flash as flash_board
from provisioning.install import Job, Options, describe_window, install as run_install
from provisioning.label import Label, read_labels, write as write_label, write_sheet
from provisioning.register import parse_room_qr, register as register_node
from provisioning.server_api import FleetApi
from provisioning.verify import verify as verify_node

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Install CampusFleet sensor nodes: flash, deploy, register, verify, label.")
firmware_app = typer.Typer(no_args_is_help=True, help="The local cache of MicroPython images.")
app.add_typer(firmware_app, name="firmware")

Port = Annotated[str, typer.Option("--port", "-p", help="serial port, e.g. /dev/ttyUSB0 or COM3")]


class ChipName(str, Enum):
    auto = "auto"
    esp32 = "esp32"
    esp32s3 = "esp32s3"
    esp32c3 = "esp32c3"


Chip = Annotated[ChipName, typer.Option(help="the board's chip; auto detects it")]
Server = Annotated[str, typer.Option(envvar="CAMPUS_PROVISION_SERVER", help="fleet server URL")]
Token = Annotated[Optional[str], typer.Option(envvar="CAMPUS_PROVISION_TOKEN",
                                              help="technician token (sent as a bearer token)")]
WifiSsid = Annotated[Optional[str], typer.Option(envvar="CAMPUS_WIFI_SSID", help="school IoT Wi-Fi name")]
WifiPassword = Annotated[Optional[str], typer.Option(envvar="CAMPUS_WIFI_PASSWORD", help="its WPA2 passphrase")]
Extra = Annotated[Optional[Path], typer.Option(help="JSON file merged into config.json (e.g. presence hold times)")]
FirmwareDir = Annotated[Path, typer.Option(help="the node app's source folder")]
LabelDir = Annotated[Path, typer.Option(help="where label files go")]


def _say(text: str) -> None:
    typer.echo(text)


def _wifi(ssid: str | None, password: str | None) -> dict | None:
    if ssid is None and password is None:
        return None
    if ssid is None:
        raise ProvisionError("--wifi-password needs --wifi-ssid")
    return {"ssid": ssid, "password": password or ""}


def _extra(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ProvisionError(f"--extra {path}: {e}") from None
    if not isinstance(data, dict):
        raise ProvisionError(f"--extra {path}: must hold a JSON object")
    return data


@app.command()
def flash(port: Port, chip: Chip = ChipName.auto,
          firmware: Annotated[Optional[Path], typer.Option(help="image file (added to the cache first)")] = None,
          baud: Annotated[int, typer.Option(min=9600, max=2000000)] = FAST_BAUD,
          force: Annotated[bool, typer.Option(help="write even if the image is already in flash")] = False) -> None:
    """Erase the board and write MicroPython from the firmware cache, then verify it."""
    pinned = firmware_cache.add(firmware).sha256 if firmware else None
    r = flash_board(port, lambda c: firmware_cache.find(c, sha256=pinned)[1], chip=chip.value, baud=baud, force=force)
    for a in r.attempts:
        _say(f"retried after: {a}")
    what = "image already in flash, nothing written" if r.already_flashed else f"{r.size} B at {r.offset:#x}, verified"
    _say(f"{r.chip} {r.mac} ({r.device_id}): {what} in {r.seconds:.1f} s at {r.baud} baud")


@firmware_app.command("add")
def firmware_add(file: Annotated[Path, typer.Argument(help="MicroPython .bin from micropython.org")],
                 sha256: Annotated[Optional[str], typer.Option(help="published SHA-256 to check")] = None,
                 chip: Annotated[Optional[str], typer.Option(help="if the image header does not say")] = None,
                 version: Annotated[Optional[str], typer.Option(help="if the file name does not say")] = None) -> None:
    """Add an image to the cache (checked by SHA-256)."""
    e = firmware_cache.add(file, chip=chip, version=version, sha256=sha256)
    _say(f"added {e.name}: {e.chip} MicroPython {e.version}, {e.size} B, sha256 {e.sha256}")


@firmware_app.command("list")
def firmware_list() -> None:
    """The cached images, per chip."""
    images = firmware_cache.list_images()
    if not images:
        _say(f"no images in {firmware_cache.cache_dir()}")
    for e in images:
        _say(f"{e.chip:8} {e.version:12} {e.size:>9} B  {e.sha256[:16]}  {e.name}")


@app.command()
def deploy(port: Port, firmware_dir: FirmwareDir = REPO_FIRMWARE_DIR) -> None:
    """Compile the node app (mpy-cross) and upload what changed."""
    with Board(port) as board:
        d = deploy_files(board, firmware_dir)
    _say(f"{len(d.uploaded)} files uploaded ({d.bytes_uploaded} B), {len(d.unchanged)} unchanged, "
         f"{len(d.removed)} stale removed")


@app.command()
def register(port: Port, server: Server, token: Token = None,
             school: Annotated[Optional[str], typer.Option(help="school code")] = None,
             room: Annotated[Optional[str], typer.Option(help="room code")] = None,
             room_qr: Annotated[Optional[str], typer.Option(help="text of the scanned room QR code")] = None,
             wifi_ssid: WifiSsid = None, wifi_password: WifiPassword = None, extra: Extra = None,
             hardware: Annotated[Optional[str], typer.Option(help="board name, e.g. s3-v1")] = None) -> None:
    """Register the node to a room and write its MQTT settings into config.json."""
    if room_qr:
        school, room = parse_room_qr(room_qr)     # a bad scan fails before the board is touched
        room_qr = None
    if not room or not school:
        raise ProvisionError("give --school and --room, or --room-qr")
    with Board(port) as board:
        r = register_node(board, FleetApi(server, token), school=school, room=room, room_qr=room_qr,
                          wifi=_wifi(wifi_ssid, wifi_password), extra=_extra(extra), hardware=hardware)
    state = "already registered, nothing changed" if r.nothing_changed else "config.json written"
    _say(f"{r.device_id} -> {r.school['code']} {r.school['name']} / {r.room['code']} {r.room['name']}: {state}")


@app.command()
def verify(port: Port, server: Server, token: Token = None,
           timeout: Annotated[float, typer.Option(min=10, help="seconds to wait for the node")] = 180) -> None:
    """Reset the node and wait until the server shows it online with a fresh window."""
    with Board(port) as board:
        cfg = board.read_config() or {}
        if "device_id" not in cfg:
            raise ProvisionError("the node has no config.json: run `register` first")
        v = verify_node(board, FleetApi(server, token), cfg["device_id"], timeout_s=timeout)
    _say(f"{v.device_id} online after {v.seconds:.1f} s; first window: {describe_window(v.window)}")


@app.command()
def label(device_id: Annotated[Optional[str], typer.Option(help="cf-<12 hex>")] = None,
          school: Annotated[Optional[str], typer.Option(help="school code and name")] = None,
          room: Annotated[Optional[str], typer.Option(help="room code and name")] = None,
          out: LabelDir = Path("labels"),
          from_csv: Annotated[Optional[Path], typer.Option(
              help="CSV of device_id,school,room rows (a batch's log works too) instead of one label")] = None,
          sheet: Annotated[Optional[Path], typer.Option(
              help="also write all these labels on an A4 sheet PDF (3 x 8 labels per page)")] = None) -> None:
    """Write node labels (SVG and PNG) with a QR code of the device id; --sheet: an A4 PDF."""
    from provisioning.nodeconfig import DEVICE_ID
    if from_csv is not None:
        if device_id or school or room:
            raise ProvisionError("give --from-csv or --device-id/--school/--room, not both")
        labels = read_labels(from_csv)
    else:
        if not (device_id and school and room):
            raise ProvisionError("give --device-id, --school and --room (or --from-csv FILE)")
        if not DEVICE_ID.match(device_id):
            raise ProvisionError(f"--device-id {device_id!r} is not cf-<12 lowercase hex digits>")
        labels = [Label(device_id, school, room)]
    for lab in labels:
        for f in write_label(lab, out):
            _say(str(f))
    if sheet is not None:
        write_sheet(labels, sheet, title=f"CampusFleet ({len(labels)} labels)")
        _say(f"{sheet}: {len(labels)} labels")


def _options(server, token, wifi_ssid, wifi_password, extra, firmware_dir, chip, no_flash, labels, hardware):
    return Options(api=FleetApi(server, token), firmware_dir=firmware_dir, wifi=_wifi(wifi_ssid, wifi_password),
                   extra=_extra(extra), chip=chip.value, do_flash=not no_flash, label_dir=labels, hardware=hardware)


def _progress(port: str, step: str, message: str) -> None:
    _say(f"{port} [{step}] {message}")


@app.command()
def install(port: Port, server: Server,
            school: Annotated[str, typer.Option(help="school code")],
            room: Annotated[str, typer.Option(help="room code")],
            token: Token = None, wifi_ssid: WifiSsid = None, wifi_password: WifiPassword = None,
            extra: Extra = None, firmware_dir: FirmwareDir = REPO_FIRMWARE_DIR, chip: Chip = ChipName.auto,
            no_flash: Annotated[bool, typer.Option(help="MicroPython is already on the board")] = False,
            labels: LabelDir = Path("labels"),
            hardware: Annotated[Optional[str], typer.Option(help="board name, e.g. s3-v1")] = None) -> None:
    """flash + deploy + register + verify + label, one line per step."""
    o = run_install(Job(port, school, room),
                    _options(server, token, wifi_ssid, wifi_password, extra, firmware_dir, chip, no_flash,
                             labels, hardware), _progress)
    _say(f"{o.device_id or port}: {o.summary} ({o.seconds:.0f} s)")
    if not o.ok:
        raise typer.Exit(1)


@app.command()
def batch(file: Annotated[Path, typer.Argument(help="CSV of port,school,room rows")], server: Server,
          token: Token = None, wifi_ssid: WifiSsid = None, wifi_password: WifiPassword = None,
          extra: Extra = None, firmware_dir: FirmwareDir = REPO_FIRMWARE_DIR, chip: Chip = ChipName.auto,
          no_flash: bool = False, labels: LabelDir = Path("labels"),
          log: Annotated[Path, typer.Option(help="CSV log, appended; a rerun resumes from it")] = Path("provision-log.csv"),
          workers: Annotated[int, typer.Option(min=1, max=16)] = 4,
          redo: Annotated[bool, typer.Option(help="install every row again, even those the log says are done")] = False,
          sheet: Annotated[Optional[Path], typer.Option(help="label sheet PDF (default labels/sheet-<time>.pdf)")] = None,
          hardware: Optional[str] = None) -> None:
    """install for every row, several ports at once; a summary table, a CSV log and a label sheet."""
    jobs = read_batch(file)
    outcomes = run_batch(jobs, _options(server, token, wifi_ssid, wifi_password, extra, firmware_dir, chip,
                                        no_flash, labels, hardware), log_path=log, workers=workers,
                         progress=_progress, redo=redo, sheet_path=sheet)
    for line in summary_table(outcomes):
        _say(line)
    _say(f"log: {log}")
    if any(not o.ok for o in outcomes):
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error is one line on stderr (usage errors exit 2, failures 1)."""
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of raising it.
        code = app(args=argv, prog_name="campus-provision", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as e:
        typer.echo(e.ctx.get_help() if e.ctx else "campus-provision --help", err=True)
        return 2
    except click_exc.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "campus-provision"
        typer.echo(f"{cmd}: error: {e.format_message()} (see {cmd} --help)", err=True)
        return 2
    except typer.Abort:
        typer.echo("campus-provision: aborted", err=True)
        return 130
    except ProvisionError as e:
        typer.echo(f"campus-provision: {e}", err=True)
        return 1
    except typer.Exit as e:
        return e.exit_code
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())

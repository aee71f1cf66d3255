"""`campusfleet firmware`: build, key, sign and upload OTA releases (docs/ota.md). Thin
wrappers over fleet_server.firmware_release; the private key never leaves the machine
that signs (the server only gets the signed bundle)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fleet_server.campaign_cli import campaign_app

firmware_app = typer.Typer(help="Firmware releases for over-the-air updates (docs/ota.md).",
                           no_args_is_help=True)
firmware_app.add_typer(campaign_app, name="campaign")


def _passphrase() -> bytes | None:
    text = os.environ.get("CAMPUSFLEET_RELEASE_KEY_PASSPHRASE")
    return text.encode() if text else None


@firmware_app.command("build")
def build(version: Annotated[str, typer.Argument(help="release version, e.g. 0.3.0 (stamped into node.py)")],
          out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to create")] = Path("dist/firmware"),
          source: Annotated[Path, typer.Option(help="firmware source folder")] = Path("firmware"),
          board: Annotated[list[str] | None, typer.Option(
              "--board", help="board, chip or platform the release runs on (repeat); default esp32, "
                              "esp32s3, esp32c3, sim")] = None,
          min_micropython: Annotated[str, typer.Option(help="oldest MicroPython that may run it")] = "1.23.0",
          mpy_cross: Annotated[str | None, typer.Option(help="the mpy-cross of the target MicroPython")] = None,
          ) -> None:
    """Compile the firmware with mpy-cross into a bundle: .mpy files + manifest.json."""
    from fleet_server.firmware_release.build import DEFAULT_BOARDS, ReleaseError, build_release

    dest = out / version
    try:
        build_release(version, dest, source_dir=source, boards=tuple(board or DEFAULT_BOARDS),
                      min_micropython=min_micropython, mpy_cross=mpy_cross)
    except ReleaseError as e:
        typer.echo(f"campusfleet firmware build: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"built {version} into {dest}; sign it with: campusfleet firmware sign {dest} --key KEY.pem")


@firmware_app.command("keygen")
def keygen(key: Annotated[Path, typer.Argument(help="private key file to create (PEM, mode 0600)")]) -> None:
    """Create the Ed25519 release key. Keep the file offline; give the printed public key
    to provisioning (ota_pubkey) and the server (CAMPUSFLEET_FIRMWARE_TRUSTED_KEYS). Set
    CAMPUSFLEET_RELEASE_KEY_PASSPHRASE to encrypt it."""
    from fleet_server.firmware_release.keys import keygen as make

    try:
        public = make(key, _passphrase())
    except FileExistsError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    typer.echo(public)


@firmware_app.command("sign")
def sign(bundle: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="bundle folder")],
         key: Annotated[Path, typer.Option("--key", exists=True, dir_okay=False, help="private key (PEM)")]) -> None:
    """Check the bundle's files against its manifest and sign the manifest (manifest.sig)."""
    from fleet_server.firmware_release.build import ReleaseError
    from fleet_server.firmware_release.keys import load_private, public_hex, sign_bundle

    try:
        private = load_private(key, _passphrase())
        sign_bundle(bundle, private)
    except (ReleaseError, ValueError, TypeError) as e:
        typer.echo(f"campusfleet firmware sign: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"signed {bundle} with {public_hex(private)}")


@firmware_app.command("upload")
def upload(bundle: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="signed bundle folder")],
           server: Annotated[str, typer.Option(help="fleet server base URL")] = "http://127.0.0.1:8000",
           token: Annotated[str | None, typer.Option(
               envvar="CAMPUSFLEET_TOKEN", help="an operator's API token (scope firmware:upload; "
                                                "better from the environment than as a flag)")] = None) -> None:
    """Send a signed bundle to the server, which checks the signature and the files."""
    import httpx

    from fleet_server.firmware_release.build import ReleaseError, pack, read_bundle

    try:
        _, manifest, sig = read_bundle(bundle)
    except (ReleaseError, OSError) as e:
        typer.echo(f"campusfleet firmware upload: {e}", err=True)
        raise typer.Exit(1) from None
    if not sig:
        typer.echo("campusfleet firmware upload: the bundle is not signed (campusfleet firmware sign)", err=True)
        raise typer.Exit(1)
    r = httpx.post(f"{server.rstrip('/')}/api/v1/firmware/releases", content=pack(bundle),
                   headers={"Content-Type": "application/gzip",
                            **({"Authorization": f"Bearer {token}"} if token else {})}, timeout=60)
    if r.status_code != 201:
        typer.echo(f"campusfleet firmware upload: HTTP {r.status_code}: {r.text}", err=True)
        raise typer.Exit(1)
    typer.echo(f"uploaded {manifest['version']} ({r.json()['files']} files)")

"""`campusfleet certs ...`: a school's own CA and server certificates for MQTT over TLS
and HTTPS (fleet_server/security/certs.py, docs/security.md "TLS")."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

certs_app = typer.Typer(help="TLS certificates: a school's own CA for MQTT over TLS (8883) and HTTPS.",
                        no_args_is_help=True)

DirOpt = Annotated[Path, typer.Option("--dir", help="folder for ca.pem, ca.key, server.pem, server.key")]
HostsOpt = Annotated[str | None, typer.Option(
    "--hosts", help="comma-separated DNS names and IP addresses (IPv4, IPv6) the server is reached by "
                    "(default localhost,127.0.0.1,::1)")]
ForceOpt = Annotated[bool, typer.Option("--force", help="replace existing files")]


def _report(issued) -> None:
    typer.echo(f"server certificate {issued.server_cert} (key {issued.server_key}, mode 0600) "
               f"for {', '.join(issued.hosts)}, valid until {issued.not_after:%Y-%m-%d}")
    typer.echo(f"nodes and clients trust {issued.ca_cert} (config.json: \"mqtt\": {{\"tls\": true, "
               f"\"port\": 8883, \"ca\": \"ca.pem\"}}); keep {issued.ca_key} offline once servers are issued")


@certs_app.command("init")
def certs_init(directory: DirOpt = Path("var/certs"),
               school: Annotated[str, typer.Option("--school", help="the school's name, written into the CA")] = "",
               hosts: HostsOpt = None, force: ForceOpt = False) -> None:
    """Make a new CA for the school and a server certificate signed by it."""
    from fleet_server.security.certs import CertError, init, parse_hosts

    if not school.strip():
        raise typer.BadParameter("give the school's name: --school NAME", param_hint="--school")
    try:
        issued = init(directory, school, parse_hosts(hosts) or None, force=force)
    except CertError as e:
        typer.echo(f"campusfleet certs init: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"CA {issued.ca_cert} (key {issued.ca_key}, mode 0600) for {school.strip()}")
    _report(issued)


@certs_app.command("server")
def certs_server(directory: DirOpt = Path("var/certs"),
                 host: Annotated[list[str] | None, typer.Option(
                     "--host", help="a DNS name or IP address of the server; repeat, or comma-separate")] = None,
                 name: Annotated[str, typer.Option("--name", help="file name stem: NAME.pem + NAME.key")] = "server",
                 force: ForceOpt = False) -> None:
    """Issue another server certificate (a new host, or a renewal) from the CA in --dir."""
    from fleet_server.security.certs import CertError, issue_server, parse_hosts

    hosts = parse_hosts(",".join(host or []))
    if not hosts:
        raise typer.BadParameter("give at least one --host", param_hint="--host")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise typer.BadParameter("letters, digits, - and _ only", param_hint="--name")
    try:
        issued = issue_server(directory, hosts, force=force, name=name)
    except CertError as e:
        typer.echo(f"campusfleet certs server: {e}", err=True)
        raise typer.Exit(1) from None
    _report(issued)

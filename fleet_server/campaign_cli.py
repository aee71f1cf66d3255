"""`campusfleet firmware campaign`: start, list, show, pause, resume and abort OTA
campaigns on a running server through its API (docs/ota.md "Campaigns"), with an
operator's token from CAMPUSFLEET_TOKEN."""
from __future__ import annotations

from typing import Annotated, Any

import typer

campaign_app = typer.Typer(help="Staged OTA rollouts (docs/ota.md \"Campaigns\").", no_args_is_help=True)
ServerOpt = Annotated[str, typer.Option(help="fleet server base URL")]
TokenOpt = Annotated[str | None, typer.Option(envvar="CAMPUSFLEET_TOKEN",
                                              help="an operator's API token (better from the environment)")]


def _call(method: str, server: str, path: str, token: str | None, **kw) -> Any:
    import httpx

    try:
        r = httpx.request(method, f"{server.rstrip('/')}/api/v1/firmware/campaigns{path}", timeout=30,
                          headers={"Authorization": f"Bearer {token}"} if token else {}, **kw)
    except httpx.HTTPError as e:
        typer.echo(f"campusfleet firmware campaign: cannot reach {server}: {e}", err=True)
        raise typer.Exit(1) from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        typer.echo(f"campusfleet firmware campaign: HTTP {r.status_code}: {detail}", err=True)
        raise typer.Exit(1)
    return r.json()


def _line(c: dict) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in c["by_state"].items() if v)
    return (f"#{c['id']} {c['name']} [{c['version']}]: {c['state']}, wave {c['current_wave']}/{len(c['waves'])}, "
            f"{c['devices']} devices ({counts}){' - ' + c['reason'] if c['reason'] else ''}")


def _waves(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: comma-separated percentages, e.g. 1,10,50,100") from None


@campaign_app.command("start")
def start(version: Annotated[str, typer.Argument(help="an uploaded release")],
          name: Annotated[str | None, typer.Option(help="default: 'to VERSION'")] = None,
          region: Annotated[int | None, typer.Option(help="GB/T 2260 code: every device in it")] = None,
          school: Annotated[int | None, typer.Option(help="school id: every device in it")] = None,
          device: Annotated[list[str] | None, typer.Option("--device", help="a device id (repeat)")] = None,
          percent: Annotated[float, typer.Option(min=0.001, max=100, help="a share of the target")] = 100.0,
          waves: Annotated[str, typer.Option(help="cumulative percentages")] = "1,10,50,100",
          success_pct: Annotated[float, typer.Option(min=0, max=100, help="a wave must confirm this share")] = 90.0,
          max_failure_pct: Annotated[float, typer.Option(min=0, max=100,
                                                         help="halt above this share failed")] = 10.0,
          server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """Start a staged rollout; the target is every device unless --region, --school or --device."""
    chosen = [x for x in (region is not None, school is not None, bool(device)) if x]
    if len(chosen) > 1:
        raise typer.BadParameter("choose one of --region, --school, --device")
    target: dict[str, Any] = {"scope": "all", "percent": percent}
    if region is not None:
        target.update(scope="region", region=region)
    elif school is not None:
        target.update(scope="school", school_id=school)
    elif device:
        target.update(scope="devices", devices=device)
    c = _call("POST", server, "", token, json={
        "name": name or f"to {version}", "version": version, "target": target, "waves": _waves(waves),
        "success_pct": success_pct, "max_failure_pct": max_failure_pct})
    typer.echo(_line(c))


@campaign_app.command("list")
def list_(server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    for c in _call("GET", server, "", token)["items"]:
        typer.echo(_line(c))


@campaign_app.command("show")
def show(campaign_id: int, server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
    """The campaign, its waves and the devices that failed."""
    c = _call("GET", server, f"/{campaign_id}", token)
    typer.echo(_line(c))
    for w in c["per_wave"]:
        typer.echo(f"  wave {w['wave']} ({w['cumulative_pct']:g} %): {w['devices']} devices, "
                   f"{w['success']} ok, {w['failures']} failed")
    for state in ("failed", "rolled_back"):
        for d in _call("GET", server, f"/{campaign_id}/devices", token, params={"state": state, "limit": 50})["items"]:
            typer.echo(f"  {d['device_id']}: {state}: {d['reason']}")


def _action(action: str):
    def run(campaign_id: int, server: ServerOpt = "http://127.0.0.1:8000", token: TokenOpt = None) -> None:
        typer.echo(_line(_call("POST", server, f"/{campaign_id}/{action}", token)))
    run.__doc__ = {"pause": "Send no new commands (updates under way finish).",
                   "resume": "Go on with a paused campaign.",
                   "abort": "End it: devices not yet sent are cancelled."}[action]
    return run


for _name in ("pause", "resume", "abort"):
    campaign_app.command(_name)(_action(_name))

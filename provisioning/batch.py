"""A cartful of nodes: install() over the ports of a `port,school,room` CSV, several at
once, then a summary table, one CSV log row per node and an A4 label sheet. A rerun
resumes: nodes the log says were done, and the server shows online in their room,
are skipped without touching the board; the rest (the failed ones) are installed
again, which itself only does what is still missing."""
from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from provisioning.errors import ProvisionError
from provisioning.install import STEPS, Job, Options, Outcome, Progress, install
from provisioning.label import write_sheet

LOG_FIELDS = ("time", "port", "device_id", "school", "room", "result", *STEPS, "upload_bytes", "seconds", "error")
# The log's `result` column: what a later run reads to resume.
RESULT_PROVISIONED, RESULT_UNCHANGED, RESULT_SKIPPED, RESULT_FAILED = (
    "provisioned", "already provisioned, nothing changed", "done earlier, skipped", "failed")


def read_batch(path: Path) -> list[Job]:
    """port,school,room rows (a header row naming them is optional; # comments skipped)."""
    try:
        text = path.read_text("utf-8-sig")
    except OSError as e:
        raise ProvisionError(f"cannot read {path}: {e.strerror}") from None
    jobs, ports = [], set()
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or row[0].strip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if n == 1 and [c.lower() for c in cells[:3]] == ["port", "school", "room"]:
            continue
        if len(cells) < 3 or not all(cells[:3]):
            raise ProvisionError(f"{path.name} line {n}: expected port,school,room, got {','.join(row)!r}")
        if cells[0] in ports:
            raise ProvisionError(f"{path.name} line {n}: port {cells[0]} appears twice")
        ports.add(cells[0])
        jobs.append(Job(*cells[:3]))
    if not jobs:
        raise ProvisionError(f"{path.name} has no port,school,room rows")
    return jobs


def done_in_log(log_path: Path) -> dict[tuple[str, str, str], dict]:
    """(port, school, room) -> the log row of its latest run, if that run ended well."""
    if not log_path.exists():
        return {}
    latest: dict[tuple[str, str, str], dict] = {}
    with open(log_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            latest[(row.get("port", ""), row.get("school", ""), row.get("room", ""))] = row
    return {k: r for k, r in latest.items() if r.get("result") != RESULT_FAILED and r.get("device_id")}


def _still_done(job: Job, row: dict, opts: Options) -> Outcome | None:
    """An Outcome `done earlier` if the server shows the logged node online in the
    job's room now; None (install it again) otherwise, or if the server cannot say."""
    try:
        device = opts.api.device(row["device_id"])
    except ProvisionError:
        return None
    room, school = (device or {}).get("room") or {}, (device or {}).get("school") or {}
    if not device or not device.get("online") or room.get("code") != job.room or school.get("code") != job.school:
        return None
    return Outcome(job.port, job.school, job.room, device_id=row["device_id"],
                   steps={s: "skipped" for s in STEPS}, done_earlier=row.get("time") or "?")


def _run_one(job: Job, opts: Options, progress: Progress | None, earlier: dict | None) -> Outcome:
    t0 = time.monotonic()
    try:
        if earlier is not None:
            skipped = _still_done(job, earlier, opts)
            if skipped is not None:
                if progress:
                    progress(job.port, "resume", f"{skipped.device_id} done earlier and online: skipped")
                skipped.seconds = time.monotonic() - t0
                return skipped
        return install(job, opts, progress)
    except Exception as e:  # noqa: BLE001 - one board's surprise must not end the others' runs
        out = Outcome(job.port, job.school, job.room, error=f"unexpected error: {type(e).__name__}: {e}")
        out.steps["flash"] = "failed"
        out.seconds = time.monotonic() - t0
        return out


def result_of(o: Outcome) -> str:
    if not o.ok:
        return RESULT_FAILED
    if o.done_earlier:
        return RESULT_SKIPPED
    return RESULT_PROVISIONED if o.changed else RESULT_UNCHANGED


def append_log(log_path: Path, outcomes: list[Outcome]) -> None:
    new = not log_path.exists()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        if new:
            w.writeheader()
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for o in outcomes:
            w.writerow({"time": now, "port": o.port, "device_id": o.device_id or "", "school": o.school,
                        "room": o.room, "result": result_of(o),
                        **{s: o.steps.get(s, "") for s in STEPS}, "upload_bytes": o.upload_bytes,
                        "seconds": f"{o.seconds:.1f}", "error": o.error or ""})


def batch(jobs: list[Job], opts: Options, *, log_path: Path, workers: int = 4,
          progress: Progress | None = None, redo: bool = False,
          sheet_path: Path | None = None) -> list[Outcome]:
    """Runs install() for every job, up to `workers` ports at once (each port is its own
    USB link; the server and the host's CPU are shared), appends one CSV row per node
    to the log, and writes the labels of this run's nodes on one sheet PDF (sheet_path,
    default label_dir/sheet-<time>.pdf). Unless `redo`, a job the log says was done
    and the server confirms is skipped (see the module docstring)."""
    earlier = {} if redo else done_in_log(log_path)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        outcomes = list(pool.map(lambda j: _run_one(j, opts, progress, earlier.get((j.port, j.school, j.room))),
                                 jobs))
    append_log(log_path, outcomes)
    labels = [o.label for o in outcomes if o.ok and o.label is not None]
    if labels and (sheet_path is not None or opts.label_dir is not None):
        path = sheet_path or opts.label_dir / f"sheet-{time.strftime('%Y%m%d-%H%M%S')}.pdf"
        write_sheet(labels, path, title=f"CampusFleet {time.strftime('%Y-%m-%d %H:%M')}")
        if progress:
            progress("batch", "label", f"{len(labels)} labels on {path}")
    return outcomes


def summary_table(outcomes: list[Outcome]) -> list[str]:
    """The table the CLI prints after a batch: one line per node, then the totals."""
    head = ("port", "device", "school", "room", "result")
    rows = [(o.port, o.device_id or "-", o.school, o.room, o.summary) for o in outcomes]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in [head, *rows]]
    failed = sum(not o.ok for o in outcomes)
    skipped = sum(bool(o.done_earlier) for o in outcomes)
    lines.append(f"{len(outcomes) - failed} of {len(outcomes)} nodes ok ({skipped} done earlier), {failed} failed")
    return lines

"""`make audit`: check the pinned dependency set (constraints.txt) for known
vulnerabilities with pip-audit, and say plainly whether the check really ran.

pip-audit asks a vulnerability service (PyPI's JSON API by default, or OSV) about each
pinned version. Where that service cannot be reached, pip-audit marks every package
"skipped" and still prints "No known vulnerabilities found" with exit code 0; this
script counts the skips instead:

  exit 0  every package audited, no known vulnerability
  exit 1  a known vulnerability (the report lists package, id and the fixed versions)
  exit 2  the service could not be asked about some packages (offline, a mirror
          without the JSON API): nothing is known either way. With --tolerate-offline
          (what CI uses: its machines may have no route to the service) this is a
          warning and exit 0.

Usage: python scripts/audit.py PIP_AUDIT_BINARY [--tolerate-offline] [pip-audit args...]"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    binary, rest = argv[0], argv[1:]
    tolerate = "--tolerate-offline" in rest
    extra = [a for a in rest if a != "--tolerate-offline"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        cmd = [binary, "-r", str(ROOT / "constraints.txt"), "--no-deps", "--disable-pip",
               "--progress-spinner", "off", "-f", "json", "-o", str(report), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if not report.exists():
            print(proc.stderr.strip()[-2000:], file=sys.stderr)
            print("audit: pip-audit did not finish (the vulnerability service is unreachable?)", file=sys.stderr)
            return 0 if tolerate else 2
        data = json.loads(report.read_text())
    deps = data.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    for d in vulnerable:
        for v in d["vulns"]:
            fixed = ", ".join(v.get("fix_versions") or []) or "no fixed version yet"
            print(f"VULNERABLE {d['name']} {d['version']}: {v['id']} (fixed in: {fixed})")
    print(f"audit: {len(deps)} pinned packages, {len(deps) - len(skipped)} audited, "
          f"{len(vulnerable)} with known vulnerabilities, {len(skipped)} not audited")
    if vulnerable:
        return 1
    if skipped:
        reasons = {d["skip_reason"].split(":")[0] for d in skipped}
        print("audit: NOT CHECKED for " + ", ".join(d["name"] for d in skipped[:10])
              + (" ..." if len(skipped) > 10 else "") + f" ({'; '.join(sorted(reasons))})", file=sys.stderr)
        return 0 if tolerate else 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

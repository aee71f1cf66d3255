"""A virtual board for provisioning tests: the real MicroPython unix port running its
REPL on a pseudo-terminal in an empty folder (its flash), bridged to a second pty whose
path mpremote opens like /dev/ttyUSB0. reset() ends the REPL and boots main.py in the
folder, as the board's reset button would (a soft reset would end the unix port)."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import threading
import tty
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fleet_server.virtual_nodes import VirtualNode, micropython_binary

# The REPL compiles provisioning's scripts (hashing, preflight) from source: give it
# the heap a board's REPL has free before the node app runs.
REPL_HEAP = "512K"
# A node's process gets SIGTERM when the *thread* that started it ends (PR_SET_PDEATHSIG,
# fleet_server/virtual_nodes.py, is per thread). A batch resets boards from its worker
# threads, which end with the batch: start nodes from one thread that outlives the tests.
_NODE_STARTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="virtual-board-node-starter")


class VirtualBoard:
    def __init__(self, flash_dir: Path, mac: str) -> None:
        self.flash_dir = flash_dir
        self.mac = mac
        self.repl: subprocess.Popen | None = None
        self.node: VirtualNode | None = None
        self._fds: list[int] = []
        self._stop = threading.Event()
        self._bridge: threading.Thread | None = None
        self.port = ""
        self._host_master = self._host_slave = -1

    def start(self) -> VirtualBoard:
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        # The unix port has no eFuse: the board's MAC lives in `.mac` (see provisioning/board.py).
        (self.flash_dir / ".mac").write_text(self.mac)
        # The host side (the board's "USB port") lives as long as the board: its path
        # stays the same across resets, like /dev/ttyUSB0.
        self._host_master, host_slave = pty.openpty()
        tty.setraw(host_slave)
        self._host_slave = host_slave            # kept open so the pty survives mpremote closing it
        self.port = os.ttyname(host_slave)
        return self.to_repl()

    def to_repl(self) -> VirtualBoard:
        """Back at the REPL (the node app stopped, as by a technician's Ctrl-C)."""
        if self.node is not None:
            self.node.stop()
            self.node = None
        self._stop_repl()
        self._stop = threading.Event()
        mp_master, mp_slave = pty.openpty()
        tty.setraw(mp_slave)
        self.repl = subprocess.Popen([micropython_binary(), "-X", f"heapsize={REPL_HEAP}"], cwd=self.flash_dir,
                                     stdin=mp_slave, stdout=mp_slave, stderr=mp_slave, start_new_session=True)
        os.close(mp_slave)
        self._fds = [mp_master]
        self._bridge = threading.Thread(target=self._pump, args=(mp_master, self._host_master), daemon=True)
        self._bridge.start()
        return self

    def _pump(self, a: int, b: int) -> None:
        peer = {a: b, b: a}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for fd in ready:
                    data = os.read(fd, 4096)
                    if data:
                        os.write(peer[fd], data)
            except OSError:
                if self.repl is None or self.repl.poll() is not None:
                    return

    def _stop_repl(self) -> None:
        self._stop.set()
        if self._bridge is not None:
            self._bridge.join(2)
            self._bridge = None
        if self.repl is not None and self.repl.poll() is None:
            self.repl.kill()
            self.repl.wait(5)
        self.repl = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def reset(self) -> None:
        """The reset button: the REPL ends and the node app boots from the folder."""
        self._stop_repl()
        if self.node is not None:
            self.node.stop()
        cfg_id = "cf-" + self.mac.replace(":", "").lower()
        self.node = _NODE_STARTER.submit(VirtualNode(cfg_id, self.flash_dir).start).result()

    def stop(self) -> None:
        self._stop_repl()
        if self.node is not None:
            self.node.stop()
        for fd in (self._host_master, self._host_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def files(self) -> dict[str, bytes]:
        return {p.relative_to(self.flash_dir).as_posix(): p.read_bytes()
                for p in self.flash_dir.rglob("*") if p.is_file()}

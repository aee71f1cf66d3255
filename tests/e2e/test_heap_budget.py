"""Memory: a node with every sensor runs 1000 windows within its heap, deployed as .mpy
(as on a board) and from the .py sources, and reports its peak gc.mem_alloc()."""
import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.utils.services import Recorder, wait_until

WINDOWS = 1000


@pytest.mark.slow
@pytest.mark.parametrize("compiled,heap", [(True, "96K"), (False, "104K")], ids=["mpy-96K", "py-104K"])
def test_node_with_every_sensor_runs_1000_windows_within_its_heap(mosquitto, make_node, compiled, heap):
    device_id = "cf-00004ea%05x" % (1 if compiled else 2)
    rec = Recorder(mosquitto.host, mosquitto.port, f"campus/v1/{device_id}/#")
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=WINDOWS + 30)
    try:
        node = make_node(start=start, speed=6000, device_id=device_id, heap=heap, compiled=compiled,
                         status_s=3600)
        wait_until(lambda: len(rec.of("telemetry")) >= WINDOWS, 240, 1.0, f"{WINDOWS} windows")
        node.stop()
        log = (node.node_dir / "node.log").read_text()
        assert "MemoryError" not in log and "Traceback" not in log, log[-2000:]
        statuses = [json.loads(p) for p in rec.of("status") if json.loads(p).get("online")]
        assert {s["boot"] for s in statuses} == {1}, "the node must not have rebooted"
        assert all(v == "ok" for v in statuses[-1]["sensors"].values())
        # heap_peak is the highest gc.mem_alloc() seen (the GC collects only when the heap
        # is full, so it approaches the heap size); heap_free is measured right after a
        # collection, so heap - heap_free is what the node really keeps alive.
        heap_bytes = int(heap[:-1]) * 1024
        peak = max(s["heap_peak"] for s in statuses)
        live = heap_bytes - min(s["heap_free"] for s in statuses)
        print(f"\n{'mpy' if compiled else 'py'} at {heap}: {len(rec.of('telemetry'))} windows, "
              f"peak gc.mem_alloc() {peak} B, most live after collect {live} B")
        assert 0 < peak <= heap_bytes and 0 < live < heap_bytes
    finally:
        rec.close()

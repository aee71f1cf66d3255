"""OTA on the real interpreter: main.py's slot choice (pending tried 3 times, then back to
the confirmed slot, crash run reset), and ota.py's state machine with a stand-in node:
args checks, the job written atomically, confirmation after N delivered windows,
rollback when none comes in time, refusals that clear the slot, the status key."""
import json
import os
import time

import ota

_MAIN = None


def _main_funcs():
    """main.py's functions without running the node (its last line calls main())."""
    global _MAIN
    if _MAIN is None:
        here = __file__.rsplit("/", 1)[0]
        src = open(here.rsplit("/", 3)[0] + "/firmware/main.py").read()
        g = {"__name__": "main_under_test"}
        exec(src[:src.rindex("main()")], g)
        _MAIN = g
    return _MAIN


def _wipe():
    for name in ("ota.json", "ota.json.tmp", "boot.json", "boot.json.tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
    ota.rmtree("slots")


def _write(name, doc):
    with open(name, "w") as f:
        json.dump(doc, f)


def _read(name):
    with open(name) as f:
        return json.load(f)


class _Link:
    def __init__(self):
        self.sent = []
        self.is_up = True

    def up(self):
        return self.is_up

    def publish(self, suffix, payload, retain=False):
        self.sent.append((suffix, json.loads(payload)))
        return len(self.sent)


class _Hw:
    def now(self):
        return 1764300000


class _Node:
    def __init__(self, **cfg):
        self.cfg = {"board": "sim", "mqtt": {}, "ota_pubkey": "11" * 32, "ota_confirm_windows": 3,
                    "ota_confirm_min": 10}
        self.cfg.update(cfg)
        self.link = _Link()
        self.hw = _Hw()
        self.delivered = 0
        self.reboot_ms = None
        self.reboot_pid = None
        self.status_due = False


_ARGS = {"url": "http://127.0.0.1:9/firmware/0.3.0/manifest.json", "version": "0.3.0",
         "sha256": "ab" * 32, "size": 900, "sig": "cd" * 64}


def test_no_state_file_boots_the_factory_app():
    _wipe()
    assert _main_funcs()["_slot"]() == ""


def test_a_confirmed_slot_boots_from_its_folder():
    _wipe()
    _write("ota.json", {"active": "b", "pending": None})
    assert _main_funcs()["_slot"]() == "slots/b"
    _wipe()


def test_a_pending_slot_is_tried_three_times_then_rolled_back():
    _wipe()
    _write("ota.json", {"active": "a", "pending": "b", "pending_ver": "0.3.1", "tries": 0})
    _write("boot.json", {"boot": 7, "crashes": 3, "healthy": False, "clean": False})
    slot = _main_funcs()["_slot"]
    assert [slot(), slot(), slot()] == ["slots/b"] * 3
    assert _read("ota.json")["tries"] == 3
    assert slot() == "slots/a"  # the fourth boot: back to the confirmed slot
    st = _read("ota.json")
    assert st["pending"] is None and st["result"] == "rolled_back" and st["reason"] == "boot_failed"
    assert st["ver"] == "0.3.1" and st["report"] is True
    # The crashes were the failed release's: the old one must not start in safe mode.
    boot = _read("boot.json")
    assert boot["crashes"] == 0 and boot["boot"] == 7
    assert slot() == "slots/a"
    _wipe()


def test_a_corrupt_state_file_boots_the_factory_app():
    _wipe()
    with open("ota.json", "w") as f:
        f.write('{"active": "a", "pend')
    assert _main_funcs()["_slot"]() == ""
    _wipe()


def test_ota_args_are_checked():
    ota.check_args(_ARGS)
    for key, bad in (("url", "ftp://x/m.json"), ("url", 5), ("version", ""), ("version", "x" * 33),
                     ("sha256", "ab" * 31), ("sha256", "zz" * 32), ("size", 0), ("size", True),
                     ("size", 10 ** 6), ("sig", "cd" * 63)):
        args = dict(_ARGS)
        args[key] = bad
        try:
            ota.check_args(args)
        except (ValueError, TypeError):
            continue
        raise AssertionError("accepted %s=%r" % (key, bad))


def test_urls_are_split_with_ports_and_ipv6():
    assert ota.split_url("http://fleet.lan/firmware/1/m.json") == (False, "fleet.lan", 80, "/firmware/1/m.json")
    assert ota.split_url("https://10.0.0.2:8443/f") == (True, "10.0.0.2", 8443, "/f")
    assert ota.split_url("http://[::1]:8000/f/m") == (False, "::1", 8000, "/f/m")


def test_start_writes_the_job_into_the_inactive_slot():
    _wipe()
    _write("ota.json", {"active": "a"})
    node = _Node()
    u = ota.Updater(node)
    assert u.start(dict(_ARGS), "c-1") is None
    job = _read("ota.json")["job"]
    assert job["slot"] == "b" and job["stage"] == "wipe" and job["id"] == "c-1" and job["ver"] == "0.3.0"
    assert u.start(dict(_ARGS), "c-1") is None  # redelivered: the same job
    assert '"state":"download"' in u.status() and not u.idle()
    assert u.start(dict(_ARGS, size=0), "c-2") == "bad_args"
    assert ota.Updater(_Node(ota_pubkey=None)).start(dict(_ARGS), "c-3") == "no_ota_pubkey"
    _wipe()


def test_an_update_waiting_for_confirmation_refuses_another():
    _wipe()
    _write("ota.json", {"active": None, "pending": "a", "pending_ver": "0.3.0", "tries": 1})
    assert ota.Updater(_Node()).start(dict(_ARGS), "c-9") == "busy: pending confirmation"
    _wipe()


def test_pending_slot_is_confirmed_after_n_delivered_windows():
    _wipe()
    _write("ota.json", {"active": None, "pending": "a", "pending_ver": "0.3.0", "tries": 1, "cmd": "c-7"})
    node = _Node(ota_confirm_windows=3)
    u = ota.Updater(node)
    node.delivered = 2
    u.step()
    assert _read("ota.json")["pending"] == "a" and not node.link.sent
    node.delivered = 3
    u.step()
    st = _read("ota.json")
    assert st["active"] == "a" and st["pending"] is None and st["result"] == "confirmed" and st["report"] is False
    suffix, ack = node.link.sent[-1]
    assert suffix == "ack" and ack["id"] == "c-7" and ack["ok"] is True and ack["ota"] == "confirmed"
    assert ack["fw"] == "0.3.0" and u.idle()
    assert '"slot":"a"' in u.status() and '"result":"confirmed"' in u.status()
    _wipe()


def test_no_confirmation_in_time_rolls_back_through_a_reboot():
    _wipe()
    _write("ota.json", {"active": "b", "pending": "a", "pending_ver": "0.3.0", "tries": 1, "cmd": "c-8"})
    node = _Node(ota_confirm_min=1)
    u = ota.Updater(node)
    u.booted_ms = time.ticks_add(time.ticks_ms(), -61000)
    u.step()
    st = _read("ota.json")
    assert st["pending"] is None and st["active"] == "b"
    assert st["result"] == "rolled_back" and st["reason"] == "not_confirmed"
    assert node.reboot_ms is not None  # the node's reboot path resets into slot b
    _wipe()


def test_a_refusal_clears_the_slot_and_is_acked_with_the_reason():
    _wipe()
    _write("ota.json", {"active": None})
    node = _Node()
    u = ota.Updater(node)
    u.start(dict(_ARGS), "c-5")
    u._job_step()  # wipe: creates the slot folder
    assert "a" in os.listdir("slots")
    with open("slots/a/manifest.json.part", "w") as f:
        f.write("{}")
    u._refuse("bad_signature")
    st = _read("ota.json")
    assert st["job"] is None and st["result"] == "refused" and st["reason"] == "bad_signature"
    assert "a" not in os.listdir("slots")
    suffix, ack = node.link.sent[-1]
    assert (ack["id"], ack["ok"], ack["err"]) == ("c-5", False, "refused: bad_signature")
    _wipe()


def test_final_ack_waits_for_the_link():
    _wipe()
    _write("ota.json", {"active": "a", "result": "rolled_back", "reason": "boot_failed", "ver": "0.3.1",
                        "report": True, "cmd": "c-4"})
    node = _Node()
    node.link.is_up = False
    u = ota.Updater(node)
    u.step()
    assert not node.link.sent and _read("ota.json")["report"] is True
    node.link.is_up = True
    u.step()
    ack = node.link.sent[-1][1]
    assert (ack["ok"], ack["err"], ack["ota"]) == (False, "rolled_back: boot_failed", "rolled_back")
    assert _read("ota.json")["report"] is False and u.idle()
    _wipe()


def test_release_boards_match_board_chip_or_platform():
    names = ota.board_names({"board": "sim"})
    assert "sim" in names and "linux" in names

"""firmware/commands.py against PROTOCOL.md "Command and result": ack shape, expiry,
unknown op, bad args, idempotence by id (kept on flash), and silence for non-commands."""
import json

import os

import commands

_BOOK_PATH = "cmds_test.json"


class Book:
    """The results list and its file, as node.py keeps them; handle() returns the ack
    parsed (the firmware returns it as JSON text), or None."""

    def __init__(self, path=_BOOK_PATH):
        self.recent = commands.load(path)

    def handle(self, payload, now, run):
        ack = commands.handle(self.recent, payload, now, run, _BOOK_PATH)
        return None if ack is None else json.loads(ack)


def _book():
    """A fresh book; its results file is removed so tests do not share history."""
    try:
        os.remove(_BOOK_PATH)
    except OSError:
        pass
    return Book()

NOW = 1764300012


class Ops:
    """An ops table that records every call, so a test can prove an op did (not) run."""

    def __init__(self, result=None):
        self.calls = []
        self.result = result

    def table(self):
        return self.run

    def run(self, op, args):
        self.calls.append((op, args))
        return self.result if op == "identify" else None


def _cmd(**fields):
    msg = {"v": 1}
    msg.update(fields)
    return json.dumps(msg).encode()


def test_ok_ack_has_exactly_the_protocol_shape():
    ops = Ops()
    ack = _book().handle(_cmd(id="c-7f3a", op="identify", args={"s": 30},
                                    exp=NOW + 600), NOW + 0.7, ops.table())
    assert ack == {"v": 1, "id": "c-7f3a", "ok": True, "err": None, "ts": NOW}, ack
    assert sorted(ack.keys()) == ["err", "id", "ok", "ts", "v"]
    assert isinstance(ack["ts"], int)  # node clock may be fractional; ts is Unix s
    assert ops.calls == [("identify", {"s": 30})], ops.calls


def test_missing_args_run_the_op_with_an_empty_object():
    ops = Ops()
    ack = _book().handle(_cmd(id="c-1", op="sync"), NOW, ops.table())
    assert ack["ok"] is True and ops.calls == [("sync", {})], (ack, ops.calls)


def test_op_error_string_becomes_ok_false_with_that_err():
    ops = Ops(result="bad_args")
    ack = _book().handle(_cmd(id="c-2", op="identify", args={"s": -1}), NOW, ops.table())
    assert (ack["ok"], ack["err"]) == (False, "bad_args"), ack


def test_expired_command_is_acked_expired_and_not_run():
    ops = Ops()
    ack = _book().handle(_cmd(id="c-3", op="identify", exp=NOW - 1), NOW, ops.table())
    assert (ack["ok"], ack["err"], ack["id"]) == (False, "expired", "c-3"), ack
    assert ops.calls == []


def test_command_at_exactly_exp_still_runs():
    # "past exp" means now > exp.
    ops = Ops()
    ack = _book().handle(_cmd(id="c-4", op="sync", exp=NOW), NOW, ops.table())
    assert ack["ok"] is True and len(ops.calls) == 1, ack


def test_unknown_op_is_acked_unknown_op():
    ops = Ops()
    book = _book()
    ack = book.handle(_cmd(id="c-5", op="selfdestruct"), NOW, ops.table())
    assert (ack["ok"], ack["err"]) == (False, "unknown_op"), ack
    ack = book.handle(_cmd(id="c-6"), NOW, ops.table())  # no op at all
    assert (ack["ok"], ack["err"]) == (False, "unknown_op"), ack
    assert ops.calls == []


def test_args_not_an_object_is_bad_args_and_not_run():
    ops = Ops()
    book = _book()
    for i, args in enumerate(([30], "s=30", 30)):
        ack = book.handle(_cmd(id="c-b%d" % i, op="identify", args=args), NOW, ops.table())
        assert (ack["ok"], ack["err"]) == (False, "bad_args"), (args, ack)
    assert ops.calls == []


def test_repeated_id_is_acked_again_with_same_result_and_not_run_twice():
    ops = Ops()
    book = _book()
    payload = _cmd(id="c-7", op="identify", args={"s": 5})
    first = book.handle(payload, NOW, ops.table())
    again = book.handle(payload, NOW + 30, ops.table())
    assert len(ops.calls) == 1, ops.calls
    assert (again["id"], again["ok"], again["err"]) == ("c-7", True, None), again
    assert again["ts"] == NOW + 30 and first["ts"] == NOW


def test_repeated_id_keeps_a_failed_result():
    # A redelivered expired command stays expired, even if resent with a later exp.
    ops = Ops()
    book = _book()
    book.handle(_cmd(id="c-8", op="sync", exp=NOW - 10), NOW, ops.table())
    again = book.handle(_cmd(id="c-8", op="sync", exp=NOW + 10), NOW, ops.table())
    assert (again["ok"], again["err"]) == (False, "expired"), again
    assert ops.calls == []


def test_non_commands_get_no_ack():
    ops = Ops()
    book = _book()
    for payload in (b"not json", b"", b"\xff\xfe", b"[1,2]", b"42",
                    _cmd(op="sync"),                   # no id
                    _cmd(id="", op="sync"),            # empty id
                    _cmd(id=7, op="sync"),             # id not a string
                    b'{"id":"c-9","op":"sync"}',       # no v
                    b'{"v":2,"id":"c-9","op":"sync"}'):
        assert book.handle(payload, NOW, ops.table()) is None, payload
    assert ops.calls == []


def test_results_survive_a_reboot_so_a_redelivered_command_is_not_run_again():
    runs = []
    run = lambda op, args: runs.append(op)  # noqa: E731
    first = _book().handle(_cmd(id="c-boot", op="reboot"), NOW, run)
    again = Book().handle(_cmd(id="c-boot", op="reboot"), NOW, run)  # after reboot
    assert runs == ["reboot"]
    assert again == first
    os.remove(_BOOK_PATH)


def test_only_the_last_16_results_are_kept():
    book = _book()
    for i in range(20):
        book.handle(_cmd(id="c-%d" % i, op="sync"), NOW, lambda op, args: None)
    assert [e[0] for e in Book().recent] == ["c-%d" % i for i in range(4, 20)]
    os.remove(_BOOK_PATH)


def test_an_op_that_raises_is_acked_failed_not_propagated():
    def boom(op, args):
        raise RuntimeError("sensor bus stuck")
    ack = _book().handle(_cmd(id="c-boom", op="sync"), NOW, boom)
    assert ack["ok"] is False and ack["err"] == "failed: RuntimeError"
    os.remove(_BOOK_PATH)


def test_zz_cleanup_results_file():
    # Runs last (the runner sorts names): leave the folder as the tests found it.
    _book()
    try:
        os.remove(_BOOK_PATH)
    except OSError:
        pass
    assert _BOOK_PATH not in os.listdir()

"""Command handling (PROTOCOL.md "Command and result"): parse, expire, run once per
id, and build the `ack`. The ops themselves are carried out by the node."""
import json
import os

_RECENT_IDS = 16  # remembered results, so a redelivered command is acked, not re-run


class CommandBook:
    """Results of the last commands, kept on flash so a command redelivered after a
    reboot (QoS 1, clean session off) is acked again rather than run twice."""

    def __init__(self, path="cmds.json"):
        self.path = path
        self.last_op = None  # the op actually run by the last handle(), else None
        self._recent = []  # [(id, ok, err)], oldest first
        try:
            with open(path) as f:
                self._recent = [tuple(e) for e in json.load(f)][-_RECENT_IDS:]
        except (OSError, ValueError, TypeError):
            self._recent = []

    def _seen(self, cid):
        for entry in self._recent:
            if entry[0] == cid:
                return entry
        return None

    def _remember(self, cid, ok, err):
        self._recent.append((cid, ok, err))
        if len(self._recent) > _RECENT_IDS:
            self._recent.pop(0)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._recent, f)
        os.rename(tmp, self.path)

    def handle(self, payload, now, ops):
        """payload: bytes from the cmd topic; now: node clock (Unix s);
        ops: dict op name -> fn(args) returning None (ok) or an error string.
        Returns the ack dict to publish, or None for a message that is not a command."""
        self.last_op = None
        try:
            cmd = json.loads(payload)
        except (ValueError, UnicodeError):
            return None
        if not isinstance(cmd, dict) or cmd.get("v") != 1:
            return None
        cid = cmd.get("id")
        if not isinstance(cid, str) or not cid:
            return None
        seen = self._seen(cid)
        if seen is not None:
            return _ack(cid, seen[1], seen[2], now)
        op = cmd.get("op")
        args = cmd.get("args")
        if args is None:
            args = {}
        exp = cmd.get("exp")
        if exp is not None and (not isinstance(exp, int) or now > exp):
            ok, err = False, "expired"
        elif not isinstance(op, str) or op not in ops:
            ok, err = False, "unknown_op"
        elif not isinstance(args, dict):
            ok, err = False, "bad_args"
        else:
            self.last_op = op
            try:
                err = ops[op](args)
            except Exception as e:  # a failing op must not take the node loop down
                err = "failed: %s" % type(e).__name__
            ok = err is None
        self._remember(cid, ok, err)
        return _ack(cid, ok, err, now)


def _ack(cid, ok, err, now):
    return {"v": 1, "id": cid, "ok": ok, "err": err, "ts": int(now)}

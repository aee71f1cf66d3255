"""Command handling (PROTOCOL.md "Command and result"): parse, expire, run once per
id, and build the `ack`. The ops themselves are carried out by the node."""
import json

_RECENT_IDS = 16  # remembered results, so a redelivered command is acked, not re-run


class CommandBook:
    def __init__(self):
        self._recent = []  # [(id, ok, err)], oldest first

    def _seen(self, cid):
        for entry in self._recent:
            if entry[0] == cid:
                return entry
        return None

    def _remember(self, cid, ok, err):
        self._recent.append((cid, ok, err))
        if len(self._recent) > _RECENT_IDS:
            self._recent.pop(0)

    def handle(self, payload, now, ops):
        """payload: bytes from the cmd topic; now: node clock (Unix s);
        ops: dict op name -> fn(args) returning None (ok) or an error string.
        Returns the ack dict to publish, or None for a message that is not a command."""
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
            try:
                err = ops[op](args)
            except Exception as e:  # a failing op must not take the node loop down
                err = "failed: %s" % type(e).__name__
            ok = err is None
        self._remember(cid, ok, err)
        return _ack(cid, ok, err, now)


def _ack(cid, ok, err, now):
    return {"v": 1, "id": cid, "ok": ok, "err": err, "ts": int(now)}

"""Command handling (PROTOCOL.md "Command and result"): parse, expire, run once per id
(the results are kept on flash), and the `ack`. The node carries the ops out."""
import json
import os

from micropython import const

OPS = ("identify", "sync", "reboot", "config", "ota")
_RECENT_IDS = const(16)  # remembered results, so a redelivered command is acked, not re-run
_PATH = const("cmds.json")
_ACK_JSON = const('{"v":1,"id":%s,"ok":%s,"err":%s,"ts":%d}')


def load(path=_PATH):
    """The results of the last commands, [(id, ok, err)] oldest first, from flash: a
    command redelivered after a reboot (QoS 1, clean session off) is acked again rather
    than run twice."""
    try:
        with open(path) as f:
            return [tuple(e) for e in json.load(f)][-_RECENT_IDS:]
    except (OSError, ValueError, TypeError):
        return []


def handle(recent, payload, now, run, path=_PATH):
    """payload: bytes from the cmd topic; now: node clock (Unix s); recent: load()'s list,
    updated here; run(op, args): carries out one of OPS, returning None (ok) or an error
    string. Returns the ack (JSON text) to publish, or None for a message that is not a
    command."""
    try:
        cmd = json.loads(payload)
    except (ValueError, UnicodeError):
        return None
    if not isinstance(cmd, dict) or cmd.get("v") != 1:
        return None
    cid = cmd.get("id")
    if not isinstance(cid, str) or not cid:
        return None
    for entry in recent:
        if entry[0] == cid:  # seen: ack the same result again, do not run it twice
            ok, err = entry[1], entry[2]
            break
    else:
        op = cmd.get("op")
        args = cmd.get("args")
        if args is None:
            args = {}
        exp = cmd.get("exp")
        if exp is not None and (not isinstance(exp, int) or now > exp):
            ok, err = False, "expired"
        elif not isinstance(op, str) or op not in OPS:
            ok, err = False, "unknown_op"
        elif not isinstance(args, dict):
            ok, err = False, "bad_args"
        else:
            if op == "ota":
                args["id"] = cid  # an update acks its progress and result under this id
            try:
                err = run(op, args)
            except Exception as e:  # a failing op must not take the node loop down
                err = "failed: %s" % type(e).__name__
            ok = err is None
        recent.append((cid, ok, err))
        if len(recent) > _RECENT_IDS:
            recent.pop(0)
        with open(path + ".tmp", "w") as f:
            json.dump(recent, f)
        os.rename(path + ".tmp", path)
    return _ACK_JSON % (json.dumps(cid), "true" if ok else "false", json.dumps(err), int(now))

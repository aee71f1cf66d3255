"""Firmware updates over the air (docs/ota.md): fetch a signed release into the inactive
app slot, verify it, switch at reboot, confirm or roll back. Imported only while an
update runs or waits for its confirmation, so a node at rest never carries it.

Flash layout: the factory app at the root (what provisioning deploys), slots `slots/a` and
`slots/b` (not `ota/`: a folder of that name would shadow ota.py on import), and `ota.json` (written atomically: tmp + rename), which main.py reads at boot:
  active   the confirmed slot ("a", "b"; null = factory), active_ver its version
  pending  a slot installed but not yet confirmed; main.py boots it and counts `tries`;
           at 3 tries without confirmation it goes back to `active`
  job      the download in progress (resumed after a reboot or a power cut)
  cmd, result, reason, ver, report   the last update's outcome; `report` = its final ack
           is still to be published
Downloads are HTTP(S) GETs with a Range from the current size of the partial file, read
in chunks of _CHUNK bytes straight to flash and hashed on the way (never a whole file in
RAM); the manifest's Ed25519 signature is checked before any file is fetched."""
import binascii
import gc
import hashlib
import json
import os
import select
import socket
import sys
import time

from micropython import const

STATE = const("ota.json")
_ROOT = const("slots")  # not "ota": that folder would shadow this module on import
_CHUNK = const(1024)          # bytes read from the socket and written to flash at a time
_STEP_MS = const(150)         # at most this long per node loop pass
_TIMEOUT_S = const(5)         # connect and response headers
_RETRY_MS = const(3000)       # after a failed request; doubled up to _RETRY_MAX_MS
_RETRY_MAX_MS = const(60000)
_GIVE_UP = const(30)          # failed requests in a row before the update is abandoned
_MAX_MANIFEST = const(16384)
_MAX_TRIES = const(3)         # boots of a pending slot (main.py counts them)


def read_state(path=STATE):
    try:
        with open(path) as f:
            st = json.load(f)
        if isinstance(st, dict):
            return st
    except (OSError, ValueError):
        pass
    return {}


def write_state(st, path=STATE):
    with open(path + ".tmp", "w") as f:
        json.dump(st, f)
    os.rename(path + ".tmp", path)  # atomic on LittleFS and POSIX: old or new, never half


def rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:  # a directory (os.ilistdir type)
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _mkdirs(path):
    part = ""
    for name in path.split("/"):
        part = part + "/" + name if part else name
        try:
            os.mkdir(part)
        except OSError:
            pass  # exists


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def _sha256_of(path):
    """A sha256 object over what path holds (the part already downloaded), read in chunks."""
    h = hashlib.sha256()
    buf = bytearray(512)
    mv = memoryview(buf)
    try:
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
    except OSError:
        pass
    return h


def split_url(url):
    """'http://host:port/a/b' -> (tls, host, port, '/a/b'). Raises ValueError."""
    if url.startswith("http://"):
        tls, rest = False, url[7:]
    elif url.startswith("https://"):
        tls, rest = True, url[8:]
    else:
        raise ValueError("url must be http:// or https://")
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    port = 443 if tls else 80
    if hostport.startswith("["):  # IPv6 literal
        j = hostport.find("]")
        host = hostport[1:j]
        if hostport[j + 1:j + 2] == ":":
            port = int(hostport[j + 2:])
    elif ":" in hostport:
        host, p = hostport.rsplit(":", 1)
        port = int(p)
    else:
        host = hostport
    if not host:
        raise ValueError("url has no host")
    return tls, host, port, path


def _ver(text):
    out = []
    for p in text.split("."):
        d = ""
        for c in p:
            if c not in "0123456789":
                break
            d += c
        out.append(int(d or 0))
    return tuple(out)


def check_args(args):
    """The `ota` command's args (PROTOCOL.md: url, version, sha256, size, sig) or ValueError."""
    url = args.get("url")
    ver = args.get("version")
    sha = args.get("sha256")
    size = args.get("size")
    sig = args.get("sig")
    if not isinstance(url, str) or len(url) > 200:
        raise ValueError
    split_url(url)
    if not isinstance(ver, str) or not 1 <= len(ver) <= 32 or not isinstance(size, int) \
            or isinstance(size, bool) or not 1 <= size <= _MAX_MANIFEST:
        raise ValueError
    for text, n in ((sha, 64), (sig, 128)):
        if not isinstance(text, str) or len(text) != n or text.lower().strip("0123456789abcdef"):
            raise ValueError


def board_names(cfg):
    """What a release's `boards` may name to fit this node: its board, the chip of that
    board's pin map, the platform (esp32, linux)."""
    names = [cfg.get("board", ""), sys.platform]
    try:
        with open("boards/%s.json" % cfg.get("board", "")) as f:
            names.append(json.load(f).get("chip"))
    except (OSError, ValueError, AttributeError):
        pass
    return names


class Updater:
    """One per node while an update runs or waits for confirmation. The node calls
    start() for an `ota` command, step() every loop pass and status() for its status."""

    def __init__(self, node):
        self.node = node
        self.st = read_state()
        self.sock = None
        self.poller = None
        self.file = None
        self.sha = None
        self.left = 0           # body bytes still expected on the open response
        self.failures = 0
        self.retry_ms = time.ticks_ms()
        self.booted_ms = time.ticks_ms()
        self.pct = -1           # last progress reported
        self.buf = None         # the download buffer, allocated once
        # main.py boots a pending slot (and counts the try): this boot runs it.
        self.trying = bool(self.st.get("pending"))

    # --- the node's hooks --------------------------------------------------------------
    def idle(self):
        """Nothing to do: the node may drop this object (and the module)."""
        st = self.st
        return not (st.get("job") or st.get("pending") or st.get("report"))

    def status(self):
        """The status key (docs/protocol.md): ,"ota":{...}"""
        st = self.st
        job = st.get("job")
        state = "download" if job else "pending" if st.get("pending") else "idle"
        return ',"ota":{"state":"%s","slot":"%s","ver":%s,"result":%s,"reason":%s}' % (
            state, st.get("pending") or st.get("active") or "factory",
            json.dumps(job["ver"] if job else st.get("pending_ver") or st.get("ver")),
            json.dumps(st.get("result")), json.dumps(st.get("reason")))

    def start(self, args, cid):
        """Accepts an `ota` command: None (the ack says ok, the download starts) or the
        error for the ack."""
        try:
            check_args(args)
        except (ValueError, TypeError):
            return "bad_args"
        if not self.node.cfg.get("ota_pubkey"):
            return "no_ota_pubkey"
        st = self.st
        job = st.get("job")
        if job and job.get("id") == cid:
            return None  # the same command again (redelivered before its ack was kept)
        if st.get("pending"):
            return "busy: pending confirmation"
        self._close()
        slot = "b" if st.get("active") == "a" else "a"  # never the confirmed slot
        st["job"] = {"id": cid, "url": args["url"], "ver": args["version"], "sha": args["sha256"].lower(),
                     "size": args["size"], "sig": args["sig"].lower(), "slot": slot, "stage": "wipe", "i": 0}
        st["result"] = st["reason"] = None
        st["report"] = False
        write_state(st)
        self.failures = 0
        self.pct = -1
        self.node.status_due = True
        return None

    def step(self):
        node = self.node
        st = self.st
        if st.get("report") and node.link.up():
            self._final_ack()
        if self.trying and st.get("pending"):
            if node.delivered >= node.cfg.get("ota_confirm_windows", 3):
                self._confirm()
            elif time.ticks_diff(time.ticks_ms(), self.booted_ms) > node.cfg.get("ota_confirm_min", 10) * 60000:
                # Running but not delivering: back to the previous slot (main.py would
                # only notice crashes).
                self._rollback("not_confirmed")
        if st.get("job") and node.link.up() and node.reboot_ms is None:
            deadline = time.ticks_add(time.ticks_ms(), _STEP_MS)
            try:
                while st.get("job") and time.ticks_diff(deadline, time.ticks_ms()) > 0:
                    if not self._job_step():
                        break
            except OSError as e:
                self._close()
                self._failed("network: %s" % e)
            except Exception as e:  # noqa: BLE001 - a failing update must never stop the node
                sys.print_exception(e)
                self._refuse("failed: %s" % type(e).__name__)

    # --- outcome -------------------------------------------------------------------------
    def _ack(self, ok, err, stage, extra=""):
        st = self.st
        # The running job's id first: `cmd` still names the previous update until this
        # one is installed.
        cid = (st.get("job") or {}).get("id") or st.get("cmd")
        if cid is None:
            return None
        return self.node.link.publish("ack", '{"v":1,"id":%s,"ok":%s,"err":%s,"ts":%d,"ota":"%s"%s}' % (
            json.dumps(cid), "true" if ok else "false", json.dumps(err), int(self.node.hw.now() or 0),
            stage, extra))

    def _final_ack(self):
        st = self.st
        ok = st.get("result") == "confirmed"
        err = None if ok else ("%s: %s" % (st.get("result"), st.get("reason")))[:64]
        if self._ack(ok, err, st.get("result"), ',"fw":%s' % json.dumps(st.get("ver"))) is not None:
            st["report"] = False
            write_state(st)

    def _finish(self, result, reason, ver):
        st = self.st
        job = st.get("job")
        if job:
            st["cmd"] = job["id"]
        st["job"] = None
        st["result"] = result
        st["reason"] = reason
        st["ver"] = ver
        st["report"] = True
        write_state(st)
        self.node.status_due = True

    def _refuse(self, reason):
        """The release is not installed; the running one stays, the slot is cleared."""
        self._close()
        job = self.st["job"]
        self._finish("refused", reason, job["ver"])
        rmtree(_ROOT + "/" + job["slot"])
        if self.node.link.up():
            self._final_ack()

    def _failed(self, why):
        self.failures += 1
        if self.failures >= _GIVE_UP:
            self._refuse("download_failed")
            return
        self.retry_ms = time.ticks_add(time.ticks_ms(), min(_RETRY_MAX_MS, _RETRY_MS << min(self.failures - 1, 5)))
        print("ota: retry after", why)

    def _confirm(self):
        st = self.st
        st["active"] = st["pending"]
        st["active_ver"] = st.get("pending_ver")
        st["pending"] = None
        st["tries"] = 0
        self.trying = False
        self._finish("confirmed", None, st["active_ver"])
        if self.node.link.up():
            self._final_ack()

    def _rollback(self, reason):
        st = self.st
        ver = st.get("pending_ver")
        st["pending"] = None
        st["tries"] = 0
        self.trying = False
        self._finish("rolled_back", reason, ver)
        self.node.reboot_ms = time.ticks_ms()  # the node's reboot path: flush, reset

    def _install(self):
        """Every file is in the slot and verified: boot it next (main.py), tell the server,
        reboot once the broker has the ack."""
        st = self.st
        job = st["job"]
        st["pending"] = job["slot"]
        st["pending_ver"] = job["ver"]
        st["tries"] = 0
        st["cmd"] = job["id"]
        st["job"] = None
        write_state(st)
        node = self.node
        node.reboot_pid = self._ack(True, None, "installed", ',"fw":%s' % json.dumps(job["ver"]))
        node.reboot_ms = time.ticks_add(time.ticks_ms(), 5000)

    # --- download ------------------------------------------------------------------------
    def _job_step(self):
        """One piece of work; False when the loop pass should end here."""
        job = self.st["job"]
        slot = _ROOT + "/" + job["slot"]
        stage = job["stage"]
        if stage == "wipe":
            rmtree(slot)  # whatever an older release or an abandoned job left there
            _mkdirs(slot)
            job["stage"] = "manifest"
            write_state(self.st)
            return True
        if stage == "manifest":
            name, size, sha, url = "manifest.json", job["size"], job["sha"], job["url"]
        else:
            f = job.get("f")
            if f is None:  # the manifest is read once per file, not on every pass
                f = self._next_file(job, slot)
                if f is None:
                    self._install()
                    return False
            name, size, sha = f
            url = job["url"].rsplit("/", 1)[0] + "/" + name
        path = slot + "/" + name
        if self.sock is None:
            if time.ticks_diff(self.retry_ms, time.ticks_ms()) > 0:
                return False
            have = _size(path + ".part")
            if have > size:
                os.remove(path + ".part")
                have = 0
            self.sha = _sha256_of(path + ".part")
            if have < size:
                self._request(url, have, size)
                if self.sock is None:
                    return False
        if self.left:
            if not self._receive(path + ".part"):
                return False
            if self.left:
                return True
        self._close()
        # The whole file is on flash: check it, then give it its name.
        if _size(path + ".part") != size:
            self._failed("short file")
            return False
        if binascii.hexlify(self.sha.digest()).decode() != sha:  # type: ignore[union-attr]
            if stage == "manifest":
                self._refuse("bad_manifest_hash")
            else:
                self._refuse("bad_hash: " + name)
            return False
        os.rename(path + ".part", path)
        if stage == "manifest":
            reason = self._check_manifest(path)
            if reason:
                self._refuse(reason)
                return False
            job["stage"] = "files"
        else:
            job["i"] += 1
            job["f"] = None
            # An ack every quarter of the files.
            pct = job["i"] * 100 // max(1, job.get("n", 1))
            if pct // 25 != self.pct // 25:
                self.pct = pct
                self._ack(True, None, "download", ',"pct":%d' % pct)
        write_state(self.st)
        self.failures = 0
        return True

    def _manifest(self, slot):
        with open(slot + "/manifest.json") as f:
            return json.load(f)

    def _next_file(self, job, slot):
        """[name, size, sha256] of file job["i"] (kept in the job), or None after the last."""
        files = self._manifest(slot)["files"]
        job["n"] = len(files)
        f = files[job["i"]] if job["i"] < len(files) else None
        files = None
        if f is not None:
            f = job["f"] = [f["name"], f["size"], f["sha256"]]
        gc.collect()  # the parsed manifest is garbage now: collect it before the download
        return f

    def _check_manifest(self, path):
        """None if the manifest at path is signed by the release key and fits this node,
        else the reason for the ack."""
        job = self.st["job"]
        gc.collect()  # the most contiguous heap there is for the big-int work
        import ed25519  # only now: its bytecode and big-int work are needed for this alone
        try:
            ok = ed25519.verify(binascii.unhexlify(self.node.cfg["ota_pubkey"]),
                                binascii.unhexlify(job["sig"]), path=path)
        finally:
            sys.modules.pop("ed25519", None)
            sys.modules.pop("sha512", None)
            gc.collect()
        if not ok:
            return "bad_signature"
        try:
            m = self._manifest(_ROOT + "/" + job["slot"])
            files = m["files"]
            for f in files:
                n = f["name"]
                if not isinstance(n, str) or n.startswith("/") or ".." in n or n in ("main.py", "main.mpy") \
                        or not isinstance(f["size"], int) or len(f["sha256"]) != 64:
                    return "bad_manifest"
                _mkdirs((_ROOT + "/" + job["slot"] + "/" + n).rsplit("/", 1)[0])
        except (ValueError, KeyError, TypeError):
            return "bad_manifest"
        if m.get("version") != job["ver"]:
            return "wrong_version"
        boards = m.get("boards") or []
        for name in board_names(self.node.cfg):
            if name in boards:
                break
        else:
            return "wrong_board"
        if _ver(m.get("min_micropython", "0")) > tuple(sys.implementation.version[:3]):
            return "micropython_too_old"
        # .mpy files load only on the bytecode version they were compiled for.
        mpy = m.get("mpy")
        if mpy is not None and mpy != getattr(sys.implementation, "_mpy", mpy) & 0xFF:
            return "wrong_mpy_version"
        print("ota: manifest of %s verified, %d files" % (job["ver"], len(files)))
        self._ack(True, None, "verified")
        return None

    def _request(self, url, start, end):
        """GET url with Range: bytes=start-(end-1); leaves self.sock open at the body."""
        tls, host, port, path = split_url(url)
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        sock = socket.socket(ai[0], socket.SOCK_STREAM)
        try:
            sock.settimeout(_TIMEOUT_S)
            sock.connect(ai[-1])
            if tls:
                import ssl
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ca = self.node.cfg["mqtt"].get("ca")
                if ca:
                    ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
                    ctx.load_verify_locations(cafile=ca)
                sock = ctx.wrap_socket(sock, server_hostname=host)
            sock.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nRange: bytes=%d-%d\r\nConnection: close\r\n\r\n"
                       % (path.encode(), host.encode(), start, end - 1))
            # Status line and headers (RFC 9110 15.3.7: 206 with Content-Range).
            status = sock.readline()
            length = None
            while True:
                line = sock.readline()
                if not line or line == b"\r\n":
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            code = int(status.split(b" ")[1])
        except (OSError, ValueError, IndexError) as e:
            sock.close()
            self._failed("request: %s" % e)
            return
        if code == 404:
            sock.close()
            self._refuse("not_found")
            return
        if code != 206 and not (code == 200 and start == 0) or length is None:
            sock.close()
            self._failed("HTTP %d" % code)
            return
        if length != end - start:
            sock.close()
            self._refuse("size_mismatch")
            return
        self.sock = sock
        self.left = length
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def _receive(self, path):
        """Reads the next piece (up to _CHUNK) into the preallocated buffer, appends it to
        path and hashes it. False if nothing has arrived yet."""
        if not self.poller.poll(0):  # type: ignore[union-attr]  # only while a response is open
            return False
        if self.buf is None:
            self.buf = bytearray(_CHUNK)
        n = min(_CHUNK, self.left)
        # readinto waits for all n bytes (bounded by the socket timeout); the response's
        # Content-Length says they are coming.
        mv = memoryview(self.buf)[:n]
        got = self.sock.readinto(mv)  # type: ignore[union-attr]
        if not got:
            raise OSError("connection closed")
        mv = mv[:got]
        with open(path, "ab") as f:  # closed per chunk: on flash before it counts
            f.write(mv)
        self.sha.update(mv)  # type: ignore[union-attr]
        self.left -= got
        return True

    def _close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.poller = None
        self.left = 0

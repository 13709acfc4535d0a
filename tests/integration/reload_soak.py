#!/usr/bin/env python3
"""Reloads under load: many keep-alive clients classify an image with one
model while that model is republished and reloaded over and over.

    reload_soak.py --base http://127.0.0.1:PORT --pid SERVER_PID \\
        --dir MODELS_DIR --good A.safetensors --good B.safetensors \\
        [--name digits] [--connections 64] [--seconds 20] [--reloads 50]

The server must serve MODELS_DIR with --enable-model-control and version 1
of NAME (MODELS_DIR/NAME/1.safetensors) already in place. Reload i is done
by SIGHUP when i is even, by POST /v2/repository/models/NAME/load when odd;
the files published cycle through: a valid new version, a corrupt one, a
truncated one, the newest version removed (an older one comes back). Every
file is written under a temporary name and renamed, except the truncated
one (a writer that crashed half way).

Checks (each failure is one line on stdout, and the exit status is 1):
  * every answer is 200, no connection fails;
  * every answer's model_version is one that served during that request
    (a version's time runs from the start of the reload that brought it to
    the end of the reload that replaced it; corrupt versions never serve);
  * the server's RSS at the end is within 10% (--rss-tolerance) of its
    RSS at the start (both sampled under load, after the warm-up, old
    versions freed).
Standard library only.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import struct
import sys
import threading
import time
import urllib.parse
import zlib


def png_digit():
    """A 28x28 grey PNG of a vertical stroke (a '1')."""
    w = h = 28
    px = bytearray(w * h)
    for y in range(5, 23):
        for x in (13, 14):
            px[y * w + x] = 255
    raw = b"".join(b"\x00" + bytes(px[y * w:(y + 1) * w]) for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client(threading.Thread):
    def __init__(self, host, port, path, body, stop):
        super().__init__(daemon=True)
        self.host, self.port, self.path, self.body, self.stop = host, port, path, body, stop
        self.answers = []      # (t0, t1, status, version)
        self.conn_errors = []

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                t0 = time.monotonic()
                conn.request("POST", self.path, body=self.body,
                             headers={"Content-Type": "image/png"})
                r = conn.getresponse()
                data = r.read()
                t1 = time.monotonic()
                ver = None
                if r.status == 200:
                    try:
                        ver = json.loads(data).get("model_version")
                    except ValueError:
                        ver = "unparsable"
                self.answers.append((t0, t1, r.status, ver, data[:200]))
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.conn_errors.append("%s: %s" % (type(e).__name__, e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def post(host, port, path):
    c = http.client.HTTPConnection(host, port, timeout=60)
    c.request("POST", path, body=b"", headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def get_json(host, port, path, method="GET"):
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request(method, path, body=b"" if method == "POST" else None)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, json.loads(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--good", action="append", required=True)
    ap.add_argument("--name", default="digits")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--reloads", type=int, default=50)
    ap.add_argument("--rss-tolerance", type=float, default=0.10)
    # Sanitizer builds hold freed memory back on purpose (ASan's quarantine
    # keeps up to 256 MB): their runs look for leaks and races, not RSS.
    ap.add_argument("--no-rss-check", action="store_true")
    a = ap.parse_args()

    u = urllib.parse.urlparse(a.base)
    host, port = u.hostname, u.port
    mdir = os.path.join(a.dir, a.name)
    problems = []

    def index_state():
        """{version: state} of NAME in the repository index."""
        st, idx = get_json(host, port, "/v2/repository/index", "POST")
        if st != 200:
            raise RuntimeError("index answered %d" % st)
        return {int(e["version"]): e["state"] for e in idx if e["name"] == a.name}

    def serving():
        st, doc = get_json(host, port, "/v1/models")
        for m in doc["models"]:
            if m["name"] == a.name:
                return m["version"]
        return None

    stop = threading.Event()
    t_first = time.monotonic()
    clients = [Client(host, port, "/predict?model=" + a.name, png_digit(), stop)
               for _ in range(a.connections)]
    for c in clients:
        c.start()
    time.sleep(min(1.0, a.seconds / 10))
    rss_start = rss_kib(a.pid)

    # Version timeline: version -> list of [start, end] while it served.
    live = {serving(): [[0.0, None]]}
    current = serving()
    gap = max(0.05, (a.seconds - 2 * min(1.0, a.seconds / 10)) / max(1, a.reloads))
    next_version = max(index_state()) + 1
    published = []   # valid versions published, newest last
    bad = set()

    for i in range(a.reloads):
        step = i % 4
        t_begin = time.monotonic()
        expect_bad = None
        if step == 0:                       # a valid new version
            v = next_version
            next_version += 1
            src = a.good[(i // 4) % len(a.good)]
            tmp = os.path.join(mdir, ".%d.tmp" % v)
            shutil.copyfile(src, tmp)
            os.rename(tmp, os.path.join(mdir, "%d.safetensors" % v))
            published.append(v)
        elif step == 1:                     # a corrupt one
            v = next_version
            next_version += 1
            tmp = os.path.join(mdir, ".%d.tmp" % v)
            with open(tmp, "wb") as f:
                f.write(os.urandom(5000))
            os.rename(tmp, os.path.join(mdir, "%d.safetensors" % v))
            expect_bad = v
        elif step == 2:                     # a truncated one, written in place
            v = next_version
            next_version += 1
            with open(a.good[0], "rb") as f:
                half = f.read()[: os.path.getsize(a.good[0]) // 2]
            with open(os.path.join(mdir, "%d.safetensors" % v), "wb") as f:
                f.write(half)
            expect_bad = v
        else:                               # newest version and the bad ones removed
            for name in os.listdir(mdir):
                stem = name.split(".")[0]
                if stem.isdigit() and (int(stem) in bad or (published and int(stem) == published[-1])):
                    os.unlink(os.path.join(mdir, name))
            if published:
                published.pop()
            bad.clear()
        if expect_bad is not None:
            bad.add(expect_bad)

        if i % 2 == 0:
            os.kill(a.pid, signal.SIGHUP)
        else:
            st, body = post(host, port, "/v2/repository/models/%s/load" % a.name)
            want = 422 if expect_bad is not None else 200
            if st != want:
                problems.append("reload %d (load API): status %d, expected %d: %s"
                                % (i, st, want, body[:200]))
        # Wait for the reload to show: the expected version serves and a
        # bad file is reported.
        want_serving = published[-1] if published else 1
        deadline = time.monotonic() + 20
        while True:
            try:
                states = index_state()
                now = serving()
            except (OSError, RuntimeError, ValueError) as e:
                problems.append("reload %d: cannot read the state: %s" % (i, e))
                break
            done = now == want_serving and (expect_bad is None or states.get(expect_bad) == "UNAVAILABLE")
            if step == 3:
                done = done and all(states.get(b) is None for b in bad)
            if done:
                break
            if time.monotonic() > deadline:
                problems.append("reload %d: expected version %s serving%s; index %s, serving %s"
                                % (i, want_serving, "" if expect_bad is None else
                                   " and %d UNAVAILABLE" % expect_bad, states, now))
                break
            time.sleep(0.02)
        t_end = time.monotonic()
        if now != current:
            if current in live:
                live[current][-1][1] = t_end
            live.setdefault(now, []).append([t_begin, None])
            current = now
        rest = gap - (time.monotonic() - t_begin)
        if rest > 0:
            time.sleep(rest)

    t_stop = time.monotonic() - t_first
    time.sleep(0.3)
    rss_end = rss_kib(a.pid)
    stop.set()
    for c in clients:
        c.join(60)

    n = 0
    statuses = {}
    for c in clients:
        for (t0, t1, st, ver, head) in c.answers:
            n += 1
            statuses[st] = statuses.get(st, 0) + 1
            if st != 200:
                if statuses[st] <= 3:
                    problems.append("status %d: %r" % (st, head))
                continue
            spans = live.get(ver)
            if not spans or not any(s <= t1 and (e is None or e >= t0) for s, e in spans):
                problems.append("answer with version %r at %.3f..%.3f, which did not serve then "
                                "(served: %r)" % (ver, t0, t1, live))
        for e in c.conn_errors[:3]:
            problems.append("connection error: " + e)
    conn_errors = sum(len(c.conn_errors) for c in clients)
    non2xx = sum(v for k, v in statuses.items() if k != 200)
    if not a.no_rss_check and rss_start and abs(rss_end - rss_start) > a.rss_tolerance * rss_start:
        problems.append("RSS %d KiB at the end, %d KiB at the start (more than %g%% apart)"
                        % (rss_end, rss_start, 100 * a.rss_tolerance))
    if n == 0:
        problems.append("no answers at all")
    print("soak: %d answers in %.1fs over %d connections, %d reloads, %d non-2xx, "
          "%d connection errors, versions served %s, RSS %d -> %d KiB"
          % (n, t_stop, a.connections, a.reloads, non2xx, conn_errors,
             sorted(v for v in live if v is not None), rss_start, rss_end))
    for p in problems[:20]:
        print("FAIL\t" + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

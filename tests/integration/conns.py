#!/usr/bin/env python3
"""How a running mnist-server takes connections, over raw sockets.

    conns.py balance PID PORT     (--threads 2 --balance-connections on)
    conns.py limit PORT N closed|waits  (--max-connections N)
    conns.py exhaust PID PORT     (server started with few descriptors)

balance: 32 keep-alive connections, each answered once, must sit 16 and 16
in the two worker threads' epoll sets (read from /proc/PID/fdinfo); after
the 16 of one worker close, 16 new ones must go back to it.
limit: N connections are answered; the next one is closed unanswered
(closed: --balance-connections) or waits unanswered in the backlog
(waits: the default); once one of the N has closed, a new connection (or
the waiting one) is answered.
exhaust: connections past what the descriptor limit allows wait in the
backlog while those open keep being answered; they are answered once
others close.

Output: one line per case, "PASS<TAB>what" or "FAIL<TAB>what<TAB>why", as
the shell suites read them. Only the standard library; only loopback;
Linux (/proc).
"""
import os
import socket
import sys
import time

HOST = "127.0.0.1"
REQ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def verdict(ok, what, why=""):
    print(("PASS\t%s" % what) if ok else ("FAIL\t%s\t%s" % (what, why)), flush=True)
    return ok


def read_response(s):
    """One HTTP response from s: (status, body), or (None, why)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            d = s.recv(4096)
        except socket.timeout:
            return None, "timeout"
        except OSError as e:
            return None, "reset (%s)" % e.strerror
        if not d:
            return None, "closed"
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    n = 0
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        d = s.recv(4096)
        if not d:
            return None, "closed mid-body"
        body += d
    return status, body


def ask(s):
    """A GET /healthz on s: its status, or a string saying what happened."""
    try:
        s.sendall(REQ)
    except OSError as e:
        return "send failed (%s)" % e.strerror
    st, body = read_response(s)
    return st if st is not None else body


def connect(port, timeout=10.0):
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def open_answered(port, k):
    """k keep-alive connections, each asked once. Returns (conns, None),
    or (conns so far, why) at the first one not answered 200."""
    conns = []
    for i in range(k):
        s = connect(port)
        r = ask(s)
        if r != 200:
            s.close()
            return conns, "connection %d: %r" % (i + 1, r)
        conns.append(s)
    return conns, None


def epoll_sets(pid):
    """Per epoll instance of pid, how many sockets it watches."""
    socks = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)).startswith("socket:"):
                socks.add(int(fd))
        except OSError:
            pass
    sets = []
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != "anon_inode:[eventpoll]":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                tfds = [int(ln.split()[1]) for ln in f if ln.startswith("tfd:")]
        except OSError:
            continue
        sets.append(sum(1 for t in tfds if t in socks))
    return sorted(sets)


def wait_sets(pid, want, secs=10.0):
    """Polls epoll_sets until it equals want (sorted); returns the last."""
    deadline = time.time() + secs
    got = epoll_sets(pid)
    while got != want and time.time() < deadline:
        time.sleep(0.05)
        got = epoll_sets(pid)
    return got


def balance(pid, port):
    conns, why = open_answered(port, 32)
    if why:
        return verdict(False, "32 keep-alive connections answered", why)
    got = wait_sets(pid, [16, 16])
    verdict(got == [16, 16], "32 connections opened one after another: 16 and 16 in the two workers",
            "sockets per worker: %s" % got)
    # The server numbers its sockets in the order they came, and the
    # workers take every other number: these 16 are all one worker's.
    for s in conns[0::2]:
        s.close()
    got = wait_sets(pid, [0, 16])
    verdict(got == [0, 16], "the 16 connections of one worker closed: 0 and 16",
            "sockets per worker: %s" % got)
    fresh, why = open_answered(port, 16)
    if why:
        return verdict(False, "16 new connections answered", why)
    got = wait_sets(pid, [16, 16])
    verdict(got == [16, 16], "16 new connections: back to 16 and 16",
            "sockets per worker: %s" % got)
    bad = [r for r in (ask(s) for s in conns[1::2] + fresh) if r != 200]
    verdict(not bad, "all 32 connections still answered", "%d not: %r" % (len(bad), bad[:3]))
    for s in conns[1::2] + fresh:
        s.close()


def limit(port, n, how):
    conns, why = open_answered(port, n)
    if why:
        return verdict(False, "%d connections answered at --max-connections %d" % (n, n), why)
    verdict(True, "%d connections answered at --max-connections %d" % (n, n))
    extra = connect(port, timeout=1.0)
    r = ask(extra)
    if how == "closed":
        extra.close()
        verdict(r in ("closed", "reset (Connection reset by peer)") or
                str(r).startswith("send failed"),
                "connection %d: closed without an answer" % (n + 1), "got %r" % (r,))
    else:
        verdict(r == "timeout", "connection %d: waits unanswered" % (n + 1), "got %r" % (r,))
    conns.pop().close()
    if how == "closed":
        deadline = time.time() + 10
        r = None
        while time.time() < deadline:
            s = connect(port, timeout=5.0)
            r = ask(s)
            s.close()
            if r == 200:
                break
            time.sleep(0.1)
        verdict(r == 200, "one of the %d closed: a new connection is answered" % n,
                "got %r" % (r,))
    else:
        extra.settimeout(10.0)
        st, body = read_response(extra)
        extra.close()
        verdict(st == 200, "one of the %d closed: the waiting connection is answered" % n,
                "got %r %r" % (st, body))
    bad = [r for r in (ask(s) for s in conns) if r != 200]
    verdict(not bad, "the other %d still answered" % len(conns), "%r" % bad[:3])
    for s in conns:
        s.close()


def exhaust(pid, port):
    # Open connections until new ones stop being answered: the server is
    # out of descriptors and those past it wait in the backlog.
    conns, waiting = [], None
    for _ in range(200):
        s = connect(port, timeout=1.0)
        r = ask(s)
        if r == 200:
            conns.append(s)
            continue
        waiting = s
        break
    if not verdict(waiting is not None and r == "timeout" and len(conns) >= 4,
                   "out of descriptors: a new connection waits unanswered",
                   "%d answered, then %r" % (len(conns), r)):
        return
    bad = [r for r in (ask(s) for s in conns) if r != 200]
    verdict(not bad, "the %d connections open keep being answered" % len(conns), "%r" % bad[:3])
    for s in conns[:4]:
        s.close()
    waiting.settimeout(10.0)
    st, body = read_response(waiting)
    verdict(st == 200, "four closed: the waiting connection is answered", "got %r %r" % (st, body))
    s = connect(port)
    r = ask(s)
    verdict(r == 200, "and a new one after it", "got %r" % (r,))
    s.close()
    waiting.close()
    for s in conns[4:]:
        s.close()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    mode = sys.argv[1]
    if mode == "balance":
        balance(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "limit" and len(sys.argv) > 4 and sys.argv[4] in ("closed", "waits"):
        limit(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif mode == "exhaust":
        exhaust(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

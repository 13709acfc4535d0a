#!/usr/bin/env python3
"""Hostile HTTP against a running mnist-server, over raw sockets.

    abuse.py PORT                 framing, header, request-line and
                                  pipelining cases
    abuse.py --slowloris PORT T   slow and stalled clients against a
                                  server started with --timeout T

Each case sends bytes curl would never send and asserts the exact status
line, or that the connection is closed without an answer, and then that a
fresh GET /healthz still answers 200. Output: one line per case,
"PASS<TAB>what" or "FAIL<TAB>what<TAB>why", as run.sh reads them.
Only the standard library; only loopback.
"""
import socket
import sys
import time

HOST = "127.0.0.1"


def exchange(port, data, timeout=10.0, shut=False):
    """Sends data, reads until the server closes. Returns (bytes, how):
    how is 'closed', 'reset' or 'timeout' (server kept it open)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    out = b""
    how = "closed"
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        how = "timeout"
    except (ConnectionResetError, BrokenPipeError):
        how = "reset"
    finally:
        s.close()
    return out, how


def statuses(resp):
    """Status codes of the responses in resp, in order: each is a status
    line, header fields and a Content-Length body. Parsing stops at
    anything else, which then shows up as a missing status."""
    codes = []
    while resp.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in resp:
        head, rest = resp.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        try:
            codes.append(int(lines[0][9:12]))
        except ValueError:
            break
        n = 0
        for h in lines[1:]:
            k, _, v = h.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v.strip())
        resp = rest[n:]
    return codes


def healthz(port):
    out, _ = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                            b"Connection: close\r\n\r\n", timeout=5)
    return statuses(out) == [200]


results = []


def check(port, what, ok, why):
    if ok and not healthz(port):
        ok, why = False, "GET /healthz did not answer 200 afterwards"
    results.append((what, ok, why))


def case(port, what, data, want, close=True, shut=False, json=None,
         wait=10.0, or_reset=False):
    """want: list of status codes expected in order ([] = none at all);
    close: the server must close the connection afterwards (within wait
    seconds); json: a substring the (last) body must contain; or_reset:
    a connection reset with no answer also passes (the server closed while
    the client was still sending, so the answer was lost in transit)."""
    out, how = exchange(port, data, shut=shut, timeout=wait)
    got = statuses(out)
    why = ""
    if or_reset and not got and how == "reset":
        pass
    elif got != want:
        why = "statuses %s, expected %s; answer: %r" % (got, want, out[:300])
    elif close and how == "timeout":
        why = "connection left open after the answer"
    elif json and json.encode() not in out:
        why = "body lacks %r: %r" % (json, out[-300:])
    check(port, what, not why, why)


def req(line, *headers, body=b""):
    h = b"".join(x.encode() + b"\r\n" for x in headers)
    return line.encode() + b"\r\n" + h + b"\r\n" + body


PNG_CT = "Content-Type: image/png"


def framing(port):
    # Request smuggling: two lengths that disagree (RFC 9112 6.3 says 400
    # and close); identical repeats are harmless and answered normally.
    case(port, "two different Content-Length headers: 400, connection closed",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT, "Content-Length: 5",
             "Content-Length: 7", body=b"abcdefg"), [400],
         json='"bad_request"')
    case(port, "a Content-Length list '5, 7': 400",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
             "Content-Length: 5, 7", body=b"abcdefg"), [400])
    case(port, "identical repeated Content-Length: 0 on GET: 200",
         req("GET /healthz HTTP/1.1", "Host: t", "Content-Length: 0",
             "Content-Length: 0", "Connection: close"), [200])
    case(port, "Content-Length with Transfer-Encoding: chunked: 400, closed",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT, "Content-Length: 4",
             "Transfer-Encoding: chunked", body=b"0\r\n\r\n"), [400],
         json='"bad_request"')
    case(port, "negative Content-Length: 400",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
             "Content-Length: -1"), [400])
    case(port, "non-numeric Content-Length: 400",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
             "Content-Length: 12abc"), [400])
    case(port, "Content-Length of 10^23: 413",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
             "Content-Length: 99999999999999999999999"), [413])
    # Chunked abuse.
    case(port, "chunked with a non-hex chunk size: 400",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
             "Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n"),
         [400])
    case(port, "chunked with a 2^72 chunk size: 413",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
             "Transfer-Encoding: chunked",
             body=b"FFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n"), [413])
    big = b"".join(b"10000\r\n" + b"a" * 65536 + b"\r\n" for _ in range(40))
    case(port, "chunked body past the 2 MiB limit: 413 JSON",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
             "Transfer-Encoding: chunked", "Connection: close",
             body=big + b"0\r\n\r\n"), [413], json='"payload_too_large"')
    case(port, "Transfer-Encoding: gzip (not implemented): 501, closed",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
             "Transfer-Encoding: gzip", body=b"abc"), [501],
         json='"not_implemented"')
    # Host (RFC 9112 3.2): required once in HTTP/1.1.
    case(port, "HTTP/1.1 without Host: 400",
         req("GET /healthz HTTP/1.1", "Connection: close"), [400],
         json='"bad_request"')
    case(port, "HTTP/1.1 with two Host headers: 400",
         req("GET /healthz HTTP/1.1", "Host: a", "Host: b",
             "Connection: close"), [400], json='"bad_request"')
    case(port, "HTTP/1.0 without Host: 200",
         req("GET /healthz HTTP/1.0"), [200])


def request_lines(port):
    case(port, "HTTP/0.9 request line 'GET /healthz': 400, closed",
         b"GET /healthz\r\n\r\n", [400])
    case(port, "HTTP/2.0 request line: 505, closed",
         req("GET /healthz HTTP/2.0", "Host: t"), [505])
    case(port, "HTTP/2 connection preface (PRI *): 505, closed",
         b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [505])
    case(port, "unknown method FOO on /healthz: 405 JSON",
         req("FOO /healthz HTTP/1.1", "Host: t", "Connection: close"), [405],
         json='"method_not_allowed"')
    case(port, "100 KB query string: 414, closed",
         req("GET /healthz?" + "a" * 100000 + " HTTP/1.1", "Host: t"), [414])
    case(port, "12 KB query string that fits: 200",
         req("GET /healthz?q=" + "a" * 12000 + " HTTP/1.1", "Host: t",
             "Connection: close"), [200])
    case(port, "9 KB percent-encoded ?model=: 404 JSON, name cut short",
         req("POST /predict?model=" + "%41" * 3000 + " HTTP/1.1", "Host: t",
             PNG_CT, "Content-Length: 0", "Connection: close"), [404],
         json='"model_not_found"')


def headers(port):
    flood = ["X-H%d: v" % i for i in range(5000)]
    case(port, "5000 header fields: 431, closed",
         req("GET /healthz HTTP/1.1", "Host: t", *flood), [431])
    case(port, "one 20 KB header field: 431, closed",
         req("GET /healthz HTTP/1.1", "Host: t", "X-Big: " + "a" * 20000),
         [431])
    case(port, "10 MB of headers: 431, closed",
         req("GET /healthz HTTP/1.1", "Host: t",
             *("X-%d: %s" % (i, "b" * 1000) for i in range(10000))), [431],
         or_reset=True)


def pipelining(port):
    three = (req("GET /healthz HTTP/1.1", "Host: t") +
             req("GET /readyz HTTP/1.1", "Host: t") +
             req("GET /nope HTTP/1.1", "Host: t", "Connection: close"))
    case(port, "3 pipelined GETs in one write: 200, 200, 404 in order",
         three, [200, 200, 404])
    post = req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
               "Content-Length: 4", body=b"abcd")
    case(port, "pipelined POST (bad image) then GET: 400, 200",
         post + req("GET /healthz HTTP/1.1", "Host: t", "Connection: close"),
         [400, 200])
    # The error decided from the headers ends the connection (its body is
    # never read), so what follows it is not answered as a request.
    smuggled = req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
                   "Content-Length: 5", "Content-Length: 40",
                   body=b"abcde") + req("GET /nope HTTP/1.1", "Host: t")
    case(port, "request hidden behind conflicting lengths is never answered",
         smuggled, [400])


def slowloris(port, timeout_s):
    """Slow clients: 200 connections each send a partial request line and
    go quiet. A normal client must still be answered at once, and the
    server must close the quiet ones within the idle timeout (+ slack)."""
    n = 200
    socks = []
    for i in range(n):
        s = socket.create_connection((HOST, port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        socks.append(s)
    t0 = time.monotonic()
    worst = 0.0
    for _ in range(10):
        t = time.monotonic()
        ok = healthz(port)
        worst = max(worst, time.monotonic() - t)
        if not ok:
            break
    why = "" if ok and worst < 1.0 else (
        "a normal client waited %.2f s (answered: %s)" % (worst, ok))
    results.append(("%d slow clients: 10 normal requests answered, slowest "
                    "%.0f ms" % (n, worst * 1000), not why, why))
    # Every slow connection must be closed by the server.
    closed = 0
    deadline = t0 + timeout_s + 5
    for s in socks:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            while s.recv(4096):
                pass
            closed += 1
        except (socket.timeout, BlockingIOError):
            pass
        except (ConnectionResetError, BrokenPipeError):
            closed += 1
        s.close()
    took = time.monotonic() - t0
    why = "" if closed == n else "%d of %d still open after %.1f s" % (
        n - closed, n, took)
    check(port, "%d slow clients closed by the server after the %d s timeout "
          "(%.1f s)" % (n, timeout_s, took), not why, why)
    # A body cut short by a half-close is a slow client too: no answer,
    # and the connection is closed at the idle timeout.
    case(port, "chunked body cut short (client half-closes): no answer, "
         "closed within the %d s timeout" % timeout_s,
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT,
             "Transfer-Encoding: chunked", body=b"5\r\nab"), [], shut=True,
         wait=timeout_s + 5.0)


def main():
    args = sys.argv[1:]
    if args and args[0] == "--slowloris":
        slowloris(int(args[1]), int(args[2]))
    else:
        port = int(args[0])
        framing(port)
        request_lines(port)
        headers(port)
        pipelining(port)
    for what, ok, why in results:
        if ok:
            print("PASS\t%s" % what)
        else:
            print("FAIL\t%s\t%s" % (what, why))
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())

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


def responses(resp):
    """The responses in resp, in order, as (status, {header: value}) with
    lower-case header names: each is a status line, header fields and a
    Content-Length body. Parsing stops at anything else, which then shows
    up as a missing status."""
    out = []
    while resp.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in resp:
        head, rest = resp.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        try:
            code = int(lines[0][9:12])
        except ValueError:
            break
        fields = {}
        for h in lines[1:]:
            k, _, v = h.partition(b":")
            fields[k.strip().lower()] = v.strip()
        out.append((code, fields))
        resp = rest[int(fields.get(b"content-length", 0)):]
    return out


def statuses(resp):
    """The status codes of the responses in resp, in order."""
    return [code for code, _ in responses(resp)]


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
    elif json and responses(out)[-1][1].get(b"content-type") != b"application/json":
        why = "Content-Type %r, not application/json" % (
            responses(out)[-1][1].get(b"content-type"),)
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
    # The request target's limit is 8 KiB (README, "Security"): over it,
    # 414 with the JSON envelope, on any route and with or without a body.
    case(port, "request target of exactly 8192 bytes: 200",
         req("GET /healthz?" + "a" * (8192 - 9) + " HTTP/1.1", "Host: t",
             "Connection: close"), [200])
    case(port, "request target of 8193 bytes: 414 JSON",
         req("GET /healthz?" + "a" * (8193 - 9) + " HTTP/1.1", "Host: t",
             "Connection: close"), [414], json='"uri_too_long"')
    case(port, "40 KB query string on a POST with a body: 414 JSON, closed",
         req("POST /predict?" + "a" * 40000 + " HTTP/1.1", "Host: t", PNG_CT,
             "Content-Length: 4", body=b"abcd"), [414],
         json='"uri_too_long"')
    case(port, "12 KB /v2 path: 414 in the protocol's JSON error shape",
         req("GET /v2/models/" + "m" * 12000 + " HTTP/1.1", "Host: t",
             "Connection: close"), [414], json='{"error":"request target')
    # Past the connection's 64 KiB memory pool libmicrohttpd answers
    # before the server sees the request: its own 414 page (HTML).
    case(port, "100 KB query string: 414 (libmicrohttpd's page), closed",
         req("GET /healthz?" + "a" * 100000 + " HTTP/1.1", "Host: t"), [414])
    case(port, "8 KB percent-encoded ?model=: 404 JSON, name cut short",
         req("POST /predict?model=" + "%41" * 2700 + " HTTP/1.1", "Host: t",
             PNG_CT, "Content-Length: 0", "Connection: close"), [404],
         json='"model_not_found"')


def headers(port):
    # At most 100 header fields and 16 KiB of them ("Name: value\r\n"
    # each); over either, 431 with the JSON envelope.
    hundred = ["X-H%d: v" % i for i in range(98)]
    case(port, "100 header fields: 200",
         req("GET /healthz HTTP/1.1", "Host: t", "Connection: close",
             *hundred), [200])
    case(port, "101 header fields: 431 JSON",
         req("GET /healthz HTTP/1.1", "Host: t", "Connection: close",
             *hundred, "X-One-More: v"), [431], json='"headers_too_large"')
    # Host: t\r\n and Connection: close\r\n are 28 bytes, X-Big: ...\r\n 9 + n.
    case(port, "header fields of exactly 16384 bytes: 200",
         req("GET /healthz HTTP/1.1", "Host: t", "Connection: close",
             "X-Big: " + "a" * (16384 - 28 - 9)), [200])
    case(port, "header fields of 16385 bytes: 431 JSON",
         req("GET /healthz HTTP/1.1", "Host: t", "Connection: close",
             "X-Big: " + "a" * (16385 - 28 - 9)), [431],
         json='"headers_too_large"')
    case(port, "one 40 KB header field on a POST with a body: 431 JSON, closed",
         req("POST /predict HTTP/1.1", "Host: t", PNG_CT, "Content-Length: 4",
             "X-Big: " + "a" * 40000, body=b"abcd"), [431],
         json='"headers_too_large"')
    case(port, "500 header fields: 431 JSON",
         req("GET /healthz HTTP/1.1", "Host: t", "Connection: close",
             *("X-H%d: v" % i for i in range(500))), [431],
         json='"headers_too_large"')
    # Past the 64 KiB pool: libmicrohttpd's own 431 page (HTML).
    flood = ["X-H%d: v" % i for i in range(5000)]
    case(port, "5000 header fields: 431 (libmicrohttpd's page), closed",
         req("GET /healthz HTTP/1.1", "Host: t", *flood), [431])
    case(port, "10 MB of headers: 431 (libmicrohttpd's page), closed",
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

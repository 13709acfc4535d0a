#!/usr/bin/env python3
"""Dynamic batching over HTTP (standard library only).

    batchcheck.py answers OFF_BASE ON_BASE MNIST_DIR THREADS ROUNDS
        the same requests, sequentially to a server with batching off and
        THREADS at a time (ROUNDS each) to one with batching on: POST
        /predict (PNG, JSON base64, PNG with ?include=preprocessed),
        /predict/batch (multipart) and v2
        infer (UINT8 tensors of 1 and 3 images), on two models. Every
        answer must equal the unbatched one: the same prediction and
        label, probabilities within TOL. Then the batching server's
        /metrics must show batches of more than one image.
    batchcheck.py drain BASE MNIST_DIR THREADS PID
        THREADS clients post to BASE while PID gets SIGTERM: every request
        the server took is answered (200, or 503 while draining) - none
        hangs or is cut off - and new connections are refused after.

Why a tolerance: a batch of n images runs the same layers as a batch of
one, but a kernel may add a dot product's terms in another order for
another batch size (nn/gemm.h: batch-1 dense layers take a dot-product
path). Reordering a float sum of K products moves it by at most
gamma(K) = K u / (1 - K u), u = 2^-24, of the sum of the products'
magnitudes (Higham, eq. 3.5; tests/unit/tol.h); the largest fan-in of
the models here is 64*5*5 = 1600, gamma(1600) = 9.5e-5. Probabilities
lie in 0..1 and softmax moves each by at most half the largest change of
a logit, so TOL = 1e-4 covers what reordering does; any other image's
answer (a mix-up between requests) misses it by orders of magnitude, and
the prediction must match exactly.

Output: "PASS<TAB>what" or "FAIL<TAB>what<TAB>why" lines; exit status 1
if anything failed.
"""
import base64
import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse

TOL = 1e-4
NIMG = 12
failures = 0


def report(ok, what, why=""):
    global failures
    if ok:
        print(f"PASS\t{what}")
    else:
        failures += 1
        print(f"FAIL\t{what}\t{why}")


def idx_images(mnist, n):
    with open(os.path.join(mnist, "t10k-images-idx3-ubyte"), "rb") as f:
        data = f.read(16 + n * 784)
    return [data[16 + i * 784:16 + (i + 1) * 784] for i in range(n)]


def png_gray(px, w=28, h=28):
    """An 8-bit gray PNG of px (bytes, row-major)."""
    import struct
    import zlib
    raw = b"".join(b"\x00" + px[y * w:(y + 1) * w] for y in range(h))

    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def post(base, path, body, ctype, timeout=60):
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        c.request("POST", path, body=body, headers={"Content-Type": ctype})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def get(base, path):
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


BND = "batchcheckBND"


def requests_for(images, pngs):
    """(name, path, body, content type, parse) for every kind of request;
    parse turns a 200 body into a list of (prediction, label, probs)."""
    def ours(d):
        return [(d["prediction"], d["label"], d["probabilities"])]

    def ours_prep(d):
        # The picture of what the model saw (a PNG in base64) must be the
        # same bytes as unbatched: its bytes join the compared values.
        png = base64.b64decode(d["preprocessed"]["png"])
        return [(d["prediction"], d["label"], d["probabilities"] + list(png))]

    def batch(d):
        return [(r["prediction"], r["label"], r["probabilities"]) for r in d["results"]]

    def v2(d):
        out = {o["name"]: o for o in d["outputs"]}
        k = out["probabilities"]["shape"][1]
        p = out["probabilities"]["data"]
        return [(out["prediction"]["data"][i], out["label"]["data"][i], p[i * k:(i + 1) * k])
                for i in range(len(out["prediction"]["data"]))]

    reqs = []
    for model in ("cnn", "lenet"):
        q = "" if model == "cnn" else "?model=lenet"
        for i in range(NIMG):
            reqs.append((f"{model} png {i}", "/predict" + q, pngs[i], "image/png", ours))
            if i % 3 == 0:
                js = json.dumps({"image": base64.b64encode(pngs[i]).decode()}).encode()
                reqs.append((f"{model} json {i}", "/predict" + q, js, "application/json", ours))
            if i % 5 == 0:
                qp = q + ("&" if q else "?") + "include=preprocessed"
                reqs.append((f"{model} png+preprocessed {i}", "/predict" + qp, pngs[i],
                             "image/png", ours_prep))
            if i % 4 == 0:
                parts = b""
                for j in (i, i + 1, i + 2):
                    parts += (f"--{BND}\r\nContent-Disposition: form-data; name=\"image\"; "
                              f"filename=\"{j}.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
                    parts += pngs[j % NIMG] + b"\r\n"
                parts += f"--{BND}--\r\n".encode()
                reqs.append((f"{model} batch {i}", "/predict/batch" + q, parts,
                             f"multipart/form-data; boundary={BND}", batch))
            for n in (1, 3):
                if n == 3 and i % 2:
                    continue
                data = b"".join(images[(i + j) % NIMG] for j in range(n))
                body = json.dumps({"inputs": [{"name": "input", "datatype": "UINT8",
                                               "shape": [n, 1, 28, 28],
                                               "data": list(data)}]}).encode()
                reqs.append((f"{model} v2 x{n} {i}", f"/v2/models/{model}/infer", body,
                             "application/json", v2))
    return reqs


def same(got, want):
    if len(got) != len(want):
        return f"{len(got)} answers, expected {len(want)}"
    for k, ((gp, gl, gprob), (wp, wl, wprob)) in enumerate(zip(got, want)):
        if (gp, gl) != (wp, wl):
            return f"image {k}: prediction {gp}/{gl}, unbatched {wp}/{wl}"
        if len(gprob) != len(wprob):
            return f"image {k}: {len(gprob)} probabilities, unbatched {len(wprob)}"
        worst = max(abs(a - b) for a, b in zip(gprob, wprob))
        if not worst <= TOL:
            return f"image {k}: probabilities differ by {worst:.3g} > {TOL}"
    return None


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$', line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def answers(off, on, mnist, threads, rounds):
    images = idx_images(mnist, NIMG)
    pngs = [png_gray(px) for px in images]
    reqs = requests_for(images, pngs)
    want = {}
    for name, path, body, ctype, parse in reqs:
        st, b = post(off, path, body, ctype)
        if st != 200:
            report(False, f"unbatched answer of {name}", f"status {st}: {b[:200]!r}")
            return
        want[name] = parse(json.loads(b))
    report(True, f"{len(reqs)} requests answered by the server without batching")

    bad, done, lock = [], [0], threading.Lock()

    def client(t):
        for r in range(rounds):
            # Each client walks the list from its own offset: concurrent
            # requests differ in kind, model and image.
            for k in range(len(reqs)):
                name, path, body, ctype, parse = reqs[(k + t * 7 + r) % len(reqs)]
                try:
                    st, b = post(on, path, body, ctype)
                    why = f"status {st}: {b[:200]!r}" if st != 200 else same(
                        parse(json.loads(b)), want[name])
                except (OSError, ValueError, KeyError) as e:
                    why = f"{type(e).__name__}: {e}"
                with lock:
                    done[0] += 1
                    if why:
                        bad.append(f"{name}: {why}")

    th = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    report(not bad, f"{done[0]} answers from {threads} concurrent clients equal the unbatched ones",
           "; ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""))

    st, text = get(on, "/metrics")
    for model in ("cnn", "lenet"):
        n = metric_sum(text, "mnist_batch_size_count", model=model)
        ones = metric_sum(text, "mnist_batch_size_bucket", model=model, le="1")
        images_run = metric_sum(text, "mnist_batch_size_sum", model=model)
        waits = metric_sum(text, "mnist_batch_queue_wait_seconds_count", model=model)
        report(st == 200 and n > ones and images_run > n and waits > 0,
               f"{model}: {int(n)} batched forward passes of {int(images_run)} images, "
               f"{int(n - ones)} of them with more than one image",
               f"/metrics status {st}, count {n}, le=1 {ones}, sum {images_run}, waits {waits}")
    st, text = get(off, "/metrics")
    report(st == 200 and metric_sum(text, "mnist_batch_size_count") == 0
           and "# TYPE mnist_batch_size histogram" in text,
           "without batching: the batch families are declared, with no samples")


def drain(base, mnist, threads, pid):
    pngs = [png_gray(px) for px in idx_images(mnist, NIMG)]
    stop = threading.Event()
    stats = {"ok": 0, "draining": 0, "refused": 0}
    bad, lock = [], threading.Lock()

    def client(t):
        k = t
        while not stop.is_set():
            k += 1
            try:
                st, b = post(base, "/predict", pngs[k % NIMG], "image/png", timeout=30)
            except ConnectionRefusedError:
                with lock:
                    stats["refused"] += 1
                time.sleep(0.01)
                continue
            except (OSError, http.client.HTTPException) as e:
                # A request sent as the listener closed may be reset
                # before the server read it; one it read is answered.
                if isinstance(e, (ConnectionResetError, BrokenPipeError,
                                  http.client.RemoteDisconnected)):
                    continue
                with lock:
                    bad.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                if st == 200:
                    stats["ok"] += 1
                elif st == 503:
                    stats["draining"] += 1
                else:
                    bad.append(f"status {st}: {b[:120]!r}")

    th = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for t in th:
        t.start()
    time.sleep(1.0)
    os.kill(pid, signal.SIGTERM)
    time.sleep(1.5)
    stop.set()
    for t in th:
        t.join(60)
    hung = sum(t.is_alive() for t in th)
    report(not bad and hung == 0 and stats["ok"] > 0,
           f"SIGTERM under load with batching: {stats['ok']} answered, {stats['draining']} 503, "
           f"{stats['refused']} refused after, none cut off or hung",
           f"{hung} clients hung; " + "; ".join(bad[:5]))


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "answers":
        answers(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif len(sys.argv) == 6 and sys.argv[1] == "drain":
        drain(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

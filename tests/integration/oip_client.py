#!/usr/bin/env python3
"""A client for the Open Inference Protocol (KServe v2 REST) and Triton's
binary tensor data extension, written from the protocol's text, that
checks a running mnist-server (standard library only).

    oip_client.py protocol BASE MODEL MNIST_DIR MAX_BATCH RESPDIR MANIFEST
        every v2 endpoint, each input datatype and shape, outputs, ids,
        version paths, the binary extension, a 100-image UINT8 batch
        against POST /predict on the same images as PNG, JSON bodies on
        /predict and /predict/batch, hostile requests, metrics
    oip_client.py cors BASE ALLOWED_ORIGIN
        a server started with --cors-origin ALLOWED_ORIGIN (and others)
    oip_client.py cors-any BASE
        a server allowing every origin ('*')
    oip_client.py cors-off BASE
        a server without CORS configured

Output: one line per check, "PASS<TAB>what" or "FAIL<TAB>what<TAB>why";
exit status 1 if anything failed. Every answered request is appended to
MANIFEST (METHOD TAB PATH TAB STATUS TAB CONTENT_TYPE TAB BODY_FILE) for
the spec check in validate.py.

Conventions of the server under test (README.md, openapi.yaml): one input
"input"; UINT8/FP32 [N,1,28,28] | [N,28,28] | [N,784]; BYTES [N] of
base64 PNGs; outputs "probabilities" FP32 [N,classes], "prediction"
INT64 [N], "label" BYTES [N], and "ood_score" FP32 [N] for a model with
out-of-distribution statistics (equal to POST /predict's "ood_score");
each model serves version "1".
"""
import base64
import http.client
import json
import os
import re
import socket
import struct
import sys
import time
import urllib.parse
import zlib

RESULTS = []
CTX = {"respdir": None, "manifest": None, "n": 0}


def report(ok, what, why=""):
    RESULTS.append(ok)
    if ok:
        print("PASS\t%s" % what)
    else:
        print("FAIL\t%s\t%s" % (what, str(why).replace("\n", " ")[:1500]))
    sys.stdout.flush()


class Check:
    """Collects the problems of one check; reports once on exit."""

    def __init__(self, what):
        self.what, self.problems = what, []

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            self.problems.append("%s: %s" % (et.__name__, ev))
        report(not self.problems, self.what, "; ".join(self.problems))
        return True

    def want(self, cond, why):
        if not cond:
            self.problems.append(why)
        return cond


# ---------------------------------------------------------------- HTTP

class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def has_header(self, name):
        return self.header(name) is not None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def short(self):
        return "status %d, body %r" % (self.status, self.body[:300])


def request(base, method, path, body=None, headers=None, record=True):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    hdrs = dict(headers or {})
    if body is not None and isinstance(body, str):
        body = body.encode("utf-8")
    conn.request(method, path, body=body, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    resp = Resp(r.status, r.getheaders(), data)
    conn.close()
    if record and CTX["manifest"]:
        CTX["n"] += 1
        f = os.path.join(CTX["respdir"], "oip-%d" % CTX["n"])
        with open(f, "wb") as out:
            out.write(data)
        with open(CTX["manifest"], "a") as m:
            m.write("%s\t%s\t%d\t%s\t%s\n" % (method, path, r.status,
                                              resp.header("Content-Type") or "", f))
    return resp


def post_json(base, path, obj, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return request(base, "POST", path, json.dumps(obj), h)


def error_object_ok(c, r, status):
    """The protocol's error object with the right status."""
    if not c.want(r.status == status, "expected %d, got %s" % (status, r.short())):
        return False
    ct = r.header("Content-Type") or ""
    c.want(ct.startswith("application/json"), "error content type %r" % ct)
    try:
        j = r.json()
    except ValueError as e:
        c.want(False, "error body is not JSON: %s" % e)
        return False
    return c.want(isinstance(j, dict) and isinstance(j.get("error"), str) and j["error"],
                  "error body is not {\"error\": \"...\"}: %r" % j)


def live(base):
    try:
        r = request(base, "GET", "/v2/health/live", record=False)
        return r.status == 200
    except OSError:
        return False


# ---------------------------------------------------------------- data

def read_idx_images(path, indices):
    with open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051 or rows != 28 or cols != 28:
            raise ValueError("%s: not an IDX image file" % path)
        out = []
        for i in indices:
            f.seek(16 + i * 784)
            out.append(f.read(784))
        return out


def png_gray(pixels, w=28, h=28):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = b"".join(b"\x00" + pixels[y * w:(y + 1) * w] for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def nest(flat, shape):
    """Row-major flat list -> nested lists of the given shape."""
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0]
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def argmax(p):
    return max(range(len(p)), key=lambda i: p[i])


def outputs_by_name(j):
    return {o["name"]: o for o in j.get("outputs", [])}


def flat(x):
    if isinstance(x, list):
        out = []
        for e in x:
            out.extend(flat(e))
        return out
    return [x]


def parse_binary_response(r):
    """Splits a binary-extension response into (json, {name: bytes})."""
    hl = r.header("Inference-Header-Content-Length")
    if hl is None:
        return r.json(), {}
    n = int(hl)
    j = json.loads(r.body[:n].decode("utf-8"))
    rest, off, out = r.body[n:], 0, {}
    for o in j["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        out[o["name"]] = rest[off:off + size]
        off += size
    if off != len(rest):
        raise ValueError("binary part is %d bytes, outputs declare %d" % (len(rest), off))
    return j, out


def decode_bytes_tensor(b):
    out, off = [], 0
    while off < len(b):
        n, = struct.unpack("<I", b[off:off + 4])
        out.append(b[off + 4:off + 4 + n].decode("utf-8"))
        off += 4 + n
    return out


# ---------------------------------------------------------------- protocol

def check_protocol(base, model, mnist_dir, max_batch):
    infer = "/v2/models/%s/infer" % model
    nclasses = 10

    with Check("GET /v2: server metadata with name, version and the binary_tensor_data extension") as c:
        r = request(base, "GET", "/v2")
        if c.want(r.status == 200, r.short()):
            j = r.json()
            c.want(isinstance(j.get("name"), str) and j["name"], "name: %r" % j)
            c.want(isinstance(j.get("version"), str) and j["version"], "version: %r" % j)
            c.want(isinstance(j.get("extensions"), list) and "binary_tensor_data" in j["extensions"],
                   "extensions: %r" % j.get("extensions"))

    with Check("GET /v2/health/live and /v2/health/ready: 200") as c:
        r = request(base, "GET", "/v2/health/live")
        c.want(r.status == 200 and r.json().get("live") is True, "live: " + r.short())
        r = request(base, "GET", "/v2/health/ready")
        c.want(r.status == 200 and r.json().get("ready") is True, "ready: " + r.short())

    meta = None
    with Check("GET /v2/models/%s: metadata with platform, versions, input and outputs (-1 batch)" % model) as c:
        r = request(base, "GET", "/v2/models/%s" % model)
        if c.want(r.status == 200, r.short()):
            meta = j = r.json()
            c.want(j.get("name") == model, "name %r" % j.get("name"))
            c.want(isinstance(j.get("platform"), str) and j["platform"], "platform %r" % j.get("platform"))
            c.want(j.get("versions") == ["1"], "versions %r" % j.get("versions"))
            ins = j.get("inputs") or []
            c.want(len(ins) == 1 and ins[0].get("name") == "input" and ins[0].get("datatype") == "UINT8"
                   and ins[0].get("shape") == [-1, 1, 28, 28], "inputs %r" % ins)
            outs = {o.get("name"): o for o in j.get("outputs") or []}
            has_ood = "ood_score" in outs
            c.want(set(outs) - {"ood_score"} == {"probabilities", "prediction", "label"}, "outputs %r" % list(outs))
            if has_ood:
                c.want(outs["ood_score"].get("datatype") == "FP32" and outs["ood_score"].get("shape") == [-1],
                       "ood_score %r" % outs["ood_score"])
            if "probabilities" in outs:
                nclasses = outs["probabilities"]["shape"][1]
                c.want(outs["probabilities"].get("datatype") == "FP32"
                       and outs["probabilities"].get("shape") == [-1, nclasses], "probabilities %r" % outs)
            c.want(outs.get("prediction", {}).get("datatype") == "INT64"
                   and outs["prediction"].get("shape") == [-1], "prediction %r" % outs.get("prediction"))
            c.want(outs.get("label", {}).get("datatype") == "BYTES"
                   and outs["label"].get("shape") == [-1], "label %r" % outs.get("label"))

    with Check("model metadata and readiness by version path; unknown model or version: 404") as c:
        r = request(base, "GET", "/v2/models/%s/versions/1" % model)
        c.want(r.status == 200 and meta is not None and r.json() == meta, "versions/1: " + r.short())
        r = request(base, "GET", "/v2/models/%s/ready" % model)
        c.want(r.status == 200 and r.json() == {"name": model, "ready": True}, "ready: " + r.short())
        r = request(base, "GET", "/v2/models/%s/versions/1/ready" % model)
        c.want(r.status == 200 and r.json().get("ready") is True, "versions/1/ready: " + r.short())
        for p in ("/v2/models/%s/versions/2" % model, "/v2/models/%s/versions/2/ready" % model,
                  "/v2/models/nosuchmodel", "/v2/models/nosuchmodel/ready",
                  "/v2/models/%s/versions/" % model, "/v2/models/%s/extra" % model):
            error_object_ok(c, request(base, "GET", p), 404)

    # The 100 MNIST test images used below: as UINT8 tensors and as PNGs.
    idx = list(range(100))
    imgs = read_idx_images(os.path.join(mnist_dir, "t10k-images-idx3-ubyte"), idx)
    pngs = [png_gray(im) for im in imgs]

    # The reference: POST /predict on each PNG.
    ref = []
    with Check("POST /predict on 100 MNIST test images as PNG (the reference answers)") as c:
        for k, p in enumerate(pngs):
            r = request(base, "POST", "/predict?model=%s" % model, p, {"Content-Type": "image/png"},
                        record=(k == 0))
            if not c.want(r.status == 200, "image %d: %s" % (k, r.short())):
                break
            ref.append(r.json())
    if len(ref) != 100:
        return

    # The metadata says whether the model answers with "ood_score"; the
    # reference answers (POST /predict) must agree.
    has_ood = meta is not None and any(o.get("name") == "ood_score" for o in meta.get("outputs") or [])
    with Check("POST /predict's ood_score is present exactly when the v2 metadata lists it") as c:
        c.want(all((r.get("ood_score") is not None) == has_ood for r in ref),
               "has_ood %r, first answer %r" % (has_ood, ref[0].get("ood_score")))
    all_outputs = ["probabilities", "prediction", "label"] + (["ood_score"] if has_ood else [])

    def compare_ood(c, scores, first, n, what):
        # The same image and features as /predict, a different batch size:
        # summation order moves features by float rounding, which the
        # distance carries over relative to its size; 1e-3 leaves room.
        c.want(len(scores) == n, "%s: %d ood scores for %d images" % (what, len(scores), n))
        for i, sc in enumerate(scores[:n]):
            want = ref[first + i]["ood_score"]
            if not abs(sc - want) <= 1e-3 * max(1.0, want):
                c.want(False, "%s: image %d: ood_score %r, /predict says %r" % (what, first + i, sc, want))
                return

    def compare(c, j, first, n, what, tol=1e-5):
        outs = outputs_by_name(j)
        if has_ood:
            if c.want("ood_score" in outs, "%s: no ood_score output" % what):
                c.want(outs["ood_score"].get("shape") == [n] and outs["ood_score"].get("datatype") == "FP32",
                       "%s: ood_score %r" % (what, {k: v for k, v in outs["ood_score"].items() if k != "data"}))
                compare_ood(c, flat(outs["ood_score"]["data"]), first, n, what)
        probs = flat(outs["probabilities"]["data"])
        preds = outs["prediction"]["data"]
        labels = outs["label"]["data"]
        c.want(outs["probabilities"]["shape"] == [n, nclasses], "%s: probabilities shape %r"
               % (what, outs["probabilities"]["shape"]))
        c.want(len(probs) == n * nclasses and len(preds) == n and len(labels) == n,
               "%s: %d probabilities, %d predictions, %d labels" % (what, len(probs), len(preds), len(labels)))
        worst = 0.0
        for i in range(n):
            want = ref[first + i]
            p = probs[i * nclasses:(i + 1) * nclasses]
            worst = max([worst] + [abs(a - b) for a, b in zip(p, want["probabilities"])])
            if argmax(p) != want["prediction"] or preds[i] != want["prediction"] or labels[i] != want["label"]:
                c.want(False, "%s: image %d: argmax %d, prediction %r, label %r; /predict says %d (%r)"
                       % (what, first + i, argmax(p), preds[i], labels[i], want["prediction"], want["label"]))
                return
        c.want(worst <= tol, "%s: probabilities differ from /predict by %g (> %g)" % (what, worst, tol))

    n_small = min(4, max_batch)
    small = [v for im in imgs[:n_small] for v in im]
    for shape, nested in (([n_small, 1, 28, 28], False), ([n_small, 28, 28], True),
                          ([n_small, 784], False), ([n_small, 1, 28, 28], True)):
        for dt in ("UINT8", "FP32"):
            vals = small if dt == "UINT8" else [float(struct.unpack("<f", struct.pack("<f", v / 255.0))[0])
                                                 for v in small]
            data = nest(vals, shape) if nested else vals
            what = "infer %s %s %s data" % (dt, shape, "nested" if nested else "flat")
            with Check("%s: answers equal POST /predict on the same images" % what) as c:
                r = post_json(base, infer, {"inputs": [{"name": "input", "shape": shape,
                                                        "datatype": dt, "data": data}]})
                if c.want(r.status == 200, r.short()):
                    j = r.json()
                    c.want(j.get("model_name") == model, "model_name %r" % j.get("model_name"))
                    c.want(j.get("model_version") == "1", "model_version %r" % j.get("model_version"))
                    c.want("id" not in j, "an id without one in the request: %r" % j.get("id"))
                    c.want([o["name"] for o in j["outputs"]] == all_outputs,
                           "outputs %r" % [o["name"] for o in j["outputs"]])
                    compare(c, j, 0, n_small, what)

    with Check("infer UINT8 [100,28,28], 100 MNIST test images: same argmax as POST /predict on "
               "their PNGs, probabilities within 1e-5") as c:
        if c.want(max_batch >= 100, "the server's --max-batch is %d" % max_batch):
            allpix = [v for im in imgs for v in im]
            r = post_json(base, infer, {"id": "batch-100", "inputs": [
                {"name": "input", "shape": [100, 28, 28], "datatype": "UINT8", "data": allpix}]})
            if c.want(r.status == 200, r.short()):
                j = r.json()
                c.want(j.get("id") == "batch-100", "id %r" % j.get("id"))
                compare(c, j, 0, 100, "UINT8 batch of 100")

    b64 = [base64.b64encode(p).decode("ascii") for p in pngs]
    with Check("infer BYTES [16] base64 PNGs: the same pipeline as POST /predict (equal answers)") as c:
        r = post_json(base, infer, {"inputs": [{"name": "input", "shape": [16], "datatype": "BYTES",
                                                "data": b64[:16]}]})
        if c.want(r.status == 200, r.short()):
            compare(c, r.json(), 0, 16, "BYTES", tol=1e-6)

    with Check("requested outputs: only those, in the order asked; the id is echoed") as c:
        r = post_json(base, infer, {"id": "my-id \u00e9 \"q\"", "inputs": [
            {"name": "input", "shape": [1, 784], "datatype": "UINT8", "data": list(imgs[3])}],
            "outputs": [{"name": "label"}, {"name": "prediction"}]})
        if c.want(r.status == 200, r.short()):
            j = r.json()
            c.want(j.get("id") == "my-id \u00e9 \"q\"", "id %r" % j.get("id"))
            c.want([o["name"] for o in j["outputs"]] == ["label", "prediction"], "outputs %r" % j["outputs"])
            o = outputs_by_name(j)
            c.want(o.get("prediction", {}).get("data") == [ref[3]["prediction"]]
                   and o["prediction"]["datatype"] == "INT64" and o["prediction"]["shape"] == [1],
                   "prediction %r" % o.get("prediction"))
            c.want(o.get("label", {}).get("data") == [ref[3]["label"]] and o["label"]["datatype"] == "BYTES",
                   "label %r" % o.get("label"))

    with Check("version path: /versions/1/infer answers, /versions/2/infer and an unknown model are 404") as c:
        body = {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8", "data": list(imgs[0])}]}
        r = post_json(base, "/v2/models/%s/versions/1/infer" % model, body)
        c.want(r.status == 200 and r.json().get("model_version") == "1", r.short())
        error_object_ok(c, post_json(base, "/v2/models/%s/versions/2/infer" % model, body), 404)
        error_object_ok(c, post_json(base, "/v2/models/nosuchmodel/infer", body), 404)

    # Binary tensor data extension.
    def binary_request(header, tensors, ctype="application/octet-stream"):
        hj = json.dumps(header).encode("utf-8")
        return request(base, "POST", infer, hj + b"".join(tensors),
                       {"Content-Type": ctype, "Inference-Header-Content-Length": str(len(hj))})

    with Check("binary extension: UINT8 input and all outputs as binary data round trip") as c:
        n = 8
        hdr = {"id": "bin", "inputs": [{"name": "input", "shape": [n, 1, 28, 28], "datatype": "UINT8",
                                        "parameters": {"binary_data_size": n * 784}}],
               "parameters": {"binary_data_output": True}}
        r = binary_request(hdr, imgs[:n])
        if c.want(r.status == 200, r.short()):
            c.want(r.has_header("Inference-Header-Content-Length"), "no Inference-Header-Content-Length")
            j, bins = parse_binary_response(r)
            c.want(j.get("id") == "bin", "id %r" % j.get("id"))
            for o in j["outputs"]:
                c.want("data" not in o and "binary_data_size" in (o.get("parameters") or {}),
                       "output %s is not binary: %r" % (o["name"], o))
            probs = struct.unpack("<%df" % (n * nclasses), bins["probabilities"])
            preds = struct.unpack("<%dq" % n, bins["prediction"])
            labels = decode_bytes_tensor(bins["label"])
            jj = {"outputs": [{"name": "probabilities", "shape": [n, nclasses], "data": list(probs)},
                              {"name": "prediction", "data": list(preds)},
                              {"name": "label", "data": labels}]}
            if has_ood:
                jj["outputs"].append({"name": "ood_score", "shape": [n], "datatype": "FP32",
                                      "data": list(struct.unpack("<%df" % n, bins.get("ood_score", b"")))})
            compare(c, jj, 0, n, "binary UINT8")

    with Check("binary extension: FP32 input, one binary output and one JSON output") as c:
        n = 3
        fl = [v / 255.0 for im in imgs[10:10 + n] for v in im]
        hdr = {"inputs": [{"name": "input", "shape": [n, 784], "datatype": "FP32",
                           "parameters": {"binary_data_size": n * 784 * 4}}],
               "outputs": [{"name": "prediction", "parameters": {"binary_data": True}},
                           {"name": "label"}]}
        r = binary_request(hdr, [struct.pack("<%df" % len(fl), *fl)])
        if c.want(r.status == 200, r.short()):
            j, bins = parse_binary_response(r)
            preds = list(struct.unpack("<%dq" % n, bins.get("prediction", b"")))
            c.want(preds == [ref[10 + i]["prediction"] for i in range(n)], "predictions %r" % preds)
            c.want(outputs_by_name(j)["label"]["data"] == [ref[10 + i]["label"] for i in range(n)],
                   "labels %r" % outputs_by_name(j)["label"])

    with Check("binary extension: BYTES input of raw PNGs (4-byte length + bytes)") as c:
        n = 4
        tens = b"".join(struct.pack("<I", len(p)) + p for p in pngs[20:20 + n])
        hdr = {"inputs": [{"name": "input", "shape": [n], "datatype": "BYTES",
                           "parameters": {"binary_data_size": len(tens)}}]}
        r = binary_request(hdr, [tens])
        if c.want(r.status == 200, r.short()):
            c.want(not r.has_header("Inference-Header-Content-Length"), "JSON-only answer has the header")
            preds = outputs_by_name(r.json())["prediction"]["data"]
            c.want(preds == [ref[20 + i]["prediction"] for i in range(n)], "predictions %r" % preds)

    # Hostile requests: each 4xx with {"error": ...}, and the server lives.
    def good_input(**kw):
        d = {"name": "input", "shape": [1, 784], "datatype": "UINT8", "data": list(imgs[0])}
        d.update(kw)
        return d

    cases = [
        ("shape/data count mismatch", 400, {"inputs": [good_input(shape=[2, 784])]}),
        ("unknown datatype", 400, {"inputs": [good_input(datatype="UINT3")]}),
        ("unsupported datatype INT32", 400, {"inputs": [good_input(datatype="INT32")]}),
        ("wrong image size 32x32", 400, {"inputs": [good_input(shape=[1, 32, 32], data=[0] * 1024)]}),
        ("UINT8 value 256", 400, {"inputs": [good_input(data=[256] + [0] * 783)]}),
        ("UINT8 value -1", 400, {"inputs": [good_input(data=[-1] + [0] * 783)]}),
        ("FP32 value 2.5", 400, {"inputs": [good_input(datatype="FP32", data=[2.5] + [0.0] * 783)]}),
        ("empty inputs", 400, {"inputs": []}),
        ("inputs not a list", 400, {"inputs": {"name": "input"}}),
        ("no inputs", 400, {"id": "x"}),
        ("two inputs", 400, {"inputs": [good_input(), good_input()]}),
        ("unknown input name", 400, {"inputs": [good_input(name="pixels")]}),
        ("shape product overflows 64 bits", 400,
         {"inputs": [good_input(shape=[2 ** 32, 2 ** 32, 2], data=[1])]}),
        ("dimension over 64 bits", 400, {"inputs": [good_input(shape=[2 ** 64, 784])]}),
        ("negative dimension", 400, {"inputs": [good_input(shape=[-1, 784])]}),
        ("non-numeric data", 400, {"inputs": [good_input(data=["a"] * 784)]}),
        ("boolean data", 400, {"inputs": [good_input(data=[True] * 784)]}),
        ("invalid base64", 400, {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                                             "data": ["not base64!"]}]}),
        ("BYTES element not a PNG", 400, {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                                                      "data": [base64.b64encode(b"hello").decode()]}]}),
        ("unknown requested output", 400, {"inputs": [good_input()], "outputs": [{"name": "logits"}]}),
        ("batch over --max-batch", 413, {"inputs": [good_input(shape=[max_batch + 1, 784], data=[0])]}),
    ]
    for what, status, body in cases:
        with Check("hostile infer: %s: %d {\"error\"}, server still live" % (what, status)) as c:
            error_object_ok(c, post_json(base, infer, body), status)
            c.want(live(base), "server not live afterwards")

    raw_cases = [
        ("truncated JSON", 400, json.dumps({"inputs": [good_input()]})[:-40].encode(), {}),
        ("not JSON at all", 400, b"\x00\x01binary", {}),
        ("JSON nested 100,000 levels deep", 400, b'{"inputs":' + b"[" * 100000 + b"]" * 100000 + b"}", {}),
        ("JSON nested 100,000 levels deep in data", 400,
         b'{"inputs":[{"name":"input","shape":[1,784],"datatype":"UINT8","data":'
         + b"[" * 100000 + b"]" * 100000 + b"}]}", {}),
        ("binary header length larger than the body", 400,
         json.dumps({"inputs": [good_input()]}).encode(), {"Inference-Header-Content-Length": "999999"}),
        ("binary header length not a number", 400,
         json.dumps({"inputs": [good_input()]}).encode(), {"Inference-Header-Content-Length": "12x"}),
        ("binary_data_size larger than the data", 400,
         json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8",
                                 "parameters": {"binary_data_size": 784}}]}).encode() + b"\0" * 100,
         "auto"),
    ]
    for what, status, body, hdrs in raw_cases:
        with Check("hostile infer: %s: %d {\"error\"}, server still live" % (what, status)) as c:
            h = {"Content-Type": "application/json"}
            if hdrs == "auto":
                h["Inference-Header-Content-Length"] = str(body.index(b"\0"))
            else:
                h.update(hdrs)
            error_object_ok(c, request(base, "POST", infer, body, h), status)
            c.want(live(base), "server not live afterwards")

    with Check("hostile infer: wrong Content-Type (text/plain): 415 {\"error\"}") as c:
        error_object_ok(c, request(base, "POST", infer, json.dumps({"inputs": [good_input()]}),
                                   {"Content-Type": "text/plain"}), 415)
    with Check("GET on an infer path: 405 {\"error\"} with Allow: POST") as c:
        r = request(base, "GET", infer)
        error_object_ok(c, r, 405)
        c.want("POST" in (r.header("Allow") or ""), "Allow %r" % r.header("Allow"))

    with Check("hostile infer: a 50 MB body is refused 413 from its headers, before it is sent") as c:
        u = urllib.parse.urlsplit(base)
        s = socket.create_connection((u.hostname, u.port), timeout=10)
        try:
            s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: %d\r\n\r\n" % (infer, 50 * 1024 * 1024)).encode())
            t0 = time.time()
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            head, _, rest = got.partition(b"\r\n\r\n")
            m = re.match(rb"HTTP/1\.[01] (\d+)", head)
            c.want(m and m.group(1) == b"413", "answer %r" % got[:200])
            clen = re.search(rb"(?i)content-length:\s*(\d+)", head)
            while clen and len(rest) < int(clen.group(1)):
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            try:
                c.want(isinstance(json.loads(rest.decode()).get("error"), str), "body %r" % rest[:200])
            except ValueError:
                c.want(False, "body is not JSON: %r" % rest[:200])
            c.want(time.time() - t0 < 10, "the answer took %.1f s" % (time.time() - t0))
        except socket.timeout:
            c.want(False, "no answer within 10 s without the body: the server waited for it")
        finally:
            s.close()
        c.want(live(base), "server not live afterwards")

    # Our own API with JSON bodies, answered as the multipart upload is.
    with Check("POST /predict {\"image\": base64 PNG}: the same answer as the multipart upload") as c:
        r = post_json(base, "/predict?model=%s" % model, {"image": b64[5]})
        if c.want(r.status == 200, r.short()):
            j = r.json()
            c.want(j["prediction"] == ref[5]["prediction"] and j["probabilities"] == ref[5]["probabilities"]
                   and j["model"] == model and j["label"] == ref[5]["label"], "answer %r" % j)
    with Check("POST /predict/batch {\"images\": [...]}: results in order, a bad element has its own error") as c:
        r = post_json(base, "/predict/batch?model=%s" % model, {"images": [b64[6], "%%%", b64[7]]})
        if c.want(r.status == 200, r.short()):
            res = r.json().get("results", [])
            c.want(len(res) == 3, "results %r" % res)
            if len(res) == 3:
                c.want(res[0].get("prediction") == ref[6]["prediction"]
                       and res[0].get("probabilities") == ref[6]["probabilities"], "result 0 %r" % res[0])
                c.want("error" in res[1] and "prediction" not in res[1], "result 1 %r" % res[1])
                c.want(res[2].get("prediction") == ref[7]["prediction"], "result 2 %r" % res[2])
    for what, path, body, status in (
            ("invalid base64", "/predict", {"image": "not base64!"}, 400),
            ("no image field", "/predict", {"picture": b64[0]}, 400),
            ("truncated JSON", "/predict", None, 400),
            ("images over --max-batch", "/predict/batch", {"images": [b64[0]] * (max_batch + 1)}, 413)):
        with Check("POST %s JSON with %s: %d in the API's error envelope" % (path, what, status)) as c:
            raw = json.dumps(body) if body is not None else '{"image": "aGVsbG8'
            r = request(base, "POST", path, raw, {"Content-Type": "application/json"})
            if c.want(r.status == status, r.short()):
                e = r.json().get("error")
                c.want(isinstance(e, dict) and e.get("code") and e.get("message"), "envelope %r" % r.json())

    with Check("metrics count v2 requests by route label") as c:
        r = request(base, "GET", "/metrics", record=False)
        text = r.body.decode()
        def total(route, status):
            pat = re.compile(r"^mnist_http_requests_total\{(.*)\}\s+(\S+)$", re.M)
            s = 0.0
            for labels, v in pat.findall(text):
                if 'route="%s"' % route in labels and 'status="%s"' % status in labels:
                    s += float(v)
            return s
        n_inf = total("/v2/models/{name}/infer", 200)
        c.want(n_inf >= 10, "infer 200 count %g" % n_inf)
        c.want(total("/v2/models/{name}/infer", 400) >= 20, "infer 400 count %g"
               % total("/v2/models/{name}/infer", 400))
        c.want(total("/v2/health/live", 200) >= 20, "live count %g" % total("/v2/health/live", 200))
        c.want(total("/v2", 200) >= 1, "/v2 count %g" % total("/v2", 200))
        c.want(re.search(r'mnist_http_request_duration_seconds_count\{[^}]*route="/v2/models/\{name\}/infer"',
                         text), "no latency histogram for the infer route")


# ---------------------------------------------------------------- CORS

PREFLIGHT_HDRS = ("content-type", "x-request-id", "inference-header-content-length")


def check_cors(base, allowed):
    with Check("CORS: an allowed origin gets Access-Control-Allow-Origin and Vary: Origin") as c:
        for method, path in (("GET", "/v2/health/live"), ("GET", "/healthz"), ("GET", "/v2/models/nosuch")):
            r = request(base, method, path, headers={"Origin": allowed}, record=False)
            c.want(r.header("Access-Control-Allow-Origin") == allowed,
                   "%s %s: Allow-Origin %r" % (method, path, r.header("Access-Control-Allow-Origin")))
            c.want("origin" in (r.header("Vary") or "").lower(), "%s: Vary %r" % (path, r.header("Vary")))
    with Check("CORS: a disallowed origin gets no Access-Control-* headers") as c:
        for method, path in (("GET", "/v2/health/live"), ("OPTIONS", "/v2/models/x/infer")):
            r = request(base, method, path, headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"}, record=False)
            c.want(not any(k.lower().startswith("access-control-") for k, _ in r.headers),
                   "%s %s: %r" % (method, path, r.headers))
    with Check("CORS: preflight OPTIONS 204 with Allow-Methods, Allow-Headers and Max-Age") as c:
        for path in ("/v2/models/cnn/infer", "/predict"):
            r = request(base, "OPTIONS", path, headers={
                "Origin": allowed, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,inference-header-content-length"}, record=False)
            c.want(r.status == 204, "%s: status %d" % (path, r.status))
            c.want(r.header("Access-Control-Allow-Origin") == allowed, "%s: Allow-Origin %r"
                   % (path, r.header("Access-Control-Allow-Origin")))
            methods = (r.header("Access-Control-Allow-Methods") or "").upper()
            c.want("POST" in methods and "GET" in methods, "Allow-Methods %r" % methods)
            hdrs = (r.header("Access-Control-Allow-Headers") or "").lower()
            c.want(all(h in hdrs for h in PREFLIGHT_HDRS), "Allow-Headers %r" % hdrs)
            c.want(re.fullmatch(r"\d+", r.header("Access-Control-Max-Age") or ""), "Max-Age %r"
                   % r.header("Access-Control-Max-Age"))
            c.want(len(r.body) == 0, "preflight has a body")
    with Check("CORS: an actual POST infer from the allowed origin carries the header") as c:
        r = request(base, "POST", "/v2/models/cnn/infer", json.dumps({"inputs": []}),
                    {"Origin": allowed, "Content-Type": "application/json"}, record=False)
        c.want(r.status in (400, 404) and r.header("Access-Control-Allow-Origin") == allowed,
               "status %d, Allow-Origin %r" % (r.status, r.header("Access-Control-Allow-Origin")))


def check_cors_any(base):
    with Check("CORS '*': any origin gets Access-Control-Allow-Origin: *") as c:
        r = request(base, "GET", "/v2/health/ready", headers={"Origin": "https://anything.example"}, record=False)
        c.want(r.header("Access-Control-Allow-Origin") == "*", "Allow-Origin %r"
               % r.header("Access-Control-Allow-Origin"))
        r = request(base, "OPTIONS", "/v2", headers={"Origin": "https://x.example",
                                                     "Access-Control-Request-Method": "GET"}, record=False)
        c.want(r.status == 204 and r.header("Access-Control-Allow-Origin") == "*", "preflight %d %r"
               % (r.status, r.headers))


def check_cors_off(base):
    with Check("CORS off by default: no Access-Control-* headers; OPTIONS is 405") as c:
        r = request(base, "GET", "/v2/health/live", headers={"Origin": "https://a.example"}, record=False)
        c.want(not any(k.lower().startswith("access-control-") for k, _ in r.headers), "headers %r" % r.headers)
        r = request(base, "OPTIONS", "/v2/models/cnn/infer", headers={
            "Origin": "https://a.example", "Access-Control-Request-Method": "POST"}, record=False)
        c.want(r.status == 405, "OPTIONS status %d" % r.status)
        c.want(not any(k.lower().startswith("access-control-") for k, _ in r.headers), "headers %r" % r.headers)


def main(a):
    if len(a) >= 2 and a[1] == "protocol" and len(a) == 8:
        CTX["respdir"], CTX["manifest"] = a[6], a[7]
        check_protocol(a[2], a[3], a[4], int(a[5]))
    elif len(a) == 4 and a[1] == "cors":
        check_cors(a[2], a[3])
    elif len(a) == 3 and a[1] == "cors-any":
        check_cors_any(a[2])
    elif len(a) == 3 and a[1] == "cors-off":
        check_cors_off(a[2])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Out-of-distribution answers in every format, for items chosen by rule.

    ood_answers.py BASE PREDICT_JSONL FASHION_PNGS MNIST_PNGS MNIST_LABELS

The server at BASE serves a default model with out-of-distribution
statistics. PREDICT_JSONL holds mnist-predict's JSON lines for the files
FASHION_PNGS then MNIST_PNGS (comma-separated lists, in that order);
MNIST_LABELS their labels. The threshold is read from the default model's
first weights file (its safetensors header, "ood_threshold"). The rule,
so that no image is hand-picked and the answer is not a near thing:
  - the Fashion-MNIST item: the first whose score is above the threshold
    by at least a quarter of the threshold's size (a score may be negative:
    the energy score is);
  - the MNIST digit: the first read right with confidence >= 0.99 whose
    score is below the threshold by at least half the threshold's size.
mnist-predict must say in_distribution false and true for them. Then
each is posted to the server as a PNG body, a multipart part, a JSON
base64 body, a /predict/batch part and a v2 BYTES tensor, and every answer
must carry ood_score on the right side of the threshold and
in_distribution false (the item) or true (the digit). Prints one line
per check, "PASS<TAB>what" or "FAIL<TAB>what<TAB>why" (run.sh's
py_verdicts); exit 1 on any failure."""
import base64
import json
import struct
import sys
import urllib.request
import uuid

failed = 0


def report(ok, what, why=""):
    global failed
    if ok:
        print("PASS\t" + what)
    else:
        failed += 1
        print("FAIL\t%s\t%s" % (what, " ".join(str(why).split())[:600]))


def call(base, method, path, body=None, ctype=None):
    req = urllib.request.Request(base + path, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:300]


def threshold_of(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > 100_000_000:
            raise ValueError("header length %d" % n)
        meta = json.loads(f.read(n)).get("__metadata__", {})
    return float(meta["ood_threshold"]) if "ood_threshold" in meta else None


def multipart(parts):
    b = uuid.uuid4().hex
    out = b""
    for name, data in parts:
        out += (f"--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{b}--\r\n".encode(), "multipart/form-data; boundary=" + b


def main():
    base, jsonl, fpngs, mpngs, mlabels = sys.argv[1:6]
    fpngs, mpngs = fpngs.split(","), mpngs.split(",")
    labels = [int(x) for x in mlabels.split(",")]
    lines = [json.loads(x) for x in open(jsonl) if x.strip()]
    st, models = call(base, "GET", "/v1/models")
    default = next((m for m in models.get("models", []) if m["name"] == models.get("default")), None) \
        if st == 200 else None
    t = threshold_of(default["members"][0]["path"]) if default else None
    report(t is not None, "the default model carries an out-of-distribution threshold",
           "model %r" % (default or {}).get("name"))
    if len(lines) != len(fpngs) + len(mpngs):
        report(False, "mnist-predict answered every file", "%d lines" % len(lines))
        return
    if t is None:
        return
    fa, ma = lines[:len(fpngs)], lines[len(fpngs):]
    size = max(abs(t), 1.0)
    fi = next((i for i, j in enumerate(fa) if j.get("ood_score") is not None
               and j["ood_score"] >= t + 0.25 * size), None)
    mi = next((i for i, j in enumerate(ma) if j.get("prediction") == labels[i] and j.get("confidence", 0) >= 0.99
               and j.get("ood_score") is not None and j["ood_score"] <= t - 0.5 * size), None)
    report(fi is not None, "a Fashion-MNIST item scores a quarter of the threshold's size above it (%.2f)" % t,
           "scores %r" % [round(j.get("ood_score") or -1, 1) for j in fa])
    report(mi is not None, "an MNIST digit is read right, confidence >= 0.99, scoring half the threshold's size below it",
           "scores %r" % [round(j.get("ood_score") or -1, 1) for j in ma])
    if fi is None or mi is None:
        return
    report(True, "chosen by the rule: %s (score %.1f) and %s (score %.1f), threshold %.1f"
           % (fpngs[fi].rsplit("/", 1)[-1], fa[fi]["ood_score"], mpngs[mi].rsplit("/", 1)[-1],
              ma[mi]["ood_score"], t))
    item, digit = open(fpngs[fi], "rb").read(), open(mpngs[mi], "rb").read()
    report(fa[fi].get("in_distribution") is False and ma[mi].get("in_distribution") is True,
           "mnist-predict: in_distribution false for the item, true for the digit",
           "%r / %r" % (fa[fi].get("in_distribution"), ma[mi].get("in_distribution")))

    def side(j, want):
        s, d = j.get("ood_score"), j.get("in_distribution")
        return isinstance(s, (int, float)) and d is want and ((s > t) if want is False else (s <= t))

    for name, png, want in (("the Fashion-MNIST item", item, False), ("the MNIST digit", digit, True)):
        st, j = call(base, "POST", "/predict", png, "image/png")
        report(st == 200 and side(j, want), "POST /predict (PNG body), %s: in_distribution %s" % (name, want),
               "%s %r" % (st, j))
        body, ct = multipart([("image", png)])
        st, j = call(base, "POST", "/predict", body, ct)
        report(st == 200 and side(j, want), "POST /predict (multipart), %s: in_distribution %s" % (name, want),
               "%s %r" % (st, j))
        body = json.dumps({"image": base64.b64encode(png).decode()}).encode()
        st, j = call(base, "POST", "/predict", body, "application/json")
        report(st == 200 and side(j, want), "POST /predict (JSON base64), %s: in_distribution %s" % (name, want),
               "%s %r" % (st, j))
    body, ct = multipart([("image", item), ("image", digit)])
    st, j = call(base, "POST", "/predict/batch", body, ct)
    res = j.get("results", []) if st == 200 else []
    report(len(res) == 2 and side(res[0], False) and side(res[1], True),
           "POST /predict/batch: the item in_distribution false, the digit true", "%s %r" % (st, j))
    body = json.dumps({"inputs": [{"name": "input", "shape": [2], "datatype": "BYTES",
                                   "data": [base64.b64encode(item).decode(), base64.b64encode(digit).decode()]}]})
    st, j = call(base, "POST", "/v2/models/%s/infer" % default["name"], body.encode(), "application/json")
    outs = {o.get("name"): o for o in j.get("outputs", [])} if st == 200 else {}
    sc = outs.get("ood_score", {}).get("data")
    report(isinstance(sc, list) and len(sc) == 2 and sc[0] > t and sc[1] <= t,
           "v2 infer (BYTES PNGs): an ood_score output, the item above the threshold, the digit not",
           "%s %r" % (st, sc if sc is not None else j))


main()
sys.exit(1 if failed else 0)

#!/usr/bin/env python3
"""JSON assertions for run.sh (standard library only).

    jcheck.py FILE EXPR          exit 0 when the Python expression EXPR is true
                                 with j bound to FILE's parsed JSON; otherwise
                                 print why (the value, or the exception, and
                                 the start of the body) and exit 1
    jcheck.py --print FILE EXPR  print EXPR's value (str(); lists joined by
                                 spaces) and exit 0, or exit 1 on error

Helpers usable in EXPR: probs_ok(j) (10 numbers in [0,1] summing to 1 within
1e-3), pred_ok(j) (a full, self-consistent prediction object), err_ok(j)
(the error envelope with a non-empty code and message), png_size(s) ([width,
height] of a base64 PNG, None if s is not strict base64 of a PNG).
"""
import base64
import binascii
import json
import struct
import sys


def num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def probs_ok(j):
    p = j.get("probabilities")
    return (isinstance(p, list) and len(p) == 10 and all(num(x) and 0 <= x <= 1 for x in p)
            and abs(sum(p) - 1) < 1e-3)


def ood_ok(j):
    s, i = j.get("ood_score", "absent"), j.get("in_distribution", "absent")
    # Mahalanobis scores are >= 0, energy scores negative: any finite number.
    return (s is None and i is None) or (num(s) and isinstance(i, bool))


def pred_ok(j):
    if not isinstance(j, dict) or not probs_ok(j) or not ood_ok(j):
        return False
    d, c, p = j.get("prediction"), j.get("confidence"), j["probabilities"]
    return (isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 9
            and num(c) and abs(c - max(p)) < 1e-4 and abs(p[d] - max(p)) < 1e-6
            and isinstance(j.get("model"), str) and j["model"] != ""
            and "timing" in j)


def err_ok(j):
    e = j.get("error") if isinstance(j, dict) else None
    return (isinstance(e, dict) and isinstance(e.get("code"), str) and e["code"] != ""
            and isinstance(e.get("message"), str) and e["message"] != "")


def png_size(s):
    try:
        b = base64.b64decode(s, validate=True)
    except (binascii.Error, TypeError, ValueError):
        return None
    if b[:8] != b"\x89PNG\r\n\x1a\n" or b[12:16] != b"IHDR":
        return None
    return list(struct.unpack(">II", b[16:24]))


def main(a):
    show = len(a) == 4 and a[1] == "--print"
    if not show and len(a) != 3:
        sys.stderr.write(__doc__)
        return 2
    path, expr = a[-2], a[-1]
    raw = open(path, "rb").read()
    env = {"probs_ok": probs_ok, "pred_ok": pred_ok, "ood_ok": ood_ok, "err_ok": err_ok,
           "png_size": png_size,
           "num": num, "abs": abs, "sum": sum, "max": max, "min": min, "len": len,
           "all": all, "any": any, "isinstance": isinstance, "int": int,
           "float": float, "str": str, "list": list, "dict": dict, "range": range,
           "sorted": sorted, "set": set}
    try:
        env["j"] = json.loads(raw.decode("utf-8"))
        # env as globals: generator expressions in EXPR see only globals
        val = eval(expr, dict(env, __builtins__={}))
    except Exception as e:  # any failure is a test failure with a reason
        print("%s: %s: %s; body: %r" % (expr, type(e).__name__, e, raw[:300]))
        return 1
    if show:
        print(" ".join(map(str, val)) if isinstance(val, list) else val)
        return 0
    if val:
        return 0
    print("%s is %r; body: %r" % (expr, val, raw[:300]))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

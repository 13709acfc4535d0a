#!/usr/bin/env python3
"""Compares mnist-predict's answers with the server's (standard library only).

    samecheck.py CLI_OUT LIST

CLI_OUT: mnist-predict's output, one JSON object per line, in the order of
the files it was given. LIST: lines "FILE<TAB>RESPONSE_BODY_FILE", the same
files in the same order, each with the server's POST /predict answer.

For every file both must give the same code (the error envelope's "code",
or a prediction) and, for predictions, the same prediction, label and
probabilities as float32: the two programs run one pipeline, so the
numbers agree exactly. Prints one line per mismatch and exits 1 on any.
"""
import json
import struct
import sys


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def outcome(d):
    if "error" in d:
        return d["error"]["code"], None
    return "ok", d


def main():
    cli = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    pairs = [l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip()]
    bad = 0
    if len(cli) != len(pairs):
        print(f"mnist-predict printed {len(cli)} lines for {len(pairs)} files")
        return 1
    for c, (name, resp) in zip(cli, pairs):
        s = json.load(open(resp))
        if c.get("file") != name:
            print(f"{name}: mnist-predict line is for {c.get('file')}")
            bad += 1
            continue
        cc, cd = outcome(c)
        sc, sd = outcome(s)
        if cc != sc:
            print(f"{name}: mnist-predict says {cc}, the server {sc}")
            bad += 1
            continue
        if cd is None:
            continue
        if (cd["prediction"], cd["label"]) != (sd["prediction"], sd["label"]):
            print(f"{name}: prediction {cd['prediction']}/{cd['label']} vs {sd['prediction']}/{sd['label']}")
            bad += 1
        cp = [f32(x) for x in cd["probabilities"]]
        sp = [f32(x) for x in sd["probabilities"]]
        if cp != sp:
            print(f"{name}: probabilities differ: {cp} vs {sp}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

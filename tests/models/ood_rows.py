#!/usr/bin/env python3
"""Compares the model card's out-of-distribution rows of one file (on
stdin, as `| file | input | method | AUROC | out@95 | in pass | out pass |`)
with `mnist-eval --json --ood` output (argv[2]); prints one `ok - ...` or
`not ok - ...` line per row. The room each figure gets is explained in
tests/models/check.sh and models/README.md."""
import json
import sys

INPUTS = {"raw": "raw", "uploaded": "prepared"}
# A method marked * in the card is the score the model stores and serves
# (mnist-eval's "stored" figures, which also carry the thresholds);
# Mahalanobis is only ever a stored score.
METHODS = {"msp": "msp", "energy": "energy", "mahalanobis": "stored"}


def card_number(cell):
    """(value as a share, half a unit of its last digit) or None if empty."""
    t = cell.replace("*", "").strip()
    if not t:
        return None
    pct = t.endswith("%")
    t = t.rstrip("%").strip()
    decimals = len(t.split(".")[1]) if "." in t else 0
    half = 0.5 * 10.0**-decimals
    v = float(t)
    return (v / 100, half / 100) if pct else (v, half)


def main():
    name, text = sys.argv[1], sys.argv[2]
    try:
        got = json.loads(text)
    except ValueError:
        got = None
    for line in sys.stdin:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 7:
            print(f"not ok - {name}: card row has {len(cells)} cells: {line.strip()}")
            continue
        _, inp, method, auroc, at95, in_pass, out_pass = cells[:7]
        what = f"{name} {inp.split()[0]} {method}"
        path = INPUTS.get(inp.split()[0].lower())
        m = "stored" if "*" in method else METHODS.get(method.strip().lower())
        if got is None:
            print(f"not ok - {what}: mnist-eval --ood gave no JSON")
            continue
        r = got.get(path, {}).get(m) if path and m else None
        if r is None:
            print(f"not ok - {what}: mnist-eval --ood has no such figures")
            continue
        nin, nout = got[path]["in_n"], got[path]["out_n"]
        # (card cell, measured, room from rounding of the paths, label)
        checks = [
            (auroc, r["auroc"], r["auroc_close_pairs"] / (nin * nout), "AUROC"),
            (at95, r["out_pass_at_95"], r["out_pass_at_95_edge"] / nout, "out@95%"),
            (in_pass, r.get("in_pass"), r.get("in_pass_edge", 0) / nin, "in pass"),
            (out_pass, r.get("out_pass"), r.get("out_pass_edge", 0) / nout, "out pass"),
        ]
        bad, said = [], []
        for cell, value, room, label in checks:
            c = card_number(cell)
            if c is None:
                continue
            if value is None:
                bad.append(f"{label}: not measured (card {cell})")
                continue
            card, half = c
            if abs(value - card) > half + room:
                bad.append(f"{label} {value:.6g} vs card {cell} (room {half + room:.3g})")
            else:
                said.append(f"{label} {value:.4f}")
        if bad:
            print(f"not ok - {what}: " + "; ".join(bad))
        elif not said:
            print(f"not ok - {what}: the row states no figure")
        else:
            print(f"ok - {what}: " + ", ".join(said))


main()

#!/usr/bin/python3
"""Turns the raw runs of bench/run.sh into the table, the JSON record and
the Markdown page.

    report.py --raw RUNS.jsonl --meta META.tsv --out DIR [--quick]

RUNS.jsonl: one line per run, {"w": workload, "side": "ours"|"peer",
"rep": n, "r": the program's JSON line or null when it failed}.
META.tsv: "key<TAB>value" lines (values that parse as JSON are kept as
JSON). Writes DIR/bench-YYYYMMDD-HHMM.json and DIR/latest.md and prints
the table. Each figure is the median over the repeats; ratios are "how
many times better ours is" (peer/ours for times, ours/peer for rates).
"""
import argparse
import datetime
import json
import os
import statistics
import sys


def load_runs(path):
    runs = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            runs.setdefault((d["w"], d["side"]), []).append(d["r"])
    return runs


def load_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" not in line:
                continue
            k, v = line.split("\t", 1)
            try:
                meta[k] = json.loads(v)
            except ValueError:
                meta[k] = v
    return meta


def values(runs, w, side, field):
    return [r[field] for r in runs.get((w, side), []) if r and field in r]


def med(xs):
    return statistics.median(xs) if xs else None


# (label, workload, field, scale, unit, lower_is_better, goal)
# goal: ("ratio", x) ours at least x times better; ("max", v) ours <= v;
# ("min", v) ours >= v; ("peerof", workload, x): ours at least x times the
# peer's figure for workload (None: reported only); rows of an OPTIONAL
# workload with no runs of ours are left out (bf16 runs only where the CPU
# has AMX);
# ("peer", workload, side, x): the AVX2-capped rows,
# ours capped at least x times better than side's figure for workload (x
# None: reported only); ("of", workload, f[, what]) ours >= f times our own
# figure for workload (<= for lower-is-better rows; the peer column then
# shows that figure, named what); ("vs", workload, what) reported only, the
# peer column showing our figure for workload; None: reported only.
ROWS = [
    ("LeNet training, batch 32", "train_lenet_b32", "epoch_s", 1, "s/epoch", True, ("ratio", 3)),
    ("LeNet training, batch 128", "train_lenet_b128", "epoch_s", 1, "s/epoch", True, ("ratio", 2)),
    ("MLP training, batch 32", "train_mlp_b32", "epoch_s", 1, "s/epoch", True, ("ratio", 3)),
    ("Big CNN training, batch 64 (extrapolated)", "train_cnn_b64", "epoch_s", 1, "s/epoch", True, ("ratio", 2)),
    ("Big CNN training throughput", "train_cnn_b64", "gflops", 1, "GFLOP/s", False, None),
    ("Big CNN training, % of 2-core FP32 peak", "train_cnn_b64", "peak_pct_all", 1, "%", False, None),
    ("LeNet inference, batch 1, 1 thread", "infer_lenet", "median_us", 1, "µs", True, ("ratio", 5)),
    ("LeNet inference p99", "infer_lenet", "p99_us", 1, "µs", True, None),
    ("LeNet inference, % of 1-core FP32 peak", "infer_lenet", "peak_pct", 1, "%", False, None),
    ("Big CNN inference, batch 1, 1 thread", "infer_cnn", "median_us", 1, "µs", True, ("ratio", 4)),
    ("Big CNN inference, batch 1, before Winograd (no plan)", "infer_cnn_direct", "median_us", 1, "µs", True,
     None),
    ("Big CNN Winograd layers (3x3 stride 1, 5x5 stride 2), batch 1, time", "wino_cnn", "wino_layers_us", 1, "µs", True, None),
    ("Big CNN Winograd layers, effective rate (direct multiply-adds)", "wino_cnn", "wino_gflops", 1, "GFLOP/s",
     False, None),
    ("Big CNN same layers run directly", "wino_cnn", "direct_gflops", 1, "GFLOP/s", False, None),
    ("Big CNN inference p99", "infer_cnn", "p99_us", 1, "µs", True, None),
    ("Big CNN inference, % of 1-core FP32 peak", "infer_cnn", "peak_pct", 1, "%", False, None),
    ("Server LeNet, 64 connections", "server_lenet_c64", "rps", 1, "req/s", False, ("ratio", 15)),
    ("Server LeNet, 64 connections, p99", "server_lenet_c64", "p99_us", 1e-3, "ms", True, ("max", 4)),
    ("Server LeNet, 64 connections, v2 UINT8 JSON", "server_lenet_v2_c64", "rps", 1, "req/s", False,
     ("of", "server_lenet_c64", 2 / 3)),
    ("Server LeNet, 8 connections", "server_lenet_c8", "rps", 1, "req/s", False, None),
    ("Server LeNet, 8 connections, p99", "server_lenet_c8", "p99_us", 1e-3, "ms", True, ("max", 1)),
    ("Server big CNN, 64 connections", "server_cnn_c64", "rps", 1, "req/s", False, ("ratio", 8)),
    ("Server big CNN, 64 connections, p99", "server_cnn_c64", "p99_us", 1e-3, "ms", True, ("max", 10)),
    ("Server big CNN, 1 connection", "server_cnn_c1", "rps", 1, "req/s", False, None),
    ("Server big CNN, 1 connection, p50", "server_cnn_c1", "p50_us", 1e-3, "ms", True, None),
    ("Server big CNN, 1 connection, p99", "server_cnn_c1", "p99_us", 1e-3, "ms", True, None),
    # Dynamic batching (BATCH_ARGS in run.sh) against ours without it (the
    # peer column): it must lower p99 at high load, not raise it at low.
    ("Server big CNN, 64 connections, batching", "server_cnn_batch_c64", "rps", 1, "req/s", False,
     ("of", "server_cnn_c64", 1, "unbatched")),
    ("Server big CNN, 64 connections, batching, p50", "server_cnn_batch_c64", "p50_us", 1e-3, "ms",
     True, ("vs", "server_cnn_c64", "unbatched")),
    ("Server big CNN, 64 connections, batching, p99", "server_cnn_batch_c64", "p99_us", 1e-3, "ms",
     True, ("of", "server_cnn_c64", 1, "unbatched")),
    ("Server big CNN, 1 connection, batching", "server_cnn_batch_c1", "rps", 1, "req/s", False,
     ("vs", "server_cnn_c1", "unbatched")),
    ("Server big CNN, 1 connection, batching, p50", "server_cnn_batch_c1", "p50_us", 1e-3, "ms", True,
     ("vs", "server_cnn_c1", "unbatched")),
    ("Server big CNN, 1 connection, batching, p99", "server_cnn_batch_c1", "p99_us", 1e-3, "ms", True,
     ("of", "server_cnn_c1", 1, "unbatched")),
    # BF16 on AMX (NN_PRECISION=bf16), where the CPU has it: ours in bf16
    # against the peer's FP32 figure for the same workload.
    ("Big CNN inference, batch 1, bf16 on AMX", "infer_cnn_bf16", "median_us", 1, "µs", True,
     ("peerof", "infer_cnn", 4)),
    ("Server big CNN, 64 connections, bf16 on AMX", "server_cnn_bf16_c64", "rps", 1, "req/s", False,
     ("peerof", "server_cnn_c64", 8)),
    ("Server big CNN, 64 connections, bf16 on AMX, p99", "server_cnn_bf16_c64", "p99_us", 1e-3, "ms",
     True, ("max", 10)),
    ("Server big CNN, 1 connection, bf16 on AMX", "server_cnn_bf16_c1", "rps", 1, "req/s", False,
     ("peerof", "server_cnn_c1", None)),
    ("Server big CNN, 1 connection, bf16 on AMX, p50", "server_cnn_bf16_c1", "p50_us", 1e-3, "ms", True,
     ("peerof", "server_cnn_c1", None)),
    ("Server errors, all runs", "server_*", "errors", 1, "count", True, ("max", 0)),
    ("Server peak RSS, LeNet", "rss_lenet", "kb", 1 / 1024, "MiB", True, None),
    ("Server peak RSS, big CNN", "rss_cnn", "kb", 1 / 1024, "MiB", True, None),
]


# On CPUs whose best kernels are AVX-512 (run.sh's CAPPED): the rows as an
# AVX2-only machine runs them, ours with the kernels capped to AVX2 against
# the peer capped to AVX2 too (the goal), then against the uncapped peer
# (reported). ("peer", workload, side, x): the peer column is side's
# figure for workload; x None: reported only.
CAPPED_ROWS = []
for _label, _w, _field, _unit, _x in [
        ("LeNet training, batch 32", "train_lenet_b32", "epoch_s", "s/epoch", 3),
        ("LeNet training, batch 128", "train_lenet_b128", "epoch_s", "s/epoch", 2),
        ("Big CNN training, batch 64", "train_cnn_b64", "epoch_s", "s/epoch", 2),
        ("LeNet inference, batch 1", "infer_lenet", "median_us", "µs", 5),
        ("Big CNN inference, batch 1", "infer_cnn", "median_us", "µs", 4)]:
    CAPPED_ROWS.append(("%s, both capped to AVX2" % _label, _w + "_avx2", _field, 1, _unit, True,
                        ("peer", _w + "_avx2", "peer_capped", _x)))
    CAPPED_ROWS.append(("%s, ours capped to AVX2, peer not" % _label, _w + "_avx2", _field, 1, _unit, True,
                        ("peer", _w, "peer", None)))

# Rows with no peer figure: ours against ours (before and after).
OURS_ONLY = {"server_*", "infer_cnn_direct", "wino_cnn", "infer_cnn_bf16", "server_cnn_bf16_c64"}
# Workloads run only where the CPU can (bf16 needs AMX): every row of one
# with no run of ours is left out, whatever its goal.
OPTIONAL = {"infer_cnn_bf16", "server_cnn_bf16_c64", "server_cnn_bf16_c1"}


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return "{:,}".format(v)
    a = abs(v)
    if a >= 1000:
        return "{:,.0f}".format(v)
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    return "%.2f" % v


def goal_text(goal, unit, lower=False):
    if goal is None:
        return "reported"
    kind, x = goal[0], goal[1]
    if kind == "vs":
        return "reported (peer column: %s)" % goal[2]
    if kind == "of":
        what = goal[3] if len(goal) > 3 else "the PNG path"
        return "%s %.2f of %s (peer column)" % ("<=" if lower else ">=", goal[2], what)
    if kind in ("peer", "peerof") and goal[-1] is None:
        return "reported"
    if kind in ("ratio", "peer", "peerof"):
        return ">= %gx" % goal[-1]
    if kind == "max":
        return "<= %g %s" % (x, unit) if unit != "count" else "%g" % x
    return ">= %g %s" % (x, unit)


def isa_text(d):
    if not isinstance(d, dict):
        return "?"
    return "ATen %s, OpenBLAS %s, oneDNN %s" % (d.get("aten", "?"), d.get("openblas", "?"), d.get("onednn", "?"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs = load_runs(args.raw)
    meta = load_meta(args.meta)
    peak1, peak_all = meta.get("peak_1core_gflops"), meta.get("peak_all_gflops")

    # Derived fields: training throughput against the all-core peak, and
    # server errors summed over every kind wrk counts.
    for (w, _side), rs in runs.items():
        for r in rs:
            if not r:
                continue
            if w.startswith("train_") and peak_all and "gflops" in r:
                r["peak_pct_all"] = 100.0 * r["gflops"] / peak_all
            if w.startswith("infer_") and peak1 and "gflops" in r:
                r["peak_pct"] = 100.0 * r["gflops"] / peak1
            if w.startswith("server_"):
                r["errors"] = sum(r.get(k, 0) for k in ("errors_connect", "errors_read", "errors_write",
                                                        "errors_status", "errors_timeout"))

    capped = any(w.endswith("_avx2") for (w, _s) in runs)
    rows = []
    for label, w, field, scale, unit, lower, goal in ROWS + (CAPPED_ROWS if capped else []):
        if w in OPTIONAL and not values(runs, w, "ours", field):
            continue
        if w == "server_*":
            ours = sum(r["errors"] for (ww, s), rs in runs.items() if ww.startswith("server_") and s == "ours"
                       for r in rs if r)
            peer = sum(r["errors"] for (ww, s), rs in runs.items() if ww.startswith("server_") and s == "peer"
                       for r in rs if r)
            failed = sum(1 for (ww, s), rs in runs.items() if ww.startswith("server_") and s == "ours"
                         for r in rs if not r)
            if failed:
                ours = None
            ours_runs = peer_runs = []
        elif goal and goal[0] == "peerof":
            ours_runs = [v * scale for v in values(runs, w, "ours", field)]
            if not ours_runs:
                continue
            peer_runs = [v * scale for v in values(runs, goal[1], "peer", field)]
            ours, peer = med(ours_runs), med(peer_runs)
        elif goal and goal[0] == "peer":
            ours_runs = [v * scale for v in values(runs, w, "capped", field)]
            peer_runs = [v * scale for v in values(runs, goal[1], goal[2], field)]
            ours, peer = med(ours_runs), med(peer_runs)
        elif goal and goal[0] in ("of", "vs"):
            # Ours against ours: the peer column holds the other workload.
            ours_runs = [v * scale for v in values(runs, w, "ours", field)]
            peer_runs = [v * scale for v in values(runs, goal[1], "ours", field)]
            ours, peer = med(ours_runs), med(peer_runs)
        else:
            ours_runs = [v * scale for v in values(runs, w, "ours", field)]
            peer_runs = [v * scale for v in values(runs, w, "peer", field)]
            ours, peer = med(ours_runs), med(peer_runs)
        ratio = None
        if ours is not None and peer is not None and ours > 0 and peer > 0:
            ratio = peer / ours if lower else ours / peer
        met = None
        if goal and goal[0] != "vs" and goal[-1] is not None and ours is not None:
            kind, x = goal[0], goal[1]
            if kind == "of":
                met = peer is not None and (ours <= goal[2] * peer if lower else ours >= goal[2] * peer)
            elif kind in ("ratio", "peer", "peerof"):
                met = ratio is not None and ratio >= goal[-1]
            elif kind == "max":
                met = ours <= x
            else:
                met = ours >= x
        rows.append({
            "workload": label, "id": w, "field": field, "unit": unit,
            "ours": ours, "peer": peer, "ratio": ratio,
            "goal": goal_text(goal, unit, lower), "met": met,
            "ours_runs": ours_runs, "peer_runs": peer_runs,
        })

    now = datetime.datetime.now()
    lines = ["| Workload | Unit | Ours | PyTorch / Flask | Ratio | Goal | Met? |",
             "|---|---|---:|---:|---:|---|:---:|"]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        ratio = "n/a" if r["ratio"] is None else "%.2fx" % r["ratio"]
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["workload"], r["unit"], fmt(r["ours"]), fmt(r["peer"]), ratio, r["goal"], met))
    table = "\n".join(lines)

    blas = meta.get("peer_blas") or {}
    head = []
    if args.quick:
        head.append("**Quick smoke run: tiny step counts, one repeat. The figures mean nothing.**\n")
    head += [
        "Date: %s" % now.strftime("%Y-%m-%d %H:%M"),
        "",
        "Machine: %s, %s cores, %s; measured FP32 FMA peak %s GFLOP/s on one core, %s on all "
        "(build/bench/peak, %s)." % (meta.get("cpu", "?"), meta.get("cores", "?"), meta.get("kernel", "?"),
                                      fmt(peak1), fmt(peak_all), meta.get("peak_isa", "?")),
        "",
        "Our kernels: %s (NN_ISA caps them; this CPU runs: %s). %s" % (
            meta.get("kernels", "?"), meta.get("kernels_available", "?"),
            ("The rows marked \"capped to AVX2\" ran ours again with NN_ISA=avx2 and the peer with %s "
             "(the peer's kernels, uncapped: %s; capped: %s)." % (
                 meta.get("peer_capped_env", "?"), isa_text(meta.get("peer_isa")),
                 isa_text(meta.get("peer_capped_isa")))) if capped else
            "No AVX2-capped rows: they run where our best kernels are AVX-512."),
        "",
        "Peer: PyTorch %s, BLAS %s, 2 threads for training, 1 for batch-1 inference "
        "(torch.jit); Flask under gunicorn, 2 workers (%s), 1 torch thread each." % (
            blas.get("torch", "?"), ", ".join("/".join(b.split("/")[-2:]) for b in blas.get("blas", [])) or "?",
            meta.get("gunicorn_worker", "?")),
        "",
        "Each figure is the median of %s interleaved runs (ours, then the peer, alternating "
        "which goes first). Training: a fixed number of steps (%s), extrapolated to 60,000 images; GFLOP/s count 6 flops per "
        "multiply-add of the forward pass. Server: wrk, %s s per run, POST /predict with a 28x28 PNG; "
        "**the load generator shares the 2 cores with the server under test.** Ratio: how many times "
        "better ours is." % (meta.get("repeats", "?"), meta.get("steps_note", "fixed"), meta.get("wrk_seconds", "?")),
        "",
    ]
    md = "\n".join(head) + "\n" + table + "\n"

    os.makedirs(args.out, exist_ok=True)
    stamp = now.strftime("%Y%m%d-%H%M")
    jpath = os.path.join(args.out, "bench-%s%s.json" % (stamp, "-quick" if args.quick else ""))
    with open(jpath, "w") as f:
        json.dump({"date": now.isoformat(timespec="seconds"), "quick": args.quick, "meta": meta,
                   "rows": rows, "runs": [{"w": w, "side": s, "results": rs}
                                          for (w, s), rs in sorted(runs.items())]}, f, indent=1)
        f.write("\n")
    mpath = os.path.join(args.out, "latest.md")
    with open(mpath, "w") as f:
        f.write("# Benchmark: mnist-c against PyTorch\n\n" + md)
    print(md)
    print("wrote %s and %s" % (jpath, mpath))
    missing = [r["workload"] for r in rows
               if r["ours"] is None or (r["peer"] is None and r["id"] not in OURS_ONLY)]
    if missing:
        print("bench: no figure for: %s" % "; ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

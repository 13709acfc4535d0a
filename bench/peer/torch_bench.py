#!/usr/bin/python3
"""The PyTorch side of `make bench`, in its best configuration.

    torch_bench.py blas
    torch_bench.py train --arch-json FILE [--batch B] [--steps N] [--warmup W]
                         [--threads T] [--data DIR] [--raw]
    torch_bench.py infer MODEL.safetensors [--runs N] [--seconds S]
                         [--peak GFLOPS] [--data DIR]

Each prints one JSON line on stdout with the fields of our programs
(bench/epoch_time.c, bench/latency.c), so bench/run.sh treats both alike.

train: the same layers as ours (built from our architecture JSON), Adam at
1e-3, cross-entropy, fixed number of steps over shuffled MNIST images held
in one float tensor already normalised (the fastest input path: no
DataLoader), torch.set_num_threads(T).
infer: one thread, batch 1, the net with normalisation and softmax traced
with torch.jit.trace; the frozen variant (which folds batch norm into the
convolutions) is timed too and the faster one reported.
"""
import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

EPOCH_IMAGES = 60000


def cmd_blas(_args):
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": common.blas_libraries(),
    }))


def onednn_isa():
    """The instruction set oneDNN (torch's convolutions) picked, from its
    verbose log of one convolution in a child process."""
    code = ("import torch\nc = torch.nn.Conv2d(32, 32, 3)\n"
            "with torch.no_grad():\n    c(torch.zeros(8, 32, 24, 24))\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, DNNL_VERBOSE="1"),
                         capture_output=True, text=True, check=False).stdout
    m = re.search(r"isa:([^\n]*)", out)
    return m.group(1).strip() if m else "unknown"


def cmd_isa(_args):
    """Which kernels the peer runs under this environment (DNNL_MAX_CPU_ISA,
    ATEN_CPU_CAPABILITY and OPENBLAS_CORETYPE cap them). blas_libraries runs
    a product first, so OpenBLAS is loaded when it is asked."""
    core = "unknown"
    for lib in common.blas_libraries():
        if "openblas" in lib:
            try:
                f = ctypes.CDLL(lib).openblas_get_corename
                f.restype = ctypes.c_char_p
                core = f().decode()
            except (OSError, AttributeError):
                pass
    m = re.search(r"CPU capability usage: (\S+)", torch.__config__.show())
    print(json.dumps({"aten": m.group(1) if m else "unknown", "openblas": core, "onednn": onednn_isa()}))


def cmd_train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    with open(args.arch_json) as f:
        arch = json.load(f)
    model = common.build(arch)
    model.train()
    need = args.steps * args.batch
    limit = max(need, args.warmup * args.batch)
    imgs = common.read_idx_images(os.path.join(args.data, "train-images-idx3-ubyte"), limit)
    labels = common.read_idx_labels(os.path.join(args.data, "train-labels-idx1-ubyte"), limit)
    if len(imgs) < limit:
        raise SystemExit("torch_bench: steps*batch must be <= %d images" % len(imgs))
    mean, std = (0.0, 1.0) if args.raw else (0.1307, 0.3081)
    X = (torch.from_numpy(imgs.astype(np.float32) / 255.0) - mean) / std
    X = X.reshape(-1, 1, 28, 28).contiguous()
    Y = torch.from_numpy(labels.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def run(nsteps, seed):
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(nsteps * args.batch, generator=g)
        loss = None
        for s in range(nsteps):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]), Y[idx])
            loss.backward()
            opt.step()
        return float(loss) if loss is not None else 0.0

    if args.warmup > 0:
        run(args.warmup, 0)
    t0 = time.perf_counter()
    loss = run(args.steps, 1)
    secs = time.perf_counter() - t0
    per_step = secs / args.steps
    epoch_steps = (EPOCH_IMAGES + args.batch - 1) // args.batch
    m = common.macs(model)
    print(json.dumps({
        "arch": os.path.basename(args.arch_json), "batch": args.batch,
        "threads": args.threads, "steps": args.steps, "s_per_step": per_step,
        "images_per_s": need / secs, "epoch_s": per_step * epoch_steps,
        "gflops": 6.0 * m * need / secs / 1e9, "macs": m,
        "params": sum(p.numel() for p in model.parameters()), "loss": loss,
    }))


def time_variant(fn, x, runs, seconds):
    """Per-call seconds of fn over the images in x, one at a time."""
    n = len(x)
    with torch.no_grad():
        for i in range(200):
            fn(x[i % n])
        times = []
        start = time.perf_counter()
        i = 0
        while i < runs or time.perf_counter() - start < seconds:
            xi = x[i % n]
            t0 = time.perf_counter()
            fn(xi)
            times.append(time.perf_counter() - t0)
            i += 1
    return sorted(times)


def cmd_infer(args):
    torch.set_num_threads(1)
    model, _meta, shape = common.load_model(args.model)
    imgs = common.read_idx_images(os.path.join(args.data, "t10k-images-idx3-ubyte"), 256)
    x = torch.from_numpy(imgs.astype(np.float32) / 255.0).reshape(-1, *shape)
    x = [x[i:i + 1].contiguous() for i in range(len(x))]
    with torch.no_grad():
        traced = torch.jit.trace(model, x[0])
        frozen = torch.jit.freeze(torch.jit.trace(model, x[0]).eval())
    best = None
    for name, fn in (("jit.trace", traced), ("jit.trace+freeze", frozen)):
        t = time_variant(fn, x, args.runs, args.seconds)
        med = t[len(t) // 2]
        if best is None or med < best[1]:
            best = (name, med, t)
    name, med, t = best
    m = common.macs(model.net, shape)
    gflops = 2.0 * m / med / 1e9
    out = {
        "model": args.model, "variant": name, "runs": len(t),
        "median_us": med * 1e6, "p99_us": t[int(0.99 * (len(t) - 1))] * 1e6,
        "mean_us": sum(t) / len(t) * 1e6, "gflops": gflops, "macs": m,
    }
    if args.peak:
        out["peak_pct"] = 100.0 * gflops / args.peak
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("blas")
    sub.add_parser("isa")
    t = sub.add_parser("train")
    t.add_argument("--arch-json", required=True)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--steps", type=int, default=100)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--data", default="data/mnist")
    t.add_argument("--raw", action="store_true", help="no input normalisation (the MLP preset)")
    i = sub.add_parser("infer")
    i.add_argument("model")
    i.add_argument("--runs", type=int, default=5000)
    i.add_argument("--seconds", type=float, default=1.0)
    i.add_argument("--peak", type=float, default=0.0)
    i.add_argument("--data", default="data/mnist")
    args = ap.parse_args()
    for k in ("batch", "steps", "threads", "runs"):
        if getattr(args, k, 1) < 1:
            ap.error("--%s must be at least 1" % k)
    {"blas": cmd_blas, "isa": cmd_isa, "train": cmd_train, "infer": cmd_infer}[args.cmd](args)


if __name__ == "__main__":
    main()

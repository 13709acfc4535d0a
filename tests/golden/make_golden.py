#!/usr/bin/python3
"""Golden logits from PyTorch for the shipped weights files.

Run by hand (needs Debian's python3-torch; not part of `make test`):

    /usr/bin/python3 tests/golden/make_golden.py models/lenet.safetensors ...

For each weights file it builds the equivalent torch.nn.Sequential from the
architecture in the file's metadata, loads the tensors with
load_state_dict(strict=True), runs fixed inputs (the first MNIST test images
plus deterministic patterns) in eval mode and writes
tests/fixtures/golden_<stem>.json: the inputs as bytes and the logits.
tests/unit/test_golden.c reproduces the logits with the C forward pass.
"""
import json
import os
import struct
import sys

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    data = raw[8 + hlen:]
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[t["dtype"]]
        arr = np.frombuffer(data[b:e], dtype=dt).reshape(t["shape"])
        tensors[name] = torch.from_numpy(arr.copy())
    return meta, tensors


def build(arch, in_c):
    mods, c = [], in_c
    for L in arch:
        t = L["type"]
        if t == "conv2d":
            mods.append(nn.Conv2d(c, L["out"], L["k"], stride=L.get("stride", 1), padding=L.get("pad", 0)))
            c = L["out"]
        elif t == "dense":
            mods.append(("dense", L))
            c = L["out"]
        elif t == "maxpool":
            mods.append(nn.MaxPool2d(L["k"], stride=L.get("stride", L["k"])))
        elif t == "relu":
            mods.append(nn.ReLU())
        elif t == "dropout":
            mods.append(nn.Dropout(L.get("p", 0.5)))
        elif t == "flatten":
            mods.append(nn.Flatten())
        elif t == "batchnorm":
            mods.append(("bn", L))
        else:
            raise SystemExit("unknown layer type " + t)
    return mods


def main():
    paths = sys.argv[1:]
    if not paths:
        raise SystemExit(__doc__)
    imgs_path = os.path.join(ROOT, "data/mnist/t10k-images-idx3-ubyte")
    with open(imgs_path, "rb") as f:
        raw = f.read()
    mnist = np.frombuffer(raw[16:16 + 6 * 784], dtype=np.uint8).reshape(6, 784)
    rng = np.random.RandomState(1234)
    noise = rng.randint(0, 256, size=(2, 784)).astype(np.uint8)
    inputs = np.concatenate([mnist, noise], axis=0)
    for path in paths:
        meta, tensors = read_safetensors(path)
        arch = json.loads(meta["arch"])
        c, h, w = json.loads(meta["input_shape"])
        mean, std = float(meta["input_mean"]), float(meta["input_std"])
        # Build with shapes known: walk a dummy tensor through the layers.
        mods, x = [], torch.zeros(1, c, h, w)
        for L, m in zip(arch, build(arch, c)):
            if isinstance(m, tuple) and m[0] == "dense":
                m = nn.Linear(x.shape[1], L["out"])
            elif isinstance(m, tuple):
                m = nn.BatchNorm2d(x.shape[1], eps=L.get("eps", 1e-5), momentum=L.get("momentum", 0.1)) \
                    if x.dim() == 4 else nn.BatchNorm1d(x.shape[1], eps=L.get("eps", 1e-5),
                                                        momentum=L.get("momentum", 0.1))
            m.eval()
            x = m(x)
            mods.append(m)
        model = nn.Sequential(*mods)
        model.load_state_dict(tensors, strict=True)
        model.eval()
        xin = torch.from_numpy(inputs.astype(np.float32) / 255.0).reshape(-1, c, h, w)
        with torch.no_grad():
            logits = model((xin - mean) / std).numpy()
        stem = os.path.basename(path).rsplit(".", 1)[0]
        out = os.path.join(ROOT, "tests/fixtures", "golden_%s.json" % stem)
        with open(out, "w") as f:
            json.dump({
                "model": os.path.relpath(path, ROOT),
                "torch_version": torch.__version__,
                "inputs": [[int(v) for v in row] for row in inputs],
                "logits": [[float(v) for v in row] for row in logits],
            }, f)
            f.write("\n")
        print("%s: %d inputs -> %s (argmax %s)" % (path, len(inputs), out, logits.argmax(1).tolist()))


if __name__ == "__main__":
    main()

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
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The PyTorch side of the benchmark already reads our weights files and
# builds the equivalent Sequential; the golden data uses the same code.
sys.path.insert(0, os.path.join(ROOT, "bench", "peer"))
from common import build, read_safetensors  # noqa: E402


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
        model = build(arch, (c, h, w))
        # "ood.*" are the out-of-distribution statistics (nn/ood.h), not
        # module parameters; every other tensor must match exactly.
        model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("ood.")}, strict=True)
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

"""Shared by the PyTorch peer programs: our architectures and weights files
as torch.nn.Sequential, the MNIST IDX reader, and which BLAS torch runs on.

Layer i of our architecture JSON is module i of the Sequential, so the
tensors of a weights file ("<i>.weight", "<i>.bias", batch-norm running
statistics) load with load_state_dict(strict=True).
"""
import json
import os
import struct

import numpy as np
import torch
from torch import nn


def read_safetensors(path):
    """(metadata dict, {name: tensor}) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise SystemExit("%s: too short for a safetensors file" % path)
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen > len(raw) - 8:
        raise SystemExit("%s: header length %d past the end of the file" % (path, hlen))
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


def build(arch, shape=(1, 28, 28)):
    """torch.nn.Sequential for our architecture JSON (a list of layer
    objects) on inputs of shape (C, H, W). Shapes of dense and batch-norm
    layers follow from a dummy input walked through the layers."""
    mods, x = [], torch.zeros(1, *shape)
    for L in arch:
        t = L["type"]
        if t == "conv2d":
            m = nn.Conv2d(x.shape[1], L["out"], L["k"], stride=L.get("stride", 1),
                          padding=L.get("pad", 0))
        elif t == "dense":
            m = nn.Linear(x.shape[1], L["out"])
        elif t == "maxpool":
            m = nn.MaxPool2d(L["k"], stride=L.get("stride", L["k"]))
        elif t == "relu":
            m = nn.ReLU()
        elif t == "dropout":
            m = nn.Dropout(L.get("p", 0.5))
        elif t == "flatten":
            m = nn.Flatten()
        elif t == "batchnorm":
            cls = nn.BatchNorm2d if x.dim() == 4 else nn.BatchNorm1d
            m = cls(x.shape[1], eps=L.get("eps", 1e-5), momentum=L.get("momentum", 0.1))
        else:
            raise SystemExit("unknown layer type %r" % t)
        m.eval()
        with torch.no_grad():
            x = m(x)
        mods.append(m)
    return nn.Sequential(*mods)


def macs(model, shape=(1, 28, 28)):
    """Multiply-adds of one image's forward pass through the conv and dense
    layers (what nn_net_macs counts)."""
    total, x = 0, torch.zeros(1, *shape)
    was_training = model.training
    model.eval()  # batch norm in training mode refuses a batch of one
    with torch.no_grad():
        for m in model:
            y = m(x)
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                total += y.numel() * m.in_channels * k
            elif isinstance(m, nn.Linear):
                total += m.in_features * m.out_features
            x = y
    model.train(was_training)
    return total


class Served(nn.Module):
    """A net as the server runs it: pixels 0..1 in, probabilities out."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net, self.mean, self.std = net, float(mean), float(std)

    def forward(self, x):
        return torch.softmax(self.net((x - self.mean) / self.std), dim=1)


def load_model(path):
    """(Served module in eval mode, metadata) from one of our weights files."""
    meta, tensors = read_safetensors(path)
    arch = json.loads(meta["arch"])
    shape = tuple(json.loads(meta.get("input_shape", "[1, 28, 28]")))
    net = build(arch, shape)
    # The out-of-distribution score's tensors (ood.*: a Mahalanobis fit or
    # the default CNN's head) are not layers of the net. The peer answers
    # the probabilities only; the head ours also computes is 8,256
    # multiply-adds beside the CNN's 15 million.
    net.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("ood.")},
                        strict=True)
    model = Served(net, meta.get("input_mean", 0), meta.get("input_std", 1))
    model.eval()
    return model, meta, shape


def read_idx_images(path, limit=None):
    """uint8 array [n, rows*cols] of an IDX images file."""
    with open(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 0x803:
        raise SystemExit("%s: not an IDX images file" % path)
    if limit is not None:
        n = min(n, limit)
    return np.frombuffer(raw[16:16 + n * rows * cols], dtype=np.uint8).reshape(n, rows * cols)


def read_idx_labels(path, limit=None):
    with open(path, "rb") as f:
        raw = f.read()
    magic, n = struct.unpack(">II", raw[:8])
    if magic != 0x801:
        raise SystemExit("%s: not an IDX labels file" % path)
    if limit is not None:
        n = min(n, limit)
    return np.frombuffer(raw[8:8 + n], dtype=np.uint8)


def blas_libraries():
    """Shared libraries of BLAS/LAPACK flavour mapped into this process,
    resolved through symlinks (Debian's alternatives), after torch ran a
    matrix multiply so lazily loaded ones are in."""
    a = torch.ones(64, 64)
    torch.mm(a, a)
    torch.nn.functional.linear(a, a)
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and any(k in parts[5] for k in ("blas", "lapack", "gomp", "omp.so")):
                libs.add(os.path.realpath(parts[5]))
    return sorted(libs)

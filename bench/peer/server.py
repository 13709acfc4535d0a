"""The Flask + PyTorch peer of mnist-server for `make bench`: POST /predict
with a PNG body answers JSON probabilities, as ours does.

    PEER_MODEL=models/lenet.safetensors gunicorn -w 2 --chdir bench/peer server:app

Each gunicorn worker loads the model itself (no --preload, so torch's
thread pool is created after the fork) and runs it on one thread, traced
and frozen with torch.jit. Decoding is Pillow's; preprocessing is the
simple kind: gray, 28x28 (resized if needed), ink made bright.
"""
import io
import os
import sys

import numpy as np
import torch
from flask import Flask, jsonify, request
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

torch.set_num_threads(1)
MODEL_PATH = os.environ.get("PEER_MODEL", "models/lenet.safetensors")
_model, _meta, _shape = common.load_model(MODEL_PATH)
with torch.no_grad():
    MODEL = torch.jit.freeze(torch.jit.trace(_model, torch.zeros(1, *_shape)).eval())
NAME = os.path.basename(MODEL_PATH).rsplit(".", 1)[0]
H, W = _shape[1], _shape[2]

app = Flask(__name__)


def error(status, code, msg):
    r = jsonify({"error": {"code": code, "message": msg}})
    r.status_code = status
    return r


@app.post("/predict")
def predict():
    body = request.get_data(cache=False)
    if not body:
        return error(400, "empty_body", "send a PNG image as the request body")
    try:
        img = Image.open(io.BytesIO(body))
        img = img.convert("L")
    except Exception as e:  # Pillow raises many kinds on bad input
        return error(400, "bad_image", "cannot decode the image: %s" % e)
    if img.size != (W, H):
        img = img.resize((W, H), Image.BILINEAR)
    px = np.asarray(img, dtype=np.float32) / 255.0
    if px.mean() > 0.5:  # dark ink on a light background: make ink bright
        px = 1.0 - px
    x = torch.from_numpy(px).reshape(1, 1, H, W)
    with torch.no_grad():
        probs = MODEL(x)[0].tolist()
    best = max(range(len(probs)), key=probs.__getitem__)
    return jsonify({"prediction": best, "label": str(best), "confidence": probs[best],
                    "probabilities": probs, "model": NAME})


@app.get("/health")
def health():
    return jsonify({"status": "ok"})

#!/bin/sh
# make_seeds.sh BUILD_DIR - (re)writes the committed seed corpora in
# tests/fuzz/corpus/TARGET/ from the fixture tools and hand-made texts.
# Run after `make test-bins` when a format changes; commit the result.
# Seeds are kept small (the fuzzers mutate every byte): the whole set is
# well under a few hundred KB.
set -eu
BUILD=${1:?usage: make_seeds.sh BUILD_DIR}
C=tests/fuzz/corpus
tmp=$(mktemp -d "${TMPDIR:-/tmp}/seeds.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

rm -rf "$C"
mkdir -p "$C"/png "$C"/multipart "$C"/safetensors "$C"/weights "$C"/arch \
    "$C"/ensemble_list "$C"/oip "$C"/oip_images "$C"/base64 "$C"/config "$C"/http "$C"/route

# PNG: every colour type, depth, palette, tRNS, interlace, canvas exports
# and the hostile fixtures, all under 8 KB (the decompression bombs are
# left out: the fuzzer finds size limits from huge_dims.png's header).
"$BUILD/tests/tools/mkpng" "$tmp/png" > /dev/null
for f in "$tmp"/png/*.png; do
    [ "$(wc -c < "$f")" -le 8192 ] && cp "$f" "$C/png/"
done
for i in 0 1 7; do
    "$BUILD/tests/tools/mkpng" --from-idx data/mnist/t10k-images-idx3-ubyte "$i" \
        "$C/png/mnist_$i.png" > /dev/null
done

# Weights: tiny nets with every layer kind; the container alone too.
mkdir -p "$tmp/w"
"$BUILD/tests/tools/mkweights" "$tmp/w"
cp "$tmp"/w/*.safetensors "$C/weights/"
cp "$tmp"/w/*.safetensors "$C/safetensors/"

python3 - "$C" "$C/png/mnist_7.png" <<'PY'
import base64, json, os, struct, sys
C, png_path = sys.argv[1], sys.argv[2]
png = open(png_path, "rb").read()
b64 = base64.b64encode(png).decode()

def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(C, target, name), "wb") as f:
        f.write(data)

# safetensors: a hand-made container (no nn metadata) and edge cases.
def st(header, data=b""):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data
put("safetensors", "two.st", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                  "b": {"dtype": "I64", "shape": [1, 1], "data_offsets": [8, 16]},
                                  "__metadata__": {"k": "v"}}, bytes(16)))
put("safetensors", "empty.st", st({}))
put("safetensors", "scalar.st", st({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, bytes(4)))

# Architectures (the "arch" metadata of a weights file).
archs = {
    "lenet": [{"type": "conv2d", "out": 6, "k": 5, "pad": 2}, {"type": "relu"},
              {"type": "maxpool", "k": 2}, {"type": "conv2d", "out": 16, "k": 5},
              {"type": "relu"}, {"type": "maxpool", "k": 2}, {"type": "flatten"},
              {"type": "dense", "out": 120}, {"type": "relu"}, {"type": "dense", "out": 10}],
    "mlp": [{"type": "flatten"}, {"type": "dense", "out": 32}, {"type": "relu"},
            {"type": "dropout", "p": 0.2}, {"type": "dense", "out": 10}],
    "bn": [{"type": "deskew"}, {"type": "conv2d", "out": 4, "k": 3, "stride": 2, "pad": 1},
           {"type": "batchnorm", "eps": 1e-5, "momentum": 0.1}, {"type": "relu"},
           {"type": "maxpool", "k": 3, "stride": 2}, {"type": "flatten"},
           {"type": "dense", "out": 10}],
}
for k, v in archs.items():
    put("arch", k + ".json", json.dumps(v))

# multipart: Content-Type line, then the body.
def mp(bnd, parts, preamble=""):
    body = preamble
    for name, extra, data in parts:
        body += "--%s\r\nContent-Disposition: form-data; name=\"%s\"%s\r\n" \
                "Content-Type: image/png\r\n\r\n%s\r\n" % (bnd, name, extra, data)
    return body + "--%s--\r\n" % bnd
put("multipart", "one", "multipart/form-data; boundary=XyZ\n" + mp("XyZ", [("image", "; filename=\"a.png\"", "PNGDATA")]))
put("multipart", "three", "multipart/form-data; boundary=\"q b\"\n" +
    mp("q b", [("image", "", "A"), ("file", "", "B"), ("image", "", "C\r\n--q")], preamble="pre\r\n"))
put("multipart", "none", "multipart/form-data; charset=x; boundary=-----1\n" + mp("-----1", [("other", "", "x")]))

# Ensemble lists.
put("ensemble_list", "five", "# five CNNs\nmembers/a.safetensors\nmembers/b.safetensors  # b\n"
    "/abs/c.safetensors\r\n\ntest_accuracy=0.9979\n")
put("ensemble_list", "bad", "test_accuracy=1.5\na,b\n")

# Open Inference Protocol: byte 0 bit 0 = header given, bytes 1-2 = JSON length.
def oip(body, json_len=None):
    if isinstance(body, str):
        body = body.encode()
    if json_len is None:
        return b"\x00\x00\x00" + body
    return bytes([1, json_len & 255, json_len >> 8]) + body
pix = [(k * 7) % 256 for k in range(784)]
rows = [pix[r * 28:(r + 1) * 28] for r in range(28)]
put("oip", "uint8_flat", oip(json.dumps({"id": "r1", "inputs": [{"name": "input", "shape": [1, 784],
    "datatype": "UINT8", "data": pix}]})))
put("oip", "fp32_nested", oip(json.dumps({"inputs": [{"name": "input", "shape": [1, 28, 28],
    "datatype": "FP32", "data": [[round(v / 255, 4) for v in r] for r in rows]}],
    "outputs": [{"name": "prediction"}, {"name": "probabilities", "parameters": {"binary_data": True}}]})))
put("oip", "bytes", oip(json.dumps({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
    "data": [b64]}], "parameters": {"binary_data_output": True}})))
j = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "UINT8",
    "parameters": {"binary_data_size": 784}}], "outputs": [{"name": "label"}]})
put("oip", "binary", oip(j.encode() + bytes(pix), len(j)))
j = json.dumps({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
    "parameters": {"binary_data_size": 4 + len(png)}}]})
put("oip", "binary_bytes", oip(j.encode() + struct.pack("<I", len(png)) + png, len(j)))

put("oip_images", "one", b"\x00" + json.dumps({"image": b64}).encode())
put("oip_images", "two", b"\x01" + json.dumps({"images": [b64, "iVBORw0KGgo="]}).encode())
put("oip_images", "escaped", b"\x01" + b'{"images":["aGVsbG8\\/"]}')

put("base64", "png", b64)
put("base64", "short", "aGk")
put("base64", "padded", "aGk=")

# config: env entries, "--", then argv; NUL-separated.
put("config", "flags", "\0".join(["--port", "0", "--threads=2", "--model", "a=x.safetensors,y.safetensors",
    "--body-limit", "512KiB", "--grace", "2.5", "--keep-versions", "3", "--poll-interval", "0.5", "--cors-origin", "https://a.example", "--access-log", "off", "--log-format", "json"]))
put("config", "env", "\0".join(["MNIST_MODELS=a=x.safetensors; b=y.safetensors", "MNIST_MAX_PIXELS=1000",
    "MNIST_TIMEOUT=5", "--", "--default-model", "b", "--models-dir", "models"]))

# HTTP: whole requests as a client writes them.
def req(line, headers, body=b""):
    h = "".join("%s: %s\r\n" % kv for kv in headers)
    return (line + "\r\n" + h + "\r\n").encode() + body
put("http", "healthz", req("GET /healthz HTTP/1.1", [("Host", "x")]))
put("http", "predict_raw", req("POST /predict?model=mlp HTTP/1.1", [("Host", "x"),
    ("Content-Type", "image/png"), ("Content-Length", str(len(png)))], png))
mpb = ("--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n").encode() + png + b"\r\n--B--\r\n"
put("http", "batch", req("POST /predict/batch HTTP/1.1", [("Host", "x"),
    ("Content-Type", "multipart/form-data; boundary=B"), ("Content-Length", str(len(mpb)))], mpb))
chunked = b"%x\r\n" % len(png) + png + b"\r\n0\r\n\r\n"
put("http", "chunked", req("POST /predict HTTP/1.1", [("Host", "x"), ("Content-Type", "image/png"),
    ("Transfer-Encoding", "chunked")], chunked))
jb = json.dumps({"image": b64}).encode()
put("http", "json", req("POST /predict HTTP/1.1", [("Host", "x"), ("Content-Type", "application/json"),
    ("Content-Length", str(len(jb)))], jb))
put("http", "pipelined", req("GET /v1/models HTTP/1.1", [("Host", "x")]) +
    req("HEAD /metrics HTTP/1.1", [("Host", "x"), ("X-Request-Id", "abc")]) +
    req("GET /readyz HTTP/1.0", []))

# v2 inference over HTTP, and paths for the router.
v2 = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8",
    "data": pix}]}).encode()
put("http", "v2_infer", req("POST /v2/models/mlp/infer HTTP/1.1", [("Host", "x"),
    ("Content-Type", "application/json"), ("Content-Length", str(len(v2)))], v2))
put("http", "v2_ready", req("GET /v2/models/mlp/versions/1/ready HTTP/1.1", [("Host", "x")]))
for name, path in [("predict", "/predict"), ("infer", "/v2/models/cnn/versions/1/infer"),
                   ("ready", "/v2/models/cnn-ensemble/ready"), ("live", "/v2/health/live"),
                   ("hostile", '/../etc/passwd%00"\\\n'), ("rid", "itest-req-4711")]:
    put("route", name, path)
PY
du -sh "$C"

#!/usr/bin/env bash
# Command-line tests of mnist-train, mnist-eval and mnist-predict: every
# bad input gives its exit status and exactly one line on stderr, and a
# tiny model trained here goes through eval and predict.
#
#   tests/cli/run.sh BUILD_DIR      (BUILD_DIR: build or build/asan)
#
# Needs the MNIST files in data/mnist/ (make data) and
# BUILD_DIR/tests/tools/mkpng. Output is TAP-like, closed by
# "cli: N passed, M failed"; the exit status is non-zero on any failure.
set -uo pipefail

# shellcheck source=tests/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"
TRAIN=$build/mnist-train
EVAL=$build/mnist-eval
PREDICT=$build/mnist-predict
MKPNG=$build/tests/tools/mkpng
MKMODEL=$build/tests/tools/mkmodel
DATA=${MNIST_DIR:-data/mnist}
PY=/usr/bin/python3
command -v "$PY" >/dev/null || PY=python3

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnist-cli.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/cli/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for f in t10k-images-idx3-ubyte train-images-idx3-ubyte; do
    [ -f "$DATA/$f" ] || { echo "cli: $DATA/$f missing (run make data)"; exit 2; }
done

# ---------------------------------------------------------------- mnist-train
tiny=$tmp/tiny.json
printf '[{"type":"flatten"},{"type":"dense","out":32},{"type":"relu"},{"type":"dropout","p":0.5},{"type":"dense","out":10}]' > "$tiny"
printf '[{"type":"dense","out":' > "$tmp/broken.json"
printf '[{"type":"flatten"},{"type":"deskew"},{"type":"dense","out":10}]' > "$tmp/late-deskew.json"

expect 2 'out FILE is required' "train: no --out" -- "$TRAIN" --arch mlp
expect 2 'unknown option --bogus' "train: unknown option" -- "$TRAIN" --bogus --out "$tmp/x"
expect 2 '--epochs needs a value' "train: option without its value" -- "$TRAIN" --out "$tmp/x" --epochs
# Every number is checked: no silent preset default, no atoi.
expect 2 "^mnist-train: --epochs wants an integer from 1 to 100000, got '0'\$" "train: --epochs 0 refused" -- "$TRAIN" --epochs 0 --out "$tmp/x"
expect 2 "^mnist-train: --epochs wants an integer from 1 to 100000, got 'abc'\$" "train: --epochs abc refused" -- "$TRAIN" --epochs abc --out "$tmp/x"
expect 2 "--batch wants an integer from 1 to 65536, got '32x'" "train: --batch with junk refused" -- "$TRAIN" --batch 32x --out "$tmp/x"
expect 2 "--lr wants a number above 0 up to 10, got '0'" "train: --lr 0 refused" -- "$TRAIN" --lr 0 --out "$tmp/x"
expect 2 "--threads wants an integer from 0 to 1024, got '-1'" "train: --threads -1 refused" -- "$TRAIN" --threads -1 --out "$tmp/x"
expect 2 "--seed wants an integer from 0 to 2\\^64-1, got 'abc'" "train: --seed abc refused" -- "$TRAIN" --seed abc --out "$tmp/x"
expect 2 "--ema wants a number from 0 to below 1, got '1'" "train: --ema 1 refused" -- "$TRAIN" --ema 1 --out "$tmp/x"
expect 2 '--elastic wants ALPHA,SIGMA' "train: --elastic with junk refused" -- "$TRAIN" --elastic 34,4x --out "$tmp/x"
"$TRAIN" --help > "$tmp/help.out" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q -- '--arch NAME|FILE .*(default mlp)' "$tmp/help.out" &&
    grep -q -- "--epochs N .*(default the preset's: mlp 20, lenet 20, cnn 30" "$tmp/help.out" &&
    grep -q -- '--seed N .*(default 1)' "$tmp/help.out" && grep -q -- '--data DIR .*(default data/mnist)' "$tmp/help.out"; then
    ok "train: --help shows the actual defaults"
else
    not_ok "train: --help shows the actual defaults" "exit $rc" "$(head -c 600 "$tmp/help.out")"
fi
expect 2 '--dropout wants a probability' "train: --dropout 1 refused" -- "$TRAIN" --arch mlp --dropout 1 --out "$tmp/x"
expect 2 '--dropout wants a probability' "train: --dropout abc refused" -- "$TRAIN" --arch mlp --dropout abc --out "$tmp/x"
expect 2 'no dropout layer' "train: --dropout on an architecture without dropout" -- "$TRAIN" --arch lenet --dropout 0.2 --out "$tmp/x"
expect 2 '--aug wants ROT,ZOOM,SHIFT' "train: malformed --aug" -- "$TRAIN" --aug 15 --out "$tmp/x"
expect 2 '^mnist-train: --oe-margins wants IN,OUT with IN < OUT' "train: --oe-margins without --outliers" -- "$TRAIN" --oe-margins -12,-5 --out "$tmp/x"
expect 2 '^mnist-train: --oe-margins wants IN,OUT with IN < OUT' "train: --oe-margins IN above OUT" -- "$TRAIN" --outliers "$tmp/o" --oe-margins -5,-12 --out "$tmp/x"
expect 2 '^mnist-train: --oe-margins wants IN,OUT with IN < OUT' "train: --oe-margins junk" -- "$TRAIN" --outliers "$tmp/o" --oe-margins -5x,3 --out "$tmp/x"
expect 2 '--flip wants a probability' "train: --flip out of range" -- "$TRAIN" --flip 2 --out "$tmp/x"
expect 2 '--stroke wants a strength' "train: --stroke out of range" -- "$TRAIN" --stroke -0.5 --out "$tmp/x"
expect 2 '--blur wants a sigma' "train: --blur out of range" -- "$TRAIN" --blur 9 --out "$tmp/x"
printf '[{"type":"deskew"},{"type":"flatten"},{"type":"dense","out":10}]' > "$tmp/deskewed.json"
expect 2 'already starts with deskew' "train: --deskew on a deskewing architecture" -- "$TRAIN" --arch "$tmp/deskewed.json" --deskew --out "$tmp/x"
expect 2 'mnist-train: .*deskew must be the first layer' "train: deskew after another layer" -- "$TRAIN" --arch "$tmp/late-deskew.json" --out "$tmp/x"
expect 2 'not a preset' "train: unknown architecture" -- "$TRAIN" --arch "$tmp/none.json" --out "$tmp/x"
expect 2 'mnist-train: ' "train: malformed architecture JSON" -- "$TRAIN" --arch "$tmp/broken.json" --out "$tmp/x"
expect 1 'no train images' "train: data directory without MNIST" -- "$TRAIN" --data "$tmp" --out "$tmp/x"
if [ ! -e "$tmp/x" ]; then ok "train: nothing written after a refused run"; else not_ok "train: nothing written after a refused run" "$tmp/x exists"; fi

# A tiny model: 1,000 images, 2 epochs, the dropout overridden.
if "$TRAIN" --arch "$tiny" --dropout 0.1 --limit 1000 --epochs 2 --threads 2 --quiet --data "$DATA" \
        --name tiny --out "$tmp/tiny.safetensors" > "$tmp/train.out" 2> "$tmp/train.err"; then
    ok "train: a tiny model trains"
else
    not_ok "train: a tiny model trains" "$(tail -c 400 "$tmp/train.err")"
fi
rows=$(wc -l < "$tmp/tiny.safetensors.csv" 2>/dev/null || echo 0)
if [ "$rows" -eq 3 ]; then ok "train: history has a header and one row per epoch"; else not_ok "train: history rows" "got $rows lines"; fi
if grep -q 'dropout(0.1)' "$tmp/train.err" && ! grep -q 'dropout(0.5)' "$tmp/train.err"; then
    ok "train: --dropout sets the dropout layer's probability"
else
    not_ok "train: --dropout sets the dropout layer's probability" "$(head -1 "$tmp/train.err")"
fi
# --deskew puts the layer first; the model still learns and evaluates.
if "$TRAIN" --arch "$tiny" --deskew --limit 1000 --epochs 2 --threads 2 --quiet --data "$DATA" \
        --out "$tmp/deskew.safetensors" > /dev/null 2> "$tmp/deskew.err" &&
    grep -q '^model: deskew-flatten-dense(32)' "$tmp/deskew.err" &&
    "$EVAL" --json --data "$DATA" "$tmp/deskew.safetensors" > "$tmp/deskew.json" &&
    "$PY" -c 'import json,sys; a = json.load(open(sys.argv[1]))["accuracy"]; sys.exit(0 if 0.6 < a < 1 else 1)' "$tmp/deskew.json"; then
    ok "train: --deskew trains a deskewing model that evaluates ($(head -c 60 "$tmp/deskew.json"))"
else
    not_ok "train: --deskew trains a deskewing model" "$(head -c 300 "$tmp/deskew.err")" "$(head -c 200 "$tmp/deskew.json" 2>/dev/null)"
fi

# ------------------------------------------------- outliers, fine-tuning
OUTLIERS=$build/mnist-outliers
expect 2 'out is required' "outliers: no --out" -- "$OUTLIERS" --n 10
expect 2 "mnist-outliers: --n wants an integer" "outliers: --n 0 refused" -- "$OUTLIERS" --n 0 --out "$tmp/o"
expect 2 'mnist-outliers: --letters: ' "outliers: a letters file that is not IDX" -- "$OUTLIERS" --n 10 --letters "$tiny" --data "$DATA" --out "$tmp/o"
# Reproducible from the seed; another seed draws other images.
if "$OUTLIERS" --n 300 --seed 5 --data "$DATA" --out "$tmp/o1.idx" 2> /dev/null &&
    "$OUTLIERS" --n 300 --seed 5 --data "$DATA" --out "$tmp/o2.idx" 2> /dev/null &&
    "$OUTLIERS" --n 300 --seed 6 --data "$DATA" --out "$tmp/o3.idx" 2> /dev/null &&
    cmp -s "$tmp/o1.idx" "$tmp/o2.idx" && ! cmp -s "$tmp/o1.idx" "$tmp/o3.idx" &&
    [ "$(stat -c %s "$tmp/o1.idx")" -eq $((16 + 300 * 784)) ] &&
    "$PY" - "$tmp/o1.idx" <<'PYEOF'
import struct, sys
b = open(sys.argv[1], "rb").read()
magic, n, r, c = struct.unpack(">IIII", b[:16])
assert (magic, n, r, c) == (0x803, 300, 28, 28), (magic, n, r, c)
# Every image has ink and none is a copy of another.
imgs = [b[16 + i * 784:16 + (i + 1) * 784] for i in range(n)]
assert all(max(im) > 32 for im in imgs)
assert len(set(imgs)) == n
PYEOF
then
    ok "outliers: deterministic IDX file, every image inked and distinct"
else
    not_ok "outliers: deterministic IDX file" "$(ls -l "$tmp"/o?.idx 2>&1 | head -3)"
fi
# mnist-strokes: 0s and 1s drawn with a round pen, as a labelled set.
STROKES=$build/mnist-strokes
expect 2 'out is required' "strokes: no --out" -- "$STROKES" --n 10
expect 2 "mnist-strokes: --n wants an integer" "strokes: --n 0 refused" -- "$STROKES" --n 0 --out "$tmp/s"
expect 2 'unexpected operand' "strokes: a stray operand" -- "$STROKES" --out "$tmp/s" extra
expect 1 '^mnist-strokes: .*nodir/s-images-idx3-ubyte' "strokes: an unwritable --out" -- "$STROKES" --n 4 --out "$tmp/nodir/s"
# Reproducible from the seed, another seed draws others; 1s and 0s in turn,
# framed as uploads are (20 rows of ink, centre of mass at the centre), the
# 1s narrower than tall and every 0 open in the middle.
if "$STROKES" --n 200 --seed 5 --out "$tmp/s1" > /dev/null && "$STROKES" --n 200 --seed 5 --out "$tmp/s2" > /dev/null &&
    "$STROKES" --n 200 --seed 6 --out "$tmp/s3" > /dev/null &&
    cmp -s "$tmp/s1-images-idx3-ubyte" "$tmp/s2-images-idx3-ubyte" &&
    cmp -s "$tmp/s1-labels-idx1-ubyte" "$tmp/s2-labels-idx1-ubyte" &&
    ! cmp -s "$tmp/s1-images-idx3-ubyte" "$tmp/s3-images-idx3-ubyte" &&
    "$PY" - "$tmp/s1" <<'PYEOF'
import struct, sys
b = open(sys.argv[1] + "-images-idx3-ubyte", "rb").read()
l = open(sys.argv[1] + "-labels-idx1-ubyte", "rb").read()
assert struct.unpack(">IIII", b[:16]) == (0x803, 200, 28, 28)
assert struct.unpack(">II", l[:8]) == (0x801, 200)
assert list(l[8:]) == [1, 0] * 100, "labels alternate 1, 0"
imgs = [b[16 + i * 784:16 + (i + 1) * 784] for i in range(200)]
assert len(set(imgs)) == 200, "every image distinct"
for i, im in enumerate(imgs):
    ys = [y for y in range(28) if max(im[y * 28:(y + 1) * 28]) > 64]
    xs = [x for x in range(28) if max(im[x::28]) > 64]
    h, w = ys[-1] - ys[0] + 1, xs[-1] - xs[0] + 1
    t = sum(im)
    cy = sum(v * (k // 28) for k, v in enumerate(im)) / t
    cx = sum(v * (k % 28) for k, v in enumerate(im)) / t
    assert h == 20 and 13.4 < cy < 14.6 and 13.4 < cx < 14.6, (i, "fitted to 20 rows, centred", h, cy, cx)
    if i % 2 == 0:
        assert w < h, (i, "a 1 is narrower than tall", w)
    else:
        assert im[(ys[0] + ys[-1]) // 2 * 28 + (xs[0] + xs[-1]) // 2] < 64, (i, "a 0 is open in the middle")
PYEOF
then
    ok "strokes: deterministic labelled set, 1s and 0s in turn, framed, 1s narrow, 0s open"
else
    not_ok "strokes: deterministic labelled set" "$(ls -l "$tmp"/s?-* 2>&1 | head -3)"
fi
expect 2 'mnist-train: --outliers: ' "train: --outliers file that is not IDX" -- "$TRAIN" --arch "$tiny" --outliers "$tiny" --limit 100 --data "$DATA" --out "$tmp/x"
expect 2 'mnist-train: --init: .*another architecture' "train: --init from another architecture" -- "$TRAIN" --arch "$tiny" --init "$tmp/deskew.safetensors" --limit 100 --data "$DATA" --out "$tmp/x"
expect 2 'mnist-train: --init: ' "train: --init from a missing file" -- "$TRAIN" --arch "$tiny" --init "$tmp/none.safetensors" --limit 100 --data "$DATA" --out "$tmp/x"
# Fine-tuning the tiny model with outlier exposure: it starts from the
# tiny model's weights and still reads digits about as well (that the
# outliers' answers flatten is test_nn's test_training_outliers).
if "$EVAL" --json --data "$DATA" "$tmp/tiny.safetensors" > "$tmp/eval0.json" 2> /dev/null &&
    "$TRAIN" --arch "$tiny" --init "$tmp/tiny.safetensors" --outliers "$tmp/o1.idx" --oe-batch 16 \
        --limit 1000 --epochs 1 --threads 2 --quiet --data "$DATA" --lr 3e-4 \
        --out "$tmp/oe.safetensors" > /dev/null 2> "$tmp/oe.err" &&
    grep -q '^outlier exposure: 16 of 300 outlier images per step, weight 0.5' "$tmp/oe.err" &&
    grep -q "^starting from the weights of $tmp/tiny.safetensors" "$tmp/oe.err" &&
    "$EVAL" --json --data "$DATA" "$tmp/oe.safetensors" > "$tmp/oe.json" &&
    "$PY" -c 'import json,sys; a = json.load(open(sys.argv[1]))["accuracy"]; b = json.load(open(sys.argv[2]))["accuracy"]; sys.exit(0 if a > b - 0.05 else 1)' "$tmp/oe.json" "$tmp/eval0.json"; then
    ok "train: --init + --outliers fine-tunes a model that still reads digits ($(head -c 40 "$tmp/oe.json"))"
else
    not_ok "train: --init + --outliers fine-tunes" "$(tail -c 300 "$tmp/oe.err")" "$(head -c 200 "$tmp/oe.json" 2>/dev/null)"
fi

# ---------------------------------------------------------------- mnist-eval
if "$EVAL" --json --data "$DATA" "$tmp/tiny.safetensors" > "$tmp/eval.json" 2> "$tmp/eval.err" &&
    "$PY" -c 'import json,sys; a = json.load(open(sys.argv[1]))["accuracy"]; sys.exit(0 if 0.6 < a < 1 else 1)' "$tmp/eval.json"; then
    ok "eval: --json reports the tiny model's accuracy ($(head -c 120 "$tmp/eval.json"))"
else
    not_ok "eval: --json reports an accuracy in (0.6, 1)" "$(head -c 300 "$tmp/eval.json")" "$(head -c 300 "$tmp/eval.err")"
fi
head -c 3000 "$tmp/tiny.safetensors" > "$tmp/trunc.safetensors"
head -c 4096 /dev/urandom > "$tmp/noise.safetensors"
printf 'tiny.safetensors\nmissing.safetensors\n' > "$tmp/half.ensemble"
expect 1 'truncated' "eval: truncated weights file" -- "$EVAL" --data "$DATA" "$tmp/trunc.safetensors"
expect 1 'mnist-eval: ' "eval: random bytes as weights" -- "$EVAL" --data "$DATA" "$tmp/noise.safetensors"
expect 1 'cannot open' "eval: missing weights file" -- "$EVAL" --data "$DATA" "$tmp/none.safetensors"
expect 1 'missing.safetensors' "eval: ensemble list with a missing member" -- "$EVAL" --data "$DATA" "$tmp/half.ensemble"
expect 1 'no t10k images' "eval: data directory without MNIST" -- "$EVAL" --data "$tmp" "$tmp/tiny.safetensors"
expect 2 '--shift wants DX,DY' "eval: malformed --shift" -- "$EVAL" --shift 1 "$tmp/tiny.safetensors"
expect 2 "--threads wants an integer from 0 to 1024, got 'two'" "eval: --threads two refused" -- "$EVAL" --threads two "$tmp/tiny.safetensors"
expect 2 "--scale wants a number above 0.05 and below 20, got '0'" "eval: --scale 0 refused" -- "$EVAL" --scale 0 "$tmp/tiny.safetensors"
expect 2 'no MODEL given' "eval: no model" -- "$EVAL" --json

# ---------------------------------------------------------------- mnist-predict
"$MKPNG" --from-idx "$DATA/t10k-images-idx3-ubyte" 0 "$tmp/seven.png" || not_ok "mkpng renders test image 0"
head -c 100 /dev/urandom > "$tmp/junk.png"
"$PREDICT" --model "$tmp/tiny.safetensors" "$tmp/seven.png" > "$tmp/pred.json" 2> "$tmp/pred.err"
rc=$?
if [ $rc -eq 0 ] && "$PY" -c '
import json, sys
r = json.loads(open(sys.argv[1]).readline())
p = r["probabilities"]
assert r["model"] == "tiny" and len(p) == 10 and abs(sum(p) - 1) < 1e-4
assert r["prediction"] == max(range(10), key=lambda i: p[i])' "$tmp/pred.json"; then
    ok "predict: one JSON line, probabilities summing to 1, prediction their argmax"
else
    not_ok "predict: JSON line for a test image" "exit $rc" "$(head -c 300 "$tmp/pred.json")" "$(head -c 300 "$tmp/pred.err")"
fi
"$PREDICT" --model "$tmp/tiny.safetensors" "$tmp/junk.png" "$tmp/seven.png" > "$tmp/pred2.json" 2> "$tmp/pred2.err"
rc=$?
if [ $rc -eq 1 ] && [ "$(wc -l < "$tmp/pred2.json")" -eq 2 ] &&
    head -1 "$tmp/pred2.json" | grep -q '"code":"not_png"' && sed -n 2p "$tmp/pred2.json" | grep -q '"prediction"'; then
    ok "predict: a non-PNG gets an error line, the next image is still classified, exit 1"
else
    not_ok "predict: non-PNG among images" "exit $rc" "$(head -c 400 "$tmp/pred2.json")"
fi
expect 1 'truncated' "predict: truncated weights file" -- "$PREDICT" --model "$tmp/trunc.safetensors" "$tmp/seven.png"
"$MKMODEL" "$tmp/wide.safetensors" 1 32 32 || not_ok "mkmodel writes a 1x32x32 model"
expect 1 'wide.safetensors: takes 1x32x32 inputs, not the 1x28x28' "predict: a model of another input shape is refused" \
    -- "$PREDICT" --model "$tmp/wide.safetensors" "$tmp/seven.png"
# The server's codes: an empty file, a file over --max-bytes, a missing file.
: > "$tmp/empty.png"
"$PREDICT" --model "$tmp/tiny.safetensors" --max-bytes 100 "$tmp/empty.png" "$tmp/seven.png" "$tmp/none.png" \
    > "$tmp/pred3.json" 2> "$tmp/pred3.err"
rc=$?
if [ $rc -eq 1 ] && "$PY" -c '
import json, sys
codes = [json.loads(l).get("error", {}).get("code") for l in open(sys.argv[1])]
assert codes == ["empty_body", "payload_too_large", "unreadable"], codes' "$tmp/pred3.json"; then
    ok "predict: empty_body, payload_too_large (--max-bytes) and unreadable, as codes"
else
    not_ok "predict: error codes for empty, oversized and missing files" "exit $rc" "$(head -c 400 "$tmp/pred3.json")"
fi
expect 2 "--max-bytes wants an integer from 1 to 1073741824, got '0'" "predict: --max-bytes 0 refused" -- "$PREDICT" --max-bytes 0 "$tmp/seven.png"
expect 2 "--max-pixels wants an integer from 1 to 4294967296, got '1e3'" "predict: --max-pixels 1e3 refused" -- "$PREDICT" --max-pixels 1e3 "$tmp/seven.png"
expect 2 'no IMAGE.png given' "predict: no image" -- "$PREDICT" --model "$tmp/tiny.safetensors"
"$PREDICT" --help > "$tmp/phelp.out" 2>&1
if [ $? -eq 0 ] && grep -q -- '--max-bytes N .*(default 2097152)' "$tmp/phelp.out" &&
    grep -q -- '--max-pixels N .*(default 16777216)' "$tmp/phelp.out" && grep -q -- '--models-dir DIR .*(default models)' "$tmp/phelp.out"; then
    ok "predict: --help shows the actual defaults"
else
    not_ok "predict: --help shows the actual defaults" "$(head -c 600 "$tmp/phelp.out")"
fi
expect 2 'mnist-predict: ' "predict: unknown option" -- "$PREDICT" --bogus "$tmp/seven.png"

# ---------------------------------------------------------------- NN_ISA
# The kernel-path cap: every program refuses a bad value up front (exit 2,
# one line naming it); mnist-eval lists the paths and reports the one used.
SERVER=$build/mnist-server
expect 2 'NN_ISA=sse9: unknown kernel path' "isa: eval refuses an unknown NN_ISA" -- env NN_ISA=sse9 "$EVAL" "$tmp/tiny.safetensors"
expect 2 'NN_ISA=sse9: unknown kernel path' "isa: train refuses an unknown NN_ISA" -- env NN_ISA=sse9 "$TRAIN" --arch mlp --out "$tmp/x"
expect 2 'NN_ISA=sse9: unknown kernel path' "isa: predict refuses an unknown NN_ISA" -- env NN_ISA=sse9 "$PREDICT" --model "$tmp/tiny.safetensors" "$tmp/seven.png"
expect 2 'NN_ISA=sse9: unknown kernel path' "isa: server refuses an unknown NN_ISA" -- env NN_ISA=sse9 "$SERVER" --port 0 --models-dir models
kernels=$("$EVAL" --list-kernels)
# NN_PRECISION the same way: an unknown value refused by every program that
# runs models; bf16 refused with NN_ISA below avx512 (AMX needs it), and
# where the CPU has AMX-BF16 it runs the default CNN with the same answer
# to the first test images, saying "precision":"bf16", while a model
# without a convolution chain (LeNet) stays "fp32".
expect 2 'NN_PRECISION=fp8: unknown precision' "precision: eval refuses an unknown NN_PRECISION" -- env NN_PRECISION=fp8 "$EVAL" "$tmp/tiny.safetensors"
expect 2 'NN_PRECISION=fp8: unknown precision' "precision: predict refuses an unknown NN_PRECISION" -- env NN_PRECISION=fp8 "$PREDICT" --model "$tmp/tiny.safetensors" "$tmp/seven.png"
expect 2 'NN_PRECISION=fp8: unknown precision' "precision: server refuses an unknown NN_PRECISION" -- env NN_PRECISION=fp8 "$SERVER" --port 0 --models-dir models
expect 2 'NN_PRECISION=bf16: needs AMX-BF16' "precision: bf16 refused under NN_ISA=avx2" -- env NN_ISA=avx2 NN_PRECISION=bf16 "$EVAL" "$tmp/tiny.safetensors"
if grep -qw amx_bf16 /proc/cpuinfo && grep -qw amx_tile /proc/cpuinfo && grep -qw avx512_bf16 /proc/cpuinfo; then
    if NN_PRECISION=bf16 "$EVAL" --json --limit 1000 models/cnn.safetensors > "$tmp/b16.json" 2> "$tmp/b16.err" &&
        "$EVAL" --json --limit 1000 models/cnn.safetensors > "$tmp/f32.json" &&
        NN_PRECISION=bf16 "$EVAL" --json --limit 200 models/lenet.safetensors > "$tmp/b16l.json" &&
        "$PY" -c 'import json,sys; b, f, l = (json.load(open(x)) for x in sys.argv[1:4])
sys.exit(0 if b["precision"] == "bf16" and f["precision"] == "fp32" and l["precision"] == "fp32"
         and b["confusion"] == f["confusion"] else 1)' "$tmp/b16.json" "$tmp/f32.json" "$tmp/b16l.json"; then
        ok "precision: bf16 on AMX runs the CNN in bf16 (same answers to 1,000 test images), LeNet in fp32"
    else
        not_ok "precision: bf16 on AMX" "$(head -c 300 "$tmp/b16.json")" "$(head -c 300 "$tmp/b16.err")"
    fi
else
    expect 2 'NN_PRECISION=bf16: needs AMX-BF16' "precision: bf16 refused without AMX" -- env NN_PRECISION=bf16 "$EVAL" "$tmp/tiny.safetensors"
fi
# ---------------------------------------------------------------- out of distribution
# A small IDX set (700 training, 300 test images) keeps the fit quick.
small=$tmp/small
mkdir -p "$small"
"$PY" - "$DATA" "$small" <<'PYEOF'
import struct, sys
src, dst = sys.argv[1:3]
for name, hdr, size, n in (("train-images-idx3-ubyte", 16, 784, 700), ("train-labels-idx1-ubyte", 8, 1, 700),
                           ("t10k-images-idx3-ubyte", 16, 784, 300), ("t10k-labels-idx1-ubyte", 8, 1, 300)):
    b = open("%s/%s" % (src, name), "rb").read()
    h = bytearray(b[:hdr])
    h[4:8] = struct.pack(">I", n)
    open("%s/%s" % (dst, name), "wb").write(bytes(h) + b[hdr:hdr + n * size])
PYEOF
"$PY" -c 'import struct,sys; open(sys.argv[1], "wb").write(struct.pack(">IIII", 0x803, 2, 30, 30) + bytes(1800))' "$tmp/big.idx"
if "$EVAL" --ood-fit "$tmp/tiny-ood.safetensors" --ood-holdout 200 --data "$small" "$tmp/tiny.safetensors" \
        > "$tmp/fit.out" 2> "$tmp/fit.err" && grep -q 'threshold .* passes 95% of images 500..699' "$tmp/fit.out" &&
    "$EVAL" --json --data "$DATA" --limit 500 "$tmp/tiny.safetensors" > "$tmp/a.json" &&
    "$EVAL" --json --data "$DATA" --limit 500 "$tmp/tiny-ood.safetensors" > "$tmp/b.json" &&
    "$PY" -c 'import json,sys; a, b = (json.load(open(f)) for f in sys.argv[1:3]); sys.exit(0 if a["accuracy"] == b["accuracy"] and a["confusion"] == b["confusion"] else 1)' "$tmp/a.json" "$tmp/b.json"; then
    ok "eval --ood-fit: fits on 500, threshold from 200 held out; the written model answers as before"
else
    not_ok "eval --ood-fit" "$(head -c 300 "$tmp/fit.out")" "$(head -c 300 "$tmp/fit.err")"
fi
# The test set against itself: every pair ties or mirrors, AUROC exactly 0.5.
if "$EVAL" --ood "$small" --data "$small" --json "$tmp/tiny-ood.safetensors" > "$tmp/ood.json" 2> "$tmp/ood.err" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); r = d["raw"]; m = r["stored"]
sys.exit(0 if d["ood_method"] == "mahalanobis" and m["method"] == "mahalanobis" and d["ood_threshold"] > 0 and r["in_n"] == 300
         and all(r[k]["auroc"] == 0.5 for k in ("msp", "energy", "stored")) and m["in_pass"] == m["out_pass"]
         and "stored" in d["prepared"] else 1)' "$tmp/ood.json"; then
    ok "eval --ood --json: a set against itself gives AUROC 0.5 for each score, raw and prepared"
else
    not_ok "eval --ood --json" "$(head -c 400 "$tmp/ood.json")" "$(head -c 300 "$tmp/ood.err")"
fi
if "$EVAL" --ood "$small" --data "$small" --json "$tmp/tiny.safetensors" > "$tmp/ood0.json" 2> "$tmp/ood.err" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); sys.exit(0 if d["ood_method"] is None and "stored" not in d["raw"] and "energy" in d["raw"] else 1)' "$tmp/ood0.json" &&
    "$EVAL" --ood "$small" --data "$small" "$tmp/tiny-ood.safetensors" 2>&1 | grep -q '^raw       mahalanobis\*'; then
    ok "eval --ood: no stored-score row for a model without statistics; text report"
else
    not_ok "eval --ood without statistics" "$(head -c 300 "$tmp/ood0.json")"
fi
# --stamp: the ECE measured now goes into the metadata, the tensors stay
# byte for byte; the stamped file evaluates the same.
if "$EVAL" --json --stamp "$tmp/tiny-ece.safetensors" --data "$DATA" "$tmp/tiny.safetensors" \
        > "$tmp/st.json" 2> "$tmp/st.err" &&
    "$EVAL" --json --data "$DATA" "$tmp/tiny-ece.safetensors" > "$tmp/st2.json" &&
    "$PY" - "$tmp/tiny.safetensors" "$tmp/tiny-ece.safetensors" "$tmp/st.json" "$tmp/st2.json" <<'PYEOF'
import json, struct, sys
def parts(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return h.pop("__metadata__"), h, b[8 + n:]
m0, h0, d0 = parts(sys.argv[1])
m1, h1, d1 = parts(sys.argv[2])
a, b = (json.load(open(f)) for f in sys.argv[3:5])
assert 0 < a["ece"] < 1 and isinstance(a["ece_edge"], int) and a["ece_bins"] == 15, a
assert 0 < a["ece_floor"] < 1 and 0 < a["ece_floor_sd"] < 1, a  # a net unsure of some answers has a floor above 0
assert abs(float(m1["test_ece"]) - a["ece"]) < 1e-6, (m1, a["ece"])
# mnist-train wrote its own figure on the same test set, from its own
# forward pass (batch norm not folded): equal up to what rounding can move
# (nn_ece_edge in nn/eval.h).
room = (2 * a["ece_edge"] + a["borderline"]) / a["n"] + 1e-4 + 1e-6
assert abs(float(m0["test_ece"]) - a["ece"]) <= room, (m0.get("test_ece"), a["ece"], room)
assert d0 == d1 and h0 == h1 and m0["checksum"] == m1["checksum"], "tensors changed"
assert a["accuracy"] == b["accuracy"] and a["ece"] == b["ece"], (a, b)
PYEOF
then
    ok "eval --stamp (and mnist-train): test_ece in the metadata is the ECE --json reports; tensors byte for byte"
else
    not_ok "eval --stamp" "$(head -c 300 "$tmp/st.err")" "$(head -c 300 "$tmp/st.json")"
fi
expect 2 '--stamp takes one weights file' "eval: --stamp refuses an ensemble" -- \
    "$EVAL" --stamp "$tmp/x.safetensors" "$tmp/tiny.safetensors,$tmp/tiny.safetensors"
expect 2 '--stamp takes one weights file' "eval: --stamp refuses a partial test set" -- \
    "$EVAL" --stamp "$tmp/x.safetensors" --limit 10 "$tmp/tiny.safetensors"
expect 1 'mnist-eval: ' "eval: --stamp into a missing directory fails" -- \
    "$EVAL" --stamp "$tmp/no/such/dir.safetensors" --data "$DATA" "$tmp/tiny.safetensors"
if "$PREDICT" --model "$tmp/tiny-ood.safetensors" "$tmp/seven.png" > "$tmp/p.json" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); sys.exit(0 if isinstance(d["ood_score"], float) and isinstance(d["in_distribution"], bool) else 1)' "$tmp/p.json" &&
    "$PREDICT" --model "$tmp/tiny.safetensors" "$tmp/seven.png" | grep -q '"ood_score":null,"in_distribution":null'; then
    ok "predict: ood_score and in_distribution with statistics, null without"
else
    not_ok "predict: ood fields" "$(head -c 300 "$tmp/p.json")"
fi
# The energy method: no statistics, a threshold from the held-out images;
# its score is the energy row's (one model), served by predict.
if "$EVAL" --ood-fit "$tmp/tiny-en.safetensors" --ood-method energy --ood-holdout 200 --data "$small" \
        "$tmp/tiny.safetensors" > "$tmp/fit.out" 2> "$tmp/fit.err" &&
    grep -q '^energy score; threshold .* passes 95% of .* images 500..699' "$tmp/fit.out" &&
    [ "$(stat -c %s "$tmp/tiny-en.safetensors")" -lt "$(stat -c %s "$tmp/tiny-ood.safetensors")" ] &&
    "$EVAL" --ood "$small" --data "$small" --json "$tmp/tiny-en.safetensors" > "$tmp/en.json" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); r = d["raw"]
sys.exit(0 if d["ood_method"] == "energy" and r["stored"]["method"] == "energy" and r["stored"]["auroc"] == r["energy"]["auroc"] else 1)' "$tmp/en.json" &&
    "$PREDICT" --model "$tmp/tiny-en.safetensors" "$tmp/seven.png" | grep -q '"in_distribution":\(true\|false\)'; then
    ok "eval --ood-fit --ood-method energy: threshold only, reported and served"
else
    not_ok "eval --ood-method energy" "$(head -c 300 "$tmp/fit.out")" "$(head -c 300 "$tmp/fit.err")" "$(head -c 300 "$tmp/en.json" 2>/dev/null)"
fi
# --ood-pass: the threshold lets that share of the 200 held-out images
# pass, so a larger share sets a threshold no lower, which passes no fewer
# test digits; the fit says which share it used.
if "$EVAL" --ood-fit "$tmp/tiny-en99.safetensors" --ood-method energy --ood-pass 0.99 \
        --ood-holdout 200 --data "$small" "$tmp/tiny.safetensors" > "$tmp/fit99.out" 2> "$tmp/fit99.err" &&
    grep -q '^energy score; threshold .* passes 99% of .* images 500..699' "$tmp/fit99.out" &&
    "$EVAL" --ood "$small" --data "$small" --json "$tmp/tiny-en99.safetensors" > "$tmp/en99.json" &&
    "$PY" -c 'import json,sys
a = json.load(open(sys.argv[1]))["raw"]["stored"]; b = json.load(open(sys.argv[2]))["raw"]["stored"]
sys.exit(0 if b["threshold"] > a["threshold"] and b["in_pass"] >= a["in_pass"] else 1)' "$tmp/en.json" "$tmp/en99.json"; then
    ok "eval --ood-fit --ood-pass 0.99: a higher threshold than 0.95's, passing no fewer digits"
else
    not_ok "eval --ood-pass" "$(head -c 300 "$tmp/fit99.out")" "$(head -c 300 "$tmp/fit99.err")" "$(head -c 300 "$tmp/en99.json" 2>/dev/null)"
fi
expect 2 'ood-pass' "eval: --ood-pass below 0.5 is refused" -- \
    "$EVAL" --ood-fit "$tmp/x" --ood-method energy --ood-pass 0.3 --data "$small" "$tmp/tiny.safetensors"
expect 2 'ood-pass' "eval: --ood-pass above 1 is refused" -- \
    "$EVAL" --ood-fit "$tmp/x" --ood-method energy --ood-pass 1.5 --data "$small" "$tmp/tiny.safetensors"
# The head method: a classifier trained on the features of the 500 fitting
# images (and --head-in's, repeated) against --head-out's outliers; the
# net's answers stay as they were, the same seed writes the same file and
# another seed another, and predict serves the score.
hfit() { "$EVAL" --ood-fit "$1" --ood-method head --head-out "$tmp/o1.idx" --head-in "$small" \
    --head-in-repeat 2 --head-hidden 8 --head-epochs 3 --head-seed "$2" --ood-holdout 200 \
    --data "$small" "$tmp/tiny.safetensors"; }
if hfit "$tmp/tiny-h.safetensors" 1 > "$tmp/fith.out" 2> "$tmp/fith.err" &&
    grep -q '^head: 8 hidden units trained 3 epochs (seed 1) on 1900 digits and 300 outliers$' "$tmp/fith.out" &&
    grep -q '^head score; threshold .* passes 95% of .* images 500..699' "$tmp/fith.out" &&
    hfit "$tmp/tiny-h1.safetensors" 1 > /dev/null 2>&1 && hfit "$tmp/tiny-h2.safetensors" 2 > /dev/null 2>&1 &&
    cmp -s "$tmp/tiny-h.safetensors" "$tmp/tiny-h1.safetensors" &&
    ! cmp -s "$tmp/tiny-h.safetensors" "$tmp/tiny-h2.safetensors" &&
    "$EVAL" --json --data "$DATA" --limit 500 "$tmp/tiny-h.safetensors" > "$tmp/h.json" &&
    "$PY" -c 'import json,sys; a, b = (json.load(open(f)) for f in sys.argv[1:3]); sys.exit(0 if a["accuracy"] == b["accuracy"] and a["confusion"] == b["confusion"] else 1)' "$tmp/a.json" "$tmp/h.json" &&
    "$EVAL" --ood "$small" --data "$small" --json "$tmp/tiny-h.safetensors" > "$tmp/hood.json" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); r = d["raw"]
sys.exit(0 if d["ood_method"] == "head" and r["stored"]["method"] == "head" and r["stored"]["auroc"] == 0.5 else 1)' "$tmp/hood.json" &&
    "$PREDICT" --model "$tmp/tiny-h.safetensors" "$tmp/seven.png" | grep -q '"ood_score":[-0-9.e]*,"in_distribution":\(true\|false\)'; then
    ok "eval --ood-fit --ood-method head: trained on features, deterministic per seed, answers unchanged, served"
else
    not_ok "eval --ood-method head" "$(head -c 300 "$tmp/fith.out")" "$(head -c 300 "$tmp/fith.err")" "$(head -c 300 "$tmp/hood.json" 2>/dev/null)"
fi
# --head-in takes a list: its sets one after another, all of them R times,
# so SET,SET once trains the same head as SET twice.
if hfit "$tmp/tiny-hl.safetensors" 1 > /dev/null 2>&1 &&
    "$EVAL" --ood-fit "$tmp/tiny-hl2.safetensors" --ood-method head --head-out "$tmp/o1.idx" --head-in "$small,$small" \
        --head-in-repeat 1 --head-hidden 8 --head-epochs 3 --head-seed 1 --ood-holdout 200 \
        --data "$small" "$tmp/tiny.safetensors" > "$tmp/fithl.out" 2>&1 &&
    grep -q 'on 1900 digits and 300 outliers$' "$tmp/fithl.out" &&
    cmp -s "$tmp/tiny-hl.safetensors" "$tmp/tiny-hl2.safetensors"; then
    ok "eval --head-in SET,SET: the sets in turn, repeated as one (the same head as SET twice)"
else
    not_ok "eval --head-in list" "$(head -c 300 "$tmp/fithl.out")"
fi
expect 1 'mnist-eval: --head-in: ' "eval: a --head-in list with a missing set" -- \
    "$EVAL" --ood-fit "$tmp/x" --ood-method head --head-in "$small,$tmp/none" --head-out "$tmp/o1.idx" --ood-holdout 200 --data "$small" "$tmp/tiny.safetensors"
expect 1 'mnist-eval: --head-in names no set' "eval: an empty --head-in list" -- \
    "$EVAL" --ood-fit "$tmp/x" --ood-method head --head-in , --head-out "$tmp/o1.idx" --ood-holdout 200 --data "$small" "$tmp/tiny.safetensors"
expect 1 'needs --head-out' "eval: --ood-method head without outliers" -- \
    "$EVAL" --ood-fit "$tmp/x" --ood-method head --ood-holdout 200 --data "$small" "$tmp/tiny.safetensors"
expect 2 'go with --ood-fit and --ood-method head' "eval: --head-out with another method" -- \
    "$EVAL" --ood-fit "$tmp/x" --head-out "$tmp/o1.idx" --data "$small" "$tmp/tiny.safetensors"
expect 1 'mnist-eval: --head-out: ' "eval: --head-out file missing" -- \
    "$EVAL" --ood-fit "$tmp/x" --ood-method head --head-out "$tmp/none.idx" --ood-holdout 200 --data "$small" "$tmp/tiny.safetensors"
expect 1 'is not a set of 28x28 images' "eval: --head-out of another size" -- \
    "$EVAL" --ood-fit "$tmp/x" --ood-method head --head-out "$tmp/big.idx" --ood-holdout 200 --data "$small" "$tmp/tiny.safetensors"
# --fit-temperature: T fitted on the last 200 training images (nothing of
# the test set), stored in the metadata; answers keep their argmax, and
# mnist-predict serves softmax(z / T), i.e. p_j^(1/T) renormalised.
if "$EVAL" --fit-temperature "$tmp/tiny-t.safetensors" --ood-holdout 200 --data "$small" \
        "$tmp/tiny.safetensors" > "$tmp/ft.out" 2> "$tmp/ft.err" &&
    grep -q '^temperature .* (was 1), fitted on .* training images 500..699: NLL .* -> ' "$tmp/ft.out" &&
    "$EVAL" --json --data "$DATA" --limit 500 "$tmp/tiny.safetensors" > "$tmp/a.json" &&
    "$EVAL" --json --data "$DATA" --limit 500 "$tmp/tiny-t.safetensors" > "$tmp/b.json" &&
    "$PREDICT" --model "$tmp/tiny.safetensors" "$tmp/seven.png" > "$tmp/p0.json" &&
    "$PREDICT" --model "$tmp/tiny-t.safetensors" "$tmp/seven.png" > "$tmp/p1.json" &&
    "$PY" - "$tmp/tiny-t.safetensors" "$tmp/a.json" "$tmp/b.json" "$tmp/p0.json" "$tmp/p1.json" "$tmp/ft.out" <<'PYEOF'
import json, math, re, struct, sys
b = open(sys.argv[1], "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
t = float(meta["temperature"])
assert "test_ece" not in meta, meta  # measured at the old temperature: dropped
assert abs(t - float(re.match(r"temperature (\S+)", open(sys.argv[6]).read()).group(1))) < 1e-5 * t
assert 0.05 <= t <= 20 and abs(t - 1) > 1e-3, t
a, c = (json.load(open(f)) for f in sys.argv[2:4])
assert a["accuracy"] == c["accuracy"] and a["confusion"] == c["confusion"], "argmax moved"
p0, p1 = (json.load(open(f))["probabilities"] for f in sys.argv[4:6])
q = [v ** (1 / t) for v in p0]
q = [v / sum(q) for v in q]
# p0 carries float rounding (a few 1e-7 relative); raised to 1/T it stays
# within 1e-6 relative for the T fitted here.
assert all(abs(x - y) <= 1e-5 * y + 1e-7 for x, y in zip(p1, q)), (p1, q)
PYEOF
then
    ok "eval --fit-temperature: T from 200 held-out training images in the metadata; argmax kept; predict serves softmax(z/T)"
else
    not_ok "eval --fit-temperature" "$(head -c 300 "$tmp/ft.out")" "$(head -c 300 "$tmp/ft.err")"
fi
# Two members that disagree (the same net at two temperatures): the
# disagreement row, its threshold from the last 200 training images; the
# set against itself gives AUROC 0.5 and equal in and out shares.
if "$EVAL" --ood "$small" --data "$small" --ood-holdout 200 --json \
        "$tmp/tiny.safetensors,$tmp/tiny-t.safetensors" > "$tmp/dis.json" 2> "$tmp/dis.err" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); r = d["raw"]["disagree"]
sys.exit(0 if r["auroc"] == 0.5 and r["threshold"] > 0 and r["in_pass"] == r["out_pass"] > 0
         and r["threshold_from"].endswith("training images 500..699") and "disagree" in d["prepared"] else 1)' "$tmp/dis.json" &&
    "$EVAL" --ood "$small" --data "$small" --json "$tmp/tiny.safetensors" > "$tmp/dis1.json" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); sys.exit(0 if "disagree" not in d["raw"] else 1)' "$tmp/dis1.json"; then
    ok "eval --ood: an ensemble's disagreement row with a threshold from held-out training images; none for one model"
else
    not_ok "eval --ood disagreement" "$(head -c 400 "$tmp/dis.json")" "$(head -c 300 "$tmp/dis.err")"
fi
# --per-class: the out set's images per label; the counts add up to the
# set and the per-class shares to the stored score's out_pass.
if "$EVAL" --ood "$small" --data "$small" --per-class digits --json "$tmp/tiny-ood.safetensors" \
        > "$tmp/pc.json" 2> "$tmp/pc.err" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1]))
for path in ("raw", "prepared"):
    rows = d["per_class"][path]; n = sum(r["n"] for r in rows)
    assert [r["name"] for r in rows] == [str(c) for c in range(10)], rows
    assert n == d[path]["out_n"], (n, d[path]["out_n"])
    passed = sum(round(r["in_pass"] * r["n"]) for r in rows)
    assert passed == round(d[path]["stored"]["out_pass"] * n), (passed, d[path]["stored"])
    assert all(0 < r["answer_share"] <= 1 and r["answer"] in d.get("labels", [str(c) for c in range(10)]) for r in rows)' "$tmp/pc.json" &&
    "$EVAL" --ood "$small" --data "$small" --per-class letters "$tmp/tiny-ood.safetensors" | grep -q '^A  *[0-9]* *[0-9.]*%   [0-9]'; then
    ok "eval --ood --per-class: per-label counts add up to the set and the stored score's pass share"
else
    not_ok "eval --ood --per-class" "$(head -c 400 "$tmp/pc.json")" "$(head -c 300 "$tmp/pc.err")"
fi
expect 2 '^mnist-eval: --per-class goes with --ood and wants letters, digits or index$' "eval: --per-class without --ood" -- \
    "$EVAL" --per-class letters --data "$small" "$tmp/tiny.safetensors"
expect 2 '^mnist-eval: --per-class goes with --ood and wants letters, digits or index$' "eval: --per-class with an unknown naming" -- \
    "$EVAL" --ood "$small" --per-class greek --data "$small" "$tmp/tiny-ood.safetensors"
expect 1 'per-class counts what the stored score passes: the model has none' "eval: --per-class of a model without a stored score" -- \
    "$EVAL" --ood "$small" --per-class digits --data "$small" "$tmp/tiny.safetensors"
expect 2 'fit-temperature takes one weights file, not an ensemble' "eval: --fit-temperature of an ensemble" -- \
    "$EVAL" --fit-temperature "$tmp/x" --data "$small" "$tmp/tiny.safetensors,$tmp/tiny.safetensors"
expect 2 'fit-temperature takes no other mode' "eval: --fit-temperature with --ood" -- \
    "$EVAL" --fit-temperature "$tmp/x" --ood "$small" --data "$small" "$tmp/tiny.safetensors"
# The same file with a corrupt temperature: refused at load, not guessed.
"$PY" - "$tmp/tiny-t.safetensors" "$tmp/tiny-tbad.safetensors" <<'PYEOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h["__metadata__"]["temperature"] = "-2"
j = json.dumps(h).encode()
open(sys.argv[2], "wb").write(struct.pack("<Q", len(j)) + j + b[8 + n:])
PYEOF
expect 1 'metadata "temperature" is "-2"' "eval: a file with a negative temperature is refused" -- \
    "$EVAL" --data "$small" "$tmp/tiny-tbad.safetensors"
expect 2 'ood-method must be mahalanobis, energy or head' "eval: unknown --ood-method" -- \
    "$EVAL" --ood-fit "$tmp/x" --ood-method msp --data "$small" "$tmp/tiny.safetensors"
expect 2 'mnist-train: --extra-data: ' "train: --extra-data without its files" -- \
    "$TRAIN" --arch "$tiny" --extra-data "$tmp/nowhere" --limit 100 --data "$DATA" --out "$tmp/x"
expect 2 'separate runs' "eval: --ood and --ood-fit together" -- "$EVAL" --ood "$small" --ood-fit "$tmp/x" "$tmp/tiny.safetensors"
expect 2 'one weights file, not an ensemble' "eval: --ood-fit of an ensemble" -- \
    "$EVAL" --ood-fit "$tmp/x" --data "$small" "$tmp/tiny.safetensors,$tmp/tiny.safetensors"
expect 1 'no t10k images|cannot open|--ood' "eval: --ood of a directory without IDX files" -- \
    "$EVAL" --ood "$tmp/nowhere" --data "$small" "$tmp/tiny.safetensors"

# ---------------------------------------------------------------- uploads
# --upload STYLE: each image as a PNG through the serving pipeline. A 28x28
# MNIST digit comes out of the preprocessing as value/255 exactly, stored,
# inverted or as alpha ink (image.h), so the answers are the raw ones.
"$EVAL" --json --data "$small" "$tmp/tiny.safetensors" > "$tmp/up-raw.json" 2> /dev/null
for style in gray inverted alpha; do
    if "$EVAL" --json --upload $style --data "$small" "$tmp/tiny.safetensors" > "$tmp/up.json" 2> "$tmp/up.err" &&
        "$PY" -c 'import json,sys; a, b = (json.load(open(f)) for f in sys.argv[1:3])
sys.exit(0 if a["upload"] is None and b["upload"] == sys.argv[3] and b["refused"] == 0 and b["n"] == 300
         and a["accuracy"] == b["accuracy"] and a["confusion"] == b["confusion"] else 1)' "$tmp/up-raw.json" "$tmp/up.json" $style; then
        ok "eval --upload $style: the same answers as the raw images"
    else
        not_ok "eval --upload $style" "$(head -c 300 "$tmp/up.json")" "$(head -c 300 "$tmp/up.err")"
    fi
done
# Colour: the luma of blue ink on yellow paper, a little less contrast.
if "$EVAL" --upload colour --data "$small" "$tmp/tiny.safetensors" > "$tmp/up.txt" 2> "$tmp/up.err" &&
    grep -q '^upload: colour PNGs through the serving pipeline, 0 refused' "$tmp/up.txt" &&
    grep -Eq '^test accuracy: 0\.([6-9]|[0-9]{2})' "$tmp/up.txt" && grep -q 'batch 1,' "$tmp/up.txt"; then
    ok "eval --upload colour: text report, nothing refused, accuracy above 0.6"
else
    not_ok "eval --upload colour" "$(head -c 400 "$tmp/up.txt")" "$(head -c 300 "$tmp/up.err")"
fi
# Sets by prefix, of any image size with --upload; blank images are refused
# by the pipeline and count as errors.
"$PY" - "$small" "$tmp" <<'PYEOF'
import struct, sys
src, dst = sys.argv[1:3]
im = open(src + "/t10k-images-idx3-ubyte", "rb").read()
lb = open(src + "/t10k-labels-idx1-ubyte", "rb").read()
n = 50
big = bytearray()
for i in range(n):  # each image doubled to 56x56 (nearest neighbour)
    px = im[16 + 784 * i:16 + 784 * (i + 1)]
    for y in range(56):
        big += bytes(px[(y // 2) * 28 + x // 2] for x in range(56))
open(dst + "/big-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x803, n, 56, 56) + bytes(big))
open(dst + "/big-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, n) + lb[8:8 + n])
open(dst + "/blank-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x803, 3, 28, 28) + bytes(3 * 784))
open(dst + "/blank-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, 3) + bytes([1, 2, 3]))
PYEOF
"$EVAL" --json --limit 50 --data "$small" "$tmp/tiny.safetensors" > "$tmp/up50.json" 2> /dev/null
if "$EVAL" --json --upload gray --data "$tmp/big" "$tmp/tiny.safetensors" > "$tmp/up.json" 2> "$tmp/up.err" &&
    "$PY" -c 'import json,sys; a, b = (json.load(open(f)) for f in sys.argv[1:3])
sys.exit(0 if b["n"] == 50 and b["refused"] == 0 and abs(a["accuracy"] - b["accuracy"]) <= 0.1 and b["data"].endswith("/big") else 1)' \
        "$tmp/up50.json" "$tmp/up.json"; then
    ok "eval --upload --data PREFIX: 56x56 images are prepared to 28x28 and read like the originals"
else
    not_ok "eval --upload of 56x56 images" "$(head -c 300 "$tmp/up.json")" "$(head -c 300 "$tmp/up.err")"
fi
if "$EVAL" --json --upload inverted --data "$tmp/blank" "$tmp/tiny.safetensors" > "$tmp/up.json" 2> "$tmp/up.err" &&
    "$PY" -c 'import json,sys; b = json.load(open(sys.argv[1]))
sys.exit(0 if b["n"] == 3 and b["refused"] == 3 and b["accuracy"] == 0 and sum(map(sum, b["confusion"])) == 0 else 1)' "$tmp/up.json"; then
    ok "eval --upload: blank images are refused and count as errors"
else
    not_ok "eval --upload of blank images" "$(head -c 300 "$tmp/up.json")" "$(head -c 300 "$tmp/up.err")"
fi
# --ood of a set of another size: scored as uploads only.
if "$EVAL" --json --ood "$tmp/big" --data "$small" "$tmp/tiny-ood.safetensors" > "$tmp/ood-big.json" 2> "$tmp/ood.err" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); p = d["prepared"]
sys.exit(0 if d["raw"] is None and p["out_n"] == 50 and p["in_n"] == 300 and "stored" in p else 1)' "$tmp/ood-big.json" &&
    "$EVAL" --ood "$tmp/big" --data "$small" "$tmp/tiny-ood.safetensors" 2>&1 | grep -q "^raw .*not scored: .*big's images are 56x56"; then
    ok "eval --ood PREFIX of 56x56 images: scored as uploads, no raw figures"
else
    not_ok "eval --ood of 56x56 images" "$(head -c 300 "$tmp/ood-big.json")" "$(head -c 300 "$tmp/ood.err")"
fi
expect 1 '^mnist-eval: --ood wants a 1x28x28 model and 28x28 test images$' "eval: --ood with 56x56 images as the test set" -- \
    "$EVAL" --ood "$small" --data "$tmp/big" "$tmp/tiny-ood.safetensors"
expect 1 'the model wants 1x28x28 inputs, the data is 56x56' "eval: 56x56 images without --upload" -- \
    "$EVAL" --data "$tmp/big" "$tmp/tiny.safetensors"
expect 1 'wide.safetensors: takes 1x32x32 inputs' "eval --upload: a model the pipeline cannot feed" -- \
    "$EVAL" --upload gray --data "$small" "$tmp/wide.safetensors"
expect 1 "$tmp/nothing: no such directory, nor $tmp/nothing-images-idx3-ubyte files" "eval: --data neither directory nor prefix" -- \
    "$EVAL" --data "$tmp/nothing" "$tmp/tiny.safetensors"
expect 2 '^mnist-eval: --upload wants gray, inverted, colour or alpha$' "eval: unknown --upload style" -- \
    "$EVAL" --upload sepia "$tmp/tiny.safetensors"
expect 2 '^mnist-eval: --upload takes no --shift, --rotate or --scale$' "eval: --upload with --rotate" -- \
    "$EVAL" --upload gray --rotate 10 "$tmp/tiny.safetensors"
expect 2 '^mnist-eval: --upload takes no --ood or --ood-fit$' "eval: --upload with --ood" -- \
    "$EVAL" --upload gray --ood "$small" "$tmp/tiny.safetensors"

case " $kernels " in
" generic "*) ok "isa: --list-kernels starts with generic ($kernels)" ;;
*) not_ok "isa: --list-kernels starts with generic" "got: $kernels" ;;
esac
if [ "$(NN_ISA=generic "$EVAL" --list-kernels)" = generic ]; then
    ok "isa: NN_ISA=generic caps the list to generic"
else
    not_ok "isa: NN_ISA=generic caps the list" "got: $(NN_ISA=generic "$EVAL" --list-kernels)"
fi
# A path this CPU lacks is refused by name (avx512 where it is missing).
case " $kernels " in
*" avx512 "*) ;; # every path runs here: there is nothing to refuse
*) expect 2 'NN_ISA=avx512: this CPU cannot run' "isa: a path the CPU lacks is refused" -- env NN_ISA=avx512 "$EVAL" "$tmp/tiny.safetensors" ;;
esac
for k in $kernels; do
    if NN_ISA=$k "$EVAL" --json --limit 500 --data "$DATA" "$tmp/tiny.safetensors" > "$tmp/k.json" 2> "$tmp/k.err" &&
        "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); sys.exit(0 if d["kernels"] == sys.argv[2] and d["borderline"] >= 0 else 1)' "$tmp/k.json" "$k"; then
        ok "isa: NN_ISA=$k runs and reports the $k kernels"
    else
        not_ok "isa: NN_ISA=$k reported in --json" "$(head -c 300 "$tmp/k.json")" "$(head -c 300 "$tmp/k.err")"
    fi
done

echo "cli: $pass passed, $failed failed"
[ "$failed" -eq 0 ]

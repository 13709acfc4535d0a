#!/usr/bin/env bash
# Every numeric option of mnist-train, mnist-eval and mnist-predict at the
# ends of its range (accepted) and one step past each end (refused).
#
#   tests/cli/edges.sh BUILD_DIR      (BUILD_DIR: build or build/asan)
#
# An accepted value must get the program past option parsing: it then
# stops on a missing data directory or weights file, named on stderr,
# and never with "--OPTION wants". A refused value must end the program
# with exit status 2 and exactly one line naming the option. Output is
# TAP-like, closed by "cli-edges: N passed, M failed"; the exit status is
# non-zero on any failure.
set -uo pipefail

# shellcheck source=tests/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnist-cli-edges.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/cli/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# What follows the option under test, so that a program that parsed its
# options stops at once on something that is not there.
train_tail=(--data "$tmp/nodata" --out "$tmp/x.safetensors")
eval_tail=("$tmp/none.safetensors")
predict_tail=(--model "$tmp/none.safetensors" "$tmp/none.png")

# check PROG OPTION "ACCEPTED..." "REFUSED..."
check() {
    local prog=$1 opt=$2 good=$3 bad=$4 v rc tail_name
    tail_name="${prog#mnist-}_tail[@]"
    for v in $good; do
        "$build/$prog" "--$opt" "$v" "${!tail_name}" > "$tmp/out" 2> "$tmp/err"
        rc=$?
        if grep -q -- "--$opt wants" "$tmp/err" || [ $rc -eq 0 ] || [ $rc -gt 128 ] ||
            ! grep -q "$tmp/n" "$tmp/err"; then
            not_ok "$prog --$opt $v accepted" "exit $rc: $(head -c 300 "$tmp/err")"
        else
            ok "$prog --$opt $v accepted"
        fi
    done
    for v in $bad; do
        "$build/$prog" "--$opt" "$v" "${!tail_name}" > "$tmp/out" 2> "$tmp/err"
        rc=$?
        if [ $rc -eq 2 ] && [ "$(grep -c . "$tmp/err")" -eq 1 ] && grep -q -- "^$prog: --$opt wants" "$tmp/err"; then
            ok "$prog --$opt $v refused"
        else
            not_ok "$prog --$opt $v refused" "exit $rc: $(head -c 300 "$tmp/err")"
        fi
    done
}

for prog in mnist-train mnist-eval mnist-predict; do
    [ -x "$build/$prog" ] || { not_ok "$build/$prog exists" "run: make all"; }
done

#     program        option       at the ends (accepted)          one past (refused)
check mnist-train    epochs       "1 100000"                      "0 100001"
check mnist-train    batch        "1 65536"                       "0 65537"
check mnist-train    lr           "1e-300 10"                     "0 10.000001 -1"
check mnist-train    gamma        "1e-300 100"                    "0 100.00001"
check mnist-train    step         "1e-300 100000"                 "0 100000.01"
check mnist-train    warmup       "0 100000"                      "-1e-9 100000.01"
check mnist-train    wd           "0 10"                          "-1e-9 10.000001"
check mnist-train    ls           "0 0.999999"                    "-1e-9 1"
check mnist-train    ema          "0 0.999999"                    "-1e-9 1"
check mnist-train    stroke       "0 1"                           "-1e-9 1.000001"
check mnist-train    blur         "0 4"                           "-1e-9 4.000001"
check mnist-train    dropout      "0 0.999999"                    "-1e-9 1"
check mnist-train    flip         "0 1"                           "-1e-9 1.000001"
check mnist-train    seed         "0 18446744073709551615"        "-1 18446744073709551616"
check mnist-train    threads      "0 1024"                        "-1 1025"
check mnist-train    val          "0 100000000"                   "-1 100000001"
check mnist-train    limit        "0 100000000"                   "-1 100000001"
check mnist-train    lr           ""                              "nan inf 1e400 1,5"
check mnist-eval     threads      "0 1024"                        "-1 1025"
check mnist-eval     limit        "0 100000000"                   "-1 100000001"
check mnist-eval     rotate       "-360 360"                      "-360.000001 360.000001 nan"
check mnist-eval     scale        "0.050001 19.99999"             "0.05 20"
check mnist-predict  max-pixels   "1 4294967296"                  "0 4294967297"
check mnist-predict  max-bytes    "1 1073741824"                  "0 1073741825"

# ---- counts at their limits, through a real evaluation (the shipped mlp
# over the MNIST test set): --limit 1 evaluates one image, a limit past the
# set's size evaluates the whole set; the text report and a transform.
PY=/usr/bin/python3
command -v "$PY" >/dev/null || PY=python3
DATA=${MNIST_DIR:-data/mnist}
MLP=${MODELS_DIR:-models}/mlp.safetensors
if [ -f "$DATA/t10k-images-idx3-ubyte" ] && [ -f "$MLP" ]; then
    for lim in 1:1 100000000:10000; do
        "$build/mnist-eval" --json --data "$DATA" --limit "${lim%%:*}" "$MLP" > "$tmp/eval.json" 2> "$tmp/err"
        if "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if j["n"] == int(sys.argv[2]) else 1)' \
            "$tmp/eval.json" "${lim#*:}" 2>/dev/null; then ok "mnist-eval --limit ${lim%%:*}: ${lim#*:} images"
        else not_ok "mnist-eval --limit ${lim%%:*}: ${lim#*:} images" "$(head -c 300 "$tmp/eval.json") $(head -c 300 "$tmp/err")"; fi
    done
    "$build/mnist-eval" --json --data "$DATA" --limit 2 --shift 1,-1 --rotate 360 --scale 19.99 "$MLP" > "$tmp/eval.json" 2> "$tmp/err"
    if "$PY" -c 'import json,sys; t=json.load(open(sys.argv[1]))["transform"]; sys.exit(0 if (t["dx"], t["dy"], t["rotate"]) == (1, -1, 360) and abs(t["scale"] - 19.99) < 1e-5 else 1)' \
        "$tmp/eval.json" 2>/dev/null; then ok "mnist-eval: a transform at its limits is applied and reported"
    else not_ok "mnist-eval: a transform at its limits is applied and reported" "$(head -c 300 "$tmp/eval.json") $(head -c 300 "$tmp/err")"; fi
    "$build/mnist-eval" --data "$DATA" --limit 1 "$MLP" > "$tmp/eval.txt" 2> "$tmp/err"
    if grep -q '^test accuracy: [01]\.0000 ([01]/1, [01] errors)$' "$tmp/eval.txt" && grep -q '^confusion' "$tmp/eval.txt"
    then ok "mnist-eval text report of one image"
    else not_ok "mnist-eval text report of one image" "$(head -c 300 "$tmp/eval.txt") $(head -c 300 "$tmp/err")"; fi
else
    echo "# no MNIST test set or models/mlp.safetensors: the evaluation checks are not run (and not counted)"
fi
# ---- mnist-predict's file limits at the edge: a file of exactly
# --max-bytes and an image of exactly --max-pixels are predicted, one byte
# or one pixel less of limit refuses them with the server's codes.
if [ -f "$DATA/t10k-images-idx3-ubyte" ] && [ -f "$MLP" ] && [ -x "$build/tests/tools/mkpng" ]; then
    "$build/tests/tools/mkpng" --from-idx "$DATA/t10k-images-idx3-ubyte" 0 "$tmp/d.png" > /dev/null 2>&1
    sz=$(wc -c < "$tmp/d.png")
    predict_case() { # DESC WANT_RC WANT_JSON_PY ARGS...
        local desc=$1 want=$2 expr=$3 rc; shift 3
        "$build/mnist-predict" --model "$MLP" "$@" "$tmp/d.png" > "$tmp/p.json" 2> "$tmp/err"
        rc=$?
        if [ $rc -eq "$want" ] && "$PY" -c "import json,sys; j=json.loads(open(sys.argv[1]).read()); sys.exit(0 if $expr else 1)" "$tmp/p.json" 2>/dev/null
        then ok "$desc"
        else not_ok "$desc" "exit $rc: $(head -c 300 "$tmp/p.json") $(head -c 300 "$tmp/err")"; fi
    }
    predict_case "mnist-predict --max-bytes = file size ($sz): predicted" 0 'j["prediction"] == 7' --max-bytes "$sz"
    predict_case "mnist-predict --max-bytes = file size - 1: payload_too_large" 1 'j["error"]["code"] == "payload_too_large"' --max-bytes $((sz - 1))
    predict_case "mnist-predict --max-pixels 784, a 28x28 image: predicted" 0 'j["prediction"] == 7' --max-pixels 784
    predict_case "mnist-predict --max-pixels 783, a 28x28 image: image_too_large" 1 'j["error"]["code"] == "image_too_large"' --max-pixels 783
fi
for prog in mnist-train mnist-eval mnist-predict; do
    "$build/$prog" --version > "$tmp/out" 2>&1; rc1=$?
    "$build/$prog" --help > "$tmp/help" 2>&1; rc2=$?
    if [ $rc1 -eq 0 ] && grep -q "^$prog [0-9]" "$tmp/out" && [ $rc2 -eq 0 ] && grep -q -- '--help' "$tmp/help"
    then ok "$prog --version and --help exit 0"
    else not_ok "$prog --version and --help exit 0" "$rc1/$rc2: $(head -c 200 "$tmp/out")"; fi
done

echo "1..$n"
echo "cli-edges: $pass passed, $failed failed"
[ "$failed" -eq 0 ]

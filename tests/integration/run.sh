#!/usr/bin/env bash
# Integration tests for mnist-server over real HTTP.
#
#   tests/integration/run.sh BUILD_DIR      (BUILD_DIR: build or build/asan)
#
# Starts the server on a free port (--port 0, port read from its
# "listening on http://HOST:PORT" log line), waits for /readyz, runs every
# check with curl, validates each recorded response against openapi.yaml,
# stops the server with SIGTERM and expects exit status 0. Output is TAP
# ("ok N - ..." / "not ok N - ..." with "#" detail lines) closed by
# "integration: N passed, M failed"; the exit status is non-zero on any
# failure. Needs: curl, python3 with a YAML loader (Debian python3-yaml),
# the models in models/, the MNIST test set in data/mnist/, and the
# programs BUILD_DIR/{mnist-server,mnist-predict} and
# BUILD_DIR/tests/tools/mkpng.
#
# Knobs (environment): MODELS_DIR (models), MNIST_DIR (data/mnist),
# START_TIMEOUT (30 s), PYTHON (python3), KEEP_TMP=1 keeps the scratch dir.
set -uo pipefail

# shellcheck source=tests/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"

SERVER=$build/mnist-server
PREDICT=$build/mnist-predict
MKPNG=$build/tests/tools/mkpng
MKMODEL=$build/tests/tools/mkmodel
MODELS=${MODELS_DIR:-models}
MNIST=${MNIST_DIR:-data/mnist}
PY=${PYTHON:-python3}
# The spec is YAML: use an interpreter that has a loader (Debian's
# python3-yaml installs into /usr/bin/python3, which a pyenv or venv
# python3 earlier on the PATH does not see).
if ! "$PY" -c 'import yaml' 2>/dev/null && /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
    PY=/usr/bin/python3
fi
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"
suite_begin integration mnist-it
mkdir -p "$tmp/resp" "$tmp/fx" "$tmp/conc"
: > "$tmp/manifest"

# ---------------------------------------------------------------- HTTP
base=""
req_no=0
code=000 body=/dev/null
# http METHOD PATH [curl args...]: sets $code and $body (file), headers in
# $tmp/hdr; every answered request is recorded for the spec check.
http() {
    local method=$1 path=$2; shift 2
    req_no=$((req_no + 1))
    body=$tmp/resp/$req_no
    code=$(curl -sS -X "$method" -o "$body" -D "$tmp/hdr" -w '%{http_code}' --max-time 60 \
        "$@" "$base$path" 2>"$tmp/curl.err") || code=000
    [ -f "$body" ] || : > "$body"
    if [ "$code" != 000 ]; then
        printf '%s\t%s\t%s\t%s\t%s\n' "$method" "$path" "$code" "$(header Content-Type)" "$body" \
            >> "$tmp/manifest"
    fi
}
header() { grep -i "^$1:" "$tmp/hdr" 2>/dev/null | tail -1 | cut -d: -f2- | sed 's/^ *//; s/\r$//'; }
excerpt() { head -c 300 "$body" | tr '\n' ' '; }
want_code() {
    [[ $code =~ ^($1)$ ]] && return 0
    if [ "$code" = 000 ]; then fail "no HTTP answer, expected $1: $(cat "$tmp/curl.err")"
    else fail "status $code, expected $1; body: $(excerpt)"; fi
    return 1
}
want_json() { local r; r=$("$PY" "$here/jcheck.py" "$body" "$1" 2>&1) || fail "$r"; }
jget() { "$PY" "$here/jcheck.py" --print "$1" "$2" 2>/dev/null; }
want_header() {
    local v; v=$(header "$1")
    [[ $v =~ $2 ]] || fail "header $1 is '$v', expected /$2/"
}
want_json_ctype() { want_header Content-Type '^application/json'; }
# The error envelope with the right status, and the server still healthy.
want_error() {
    want_code "$1" && { want_json_ctype; want_json 'err_ok(j)'; }
    healthy_after
}
healthy_after() {
    local c
    c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$base/healthz") || c=000
    [ "$c" = 200 ] || fail "/healthz answered $c afterwards"
    server_alive || fail "server process is gone: $(tail -5 "$srv_log")"
}

# post_png PATH FILE [curl args...]: POST FILE as a raw image/png body.
post_png() { local path=$1 file=$2; shift 2; http POST "$path" -H 'Content-Type: image/png' --data-binary "@$file" "$@"; }

# ================================================================ preflight
echo "# build dir: $build"
for f in "$SERVER" "$PREDICT" "$MKPNG" "$MKMODEL"; do
    [ -x "$f" ] || bail "program $f exists" "run: make all test-bins"
done
for m in mlp lenet; do
    [ -f "$MODELS/$m.safetensors" ] || bail "model $MODELS/$m.safetensors exists" "train or restore the shipped models"
done
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$MNIST/$f" ] || bail "MNIST file $MNIST/$f exists" "run: make data"
done
command -v curl > /dev/null || bail "curl is installed" "apt-get install curl"
"$PY" -c 'import yaml' 2>/dev/null || bail "$PY has a YAML loader" "apt-get install python3-yaml"

r=$("$PY" "$here/validate.py" --selftest 2>&1)
if [ $? -eq 0 ]; then ok "schema validator self-test"; else nok "schema validator self-test" "$r"; fi

if "$MKPNG" "$tmp/fx" > "$tmp/mkpng.log" 2>&1; then ok "mkpng writes the fixture PNGs"
else nok "mkpng writes the fixture PNGs" "$(tail -5 "$tmp/mkpng.log")"; fi

# MNIST test images rendered to PNG: 28x28 as in the set, and large black
# on white (448x448) as a user's drawing would be.
mnist_idx=(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19)
big_idx=(0 1 2 3 4 7 11 18 61 84)
read -r -a mnist_lab <<< "$("$PY" "$here/pngtool.py" labels "$MNIST/t10k-labels-idx1-ubyte" "${mnist_idx[@]}" | tr '\n' ' ')"
read -r -a big_lab <<< "$("$PY" "$here/pngtool.py" labels "$MNIST/t10k-labels-idx1-ubyte" "${big_idx[@]}" | tr '\n' ' ')"
problems=()
for i in "${mnist_idx[@]}"; do
    "$MKPNG" --from-idx "$MNIST/t10k-images-idx3-ubyte" "$i" "$tmp/fx/mnist_$i.png" 2>> "$tmp/mkpng.log" \
        || fail "mkpng --from-idx ... $i failed: $(tail -1 "$tmp/mkpng.log")"
done
for i in "${big_idx[@]}"; do
    "$MKPNG" --from-idx "$MNIST/t10k-images-idx3-ubyte" "$i" "$tmp/fx/big_$i.png" --invert --scale 16 \
        2>> "$tmp/mkpng.log" || fail "mkpng --from-idx ... $i --invert --scale 16 failed: $(tail -1 "$tmp/mkpng.log")"
done
"$MKPNG" --from-idx "$MNIST/t10k-images-idx3-ubyte" 0 "$tmp/fx/mid_0.png" --scale 4 2>> "$tmp/mkpng.log" \
    || fail "mkpng --scale 4 failed"
[ "${#mnist_lab[@]}" -eq 20 ] || fail "could not read the test labels"
if [ -f "$tmp/fx/big_0.png" ]; then
    dims=$("$PY" "$here/pngtool.py" info "$tmp/fx/big_0.png")
    [ "$dims" = "448 448" ] || fail "--scale 16 rendering is $dims, expected 448 448"
fi
verdict "MNIST test images rendered to PNG (28x28 and 448x448 black on white)"
"$PY" "$here/pngtool.py" blank "$tmp/fx/blank_white.png" 64 64 255
"$PY" "$here/pngtool.py" blank "$tmp/fx/blank_black.png" 28 28 0
head -c $((3 * 1024 * 1024)) /dev/urandom > "$tmp/fx/random_3mib.bin"

# ================================================================ start-up failures
# start_fail DESC NEEDLE [args...]: the server must exit non-zero, quickly,
# without listening, with an error line naming NEEDLE.
start_fail() {
    local desc=$1 needle=$2 rc lines; shift 2
    # -k: a server that ignores SIGTERM is killed rather than waited for.
    timeout -k 5 20 "$SERVER" --host 127.0.0.1 --port 0 "$@" > "$tmp/sf.out" 2> "$tmp/sf.err"
    rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then fail "exit status $rc, expected a non-zero exit"
    elif [ $rc -gt 128 ]; then fail "killed by signal $((rc - 128)) (a crash, not a clean error)"; fi
    grep -q 'listening on' "$tmp/sf.err" && fail "it started listening"
    # info-level log lines (models loaded so far) may precede the error
    lines=$(grep . "$tmp/sf.err" | grep -vc ' info ')
    grep -qF -- "$needle" "$tmp/sf.err" || fail "no error line names '$needle'; stderr: $(head -c 500 "$tmp/sf.err")"
    [ "$lines" -eq 1 ] || fail "expected a one-line message, got $lines lines: $(head -c 800 "$tmp/sf.err")"
    verdict "start-up fails cleanly: $desc"
}
mkdir -p "$tmp/m_trunc" "$tmp/m_garbage" "$tmp/m_empty"
sz=$(wc -c < "$MODELS/mlp.safetensors")
head -c $((sz / 2)) "$MODELS/mlp.safetensors" > "$tmp/m_trunc/mlp.safetensors"
head -c 4096 /dev/urandom > "$tmp/m_garbage/lenet.safetensors"
start_fail "missing weights file" "nonexistent.safetensors" --model x="$tmp/nonexistent.safetensors"
start_fail "truncated weights file (--models-dir)" "mlp.safetensors" --models-dir "$tmp/m_trunc"
start_fail "truncated weights file (--model)" "mlp.safetensors" --model mlp="$tmp/m_trunc/mlp.safetensors"
start_fail "random bytes as weights" "lenet.safetensors" --models-dir "$tmp/m_garbage"
start_fail "one bad member of an ensemble" "mlp.safetensors" \
    --model ens="$MODELS/lenet.safetensors,$tmp/m_trunc/mlp.safetensors"
start_fail "models dir without models" "$tmp/m_empty" --models-dir "$tmp/m_empty"
# A valid weights file the service cannot feed: refused when loaded, by name.
mkdir -p "$tmp/m_shape"
"$MKMODEL" "$tmp/m_shape/wide.safetensors" 1 32 32 || fail "mkmodel failed"
"$MKMODEL" "$tmp/m_shape3.safetensors" 3 28 28 || fail "mkmodel failed"
start_fail "1x32x32 input shape (--models-dir)" "wide.safetensors: takes 1x32x32 inputs" --models-dir "$tmp/m_shape"
start_fail "3x28x28 input shape (--model)" "m_shape3.safetensors: takes 3x28x28 inputs" \
    --model rgb="$tmp/m_shape3.safetensors"
start_fail "wrong input shape as an ensemble member" "m_shape3.safetensors (member 1) has input [3,28,28]" \
    --model ens="$MODELS/lenet.safetensors,$tmp/m_shape3.safetensors"
start_fail "unknown default model" "nosuchmodel" --models-dir "$MODELS" --default-model nosuchmodel
start_fail "unknown flag" "--no-such-flag" --no-such-flag
# A named pipe where a model should be: opening it for reading would wait
# for a writer forever (with the shutdown signals blocked).
mkdir -p "$tmp/m_fifo" "$tmp/m_fifo_ens"
mkfifo "$tmp/m_fifo/x.safetensors" "$tmp/m_fifo_ens/y.ensemble"
start_fail "a FIFO named x.safetensors in the models dir" "x.safetensors: not a regular file" \
    --models-dir "$tmp/m_fifo"
start_fail "a FIFO named y.ensemble in the models dir" "y.ensemble: not a regular file" \
    --models-dir "$tmp/m_fifo_ens"
start_fail "a FIFO given with --model" "x.safetensors: not a regular file" \
    --model x="$tmp/m_fifo/x.safetensors"

timeout 10 "$SERVER" --help > "$tmp/help.out" 2>&1; rc=$?
[ $rc -eq 0 ] || fail "--help exit status $rc"
for opt in --port --host --threads --model --models-dir --default-model --body-limit --max-pixels --drain-delay --drain-timeout; do
    grep -qe "$opt" "$tmp/help.out" || fail "--help does not mention $opt"
done
grep -q MNIST_ "$tmp/help.out" || fail "--help does not mention the MNIST_* environment variables"
verdict "--help exits 0 and documents the options"
timeout 10 "$SERVER" --version > "$tmp/version.out" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q '[0-9]' "$tmp/version.out" || fail "--version: exit $rc, output: $(head -c 200 "$tmp/version.out")"
verdict "--version exits 0 and prints a version"

# ================================================================ main server
if start_server "$tmp/server.log" --models-dir "$MODELS" --threads 4 --drain-delay 4 --drain-timeout 30 --max-batch 100; then
    ok "server starts on a free port and /readyz answers 200 (port $port)"
else
    bail "server starts on a free port and /readyz answers 200" "$srv_fail" "--- server stderr ---" \
        "$(tail -40 "$tmp/server.log")"
fi

start_fail "port already in use" "$port" --port "$port" --models-dir "$MODELS"

# ---------------------------------------------------------------- probes
http GET /healthz
want_code 200 && want_json_ctype
verdict "GET /healthz 200"
http GET /readyz
want_code 200 && want_json_ctype
verdict "GET /readyz 200 once models are loaded"

http GET /v1/models
if want_code 200; then
    want_json_ctype
    cp "$body" "$tmp/models.json"
    M='(j["models"] if isinstance(j, dict) else j)'
    want_json "isinstance($M, list) and len($M) >= 2"
    want_json "sum(1 for m in $M if m.get('default') is True) == 1"
    want_json "all(isinstance(m.get('parameters'), int) and m['parameters'] > 0 for m in $M)"
    want_json "all(isinstance(m.get('architecture'), (str, dict, list)) and m['architecture'] for m in $M)"
    want_json "all(any('accuracy' in k and num(m[k]) and 0 < m[k] <= 1 for k in m) for m in $M)"
    # Digit models frame uploads the MNIST way (older files derive it).
    want_json "all(m.get('preprocess') == ('fit' if m.get('dataset') == 'fashion-mnist' else 'mnist') for m in $M)"
    for m in mlp lenet; do
        sha=$(sha256sum "$MODELS/$m.safetensors" | cut -d' ' -f1)
        want_json "[m.get('sha256') for m in $M if m.get('name') == '$m'] == ['$sha']"
    done
    default_model=$(jget "$tmp/models.json" "[m['name'] for m in $M if m.get('default') is True][0]")
fi
verdict "GET /v1/models lists mlp and lenet with parameters, accuracy, sha256, preprocess and one default"

# The shipped directory: the single CNN is the default, the ensemble of
# five CNNs is served by name with its stated accuracy, and its members
# (models/members/) are not served one by one.
if [ "$MODELS" = models ]; then
    M='(j["models"] if isinstance(j, dict) else j)'
    want_json "[m['name'] for m in $M if m.get('default') is True] == ['cnn']"
    want_json "[len(m['members']) for m in $M if m['name'] == 'cnn-ensemble'] == [5]"
    want_json "[m['test_accuracy'] >= 0.9978 for m in $M if m['name'] == 'cnn-ensemble'] == [True]"
    want_json "sorted(m['name'] for m in $M) == ['cnn', 'cnn-ensemble', 'fashion-cnn', 'lenet', 'mlp']"
    verdict "shipped models: cnn is the default, cnn-ensemble (5 members) is served, members are not"
    # Calibration and the OOD threshold as the weights files state them:
    # every single file's ECE is the model card's (to its 0.01%, with room
    # for the path it was measured on), an ensemble states none; the default
    # model has a threshold, the MLP (shipped without statistics) none.
    curl -s "$base/v1/models" > "$tmp/models.json"
    r=$("$PY" - "$tmp/models.json" models/README.md <<'PYEOF' 2>&1
import json, re, sys
j = json.load(open(sys.argv[1]))
card = {f: float(e) / 100 for f, e in re.findall(
    r'^\| [^|]+ \| `([^`]+\.safetensors)` \|[^|]*\|[^|]*\|[^|]*\| *([0-9.]+)% *\|', open(sys.argv[2]).read(), re.M)}
assert card, "no ECE in the card's summary table"
for m in j["models"]:
    if len(m["members"]) > 1:
        assert m["ece"] is None, "%s: ensemble with ece %r" % (m["name"], m["ece"])
        continue
    f = m["members"][0]["path"].split("models/", 1)[-1]
    assert isinstance(m["ece"], float) and f in card and abs(m["ece"] - card[f]) <= 0.00015, \
        "%s: ece %r, card %r" % (m["name"], m["ece"], card.get(f))
    assert m["members"][0]["ece"] == m["ece"], m["name"]
# No shipped file carries a softmax temperature (models/README.md,
# "Calibration"): each states 1, an ensemble none of its own.
for m in j["models"]:
    assert all(f["temperature"] == 1.0 for f in m["members"]), m["name"]
    assert m["temperature"] == (None if len(m["members"]) > 1 else 1.0), m["name"]
d = {m["name"]: m for m in j["models"]}
assert isinstance(d[j["default"]]["ood_threshold"], float), d[j["default"]]
assert d["mlp"]["ood_threshold"] is None, d["mlp"]["ood_threshold"]
# The method says what the score's scale is: the default's trained head,
# the ensemble's first member's Mahalanobis statistics, none for the MLP.
assert d[j["default"]]["ood_method"] == "head", d[j["default"]]["ood_method"]
assert d["cnn-ensemble"]["ood_method"] == "mahalanobis", d["cnn-ensemble"]["ood_method"]
assert d["mlp"]["ood_method"] is None, d["mlp"]["ood_method"]
PYEOF
) || fail "$r"
    verdict "GET /v1/models: each file's ECE is the model card's and its temperature 1, ensembles state none; the default has an OOD threshold and method"
else
    echo "# skipped (not counted): shipped-models checks, MODELS_DIR=$MODELS"
fi
default_model=${default_model:-lenet}
echo "# default model: $default_model"

http GET /openapi.yaml
if want_code 200; then
    want_header Content-Type 'yaml'
    cp "$body" "$tmp/served-openapi.yaml"
    "$PY" -c 'import sys,yaml; d=yaml.safe_load(open(sys.argv[1])); assert str(d["openapi"]).startswith("3.1"), d["openapi"]' \
        "$tmp/served-openapi.yaml" 2> "$tmp/py.err" || fail "not an OpenAPI 3.1 document: $(tail -1 "$tmp/py.err")"
    spec_file=""
    for f in openapi.yaml server/openapi.yaml; do [ -f "$f" ] && spec_file=$f && break; done
    if [ -z "$spec_file" ]; then fail "no openapi.yaml in the repository"
    else cmp -s "$spec_file" "$tmp/served-openapi.yaml" || fail "served spec differs from $spec_file"; fi
fi
verdict "GET /openapi.yaml serves the repository's OpenAPI 3.1 spec"

# The drawing page (tests/browser drives it in a real browser): headers,
# and the ETag's 304.
http GET /
if want_code 200; then
    want_header Content-Type '^text/html; charset=utf-8$'
    want_header Content-Security-Policy "^default-src 'none'; script-src 'self'; "
    want_header X-Content-Type-Options '^nosniff$'
    want_header Referrer-Policy '^no-referrer$'
    want_header ETag '^"[0-9a-f]{20}"$'
    grep -q '<script src="/app.js"' "$body" || fail "the page does not load /app.js"
fi
etag=$(header ETag)
http GET / -H "If-None-Match: W/$etag"
want_code 304 && { [ -s "$body" ] && fail "a 304 with a body"; want_header ETag "^$etag\$"; }
# Counted under its own status (a request is counted as it completes,
# possibly just after its answer arrived).
# grep reads all of it (not -q): under pipefail, curl cut off by an early
# exit would fail the pipe although the line was there.
for _ in $(seq 50); do
    curl -s "$base/metrics" | grep '^mnist_http_requests_total{route="page",status="304"} [1-9]' > /dev/null && break
    sleep 0.1
done
curl -s "$base/metrics" | grep '^mnist_http_requests_total{route="page",status="304"} [1-9]' > /dev/null ||
    fail "/metrics does not count the 304: $(curl -s "$base/metrics" | grep 'route="page"')"
verdict "GET /: the page, with its CSP, nosniff, Referrer-Policy and ETag; 304 on If-None-Match, counted as 304"

# The error codes are one list (pipeline/pipeline.c's table); openapi.yaml
# and README.md document exactly that list.
r=$("$PY" - "$here/../../pipeline/pipeline.c" openapi.yaml README.md <<'PYEOF' 2>&1
import re, sys, yaml
src, spec, readme = (open(f).read() for f in sys.argv[1:4])
table = set(re.findall(r'\[PIPE_[A-Z0-9_]+\] = \{"([a-z0-9_]+)", \d+\}', src)) - {"ok"}
enum = set(yaml.safe_load(spec)["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
rows = re.findall(r'^\| \d{3} \| (.*?) \|', readme, re.M)
documented = set(c for r in rows for c in re.findall(r'`([a-z0-9_]+)`', r))
assert len(table) >= 15, table
assert enum == table, f"openapi.yaml: missing {table - enum}, extra {enum - table}"
assert documented == table, f"README.md: missing {table - documented}, extra {documented - table}"
PYEOF
) || fail "$r"
verdict "error codes: pipeline's table, openapi.yaml and README.md list the same codes"

http GET /metrics
if want_code 200; then
    want_header Content-Type '^text/plain'
    r=$("$PY" "$here/metrics.py" "$body" families) || fail "$r"
fi
verdict "GET /metrics has the promised metric families"

# ---------------------------------------------------------------- /predict
img=$tmp/fx/mnist_0.png lab0=${mnist_lab[0]}
post_png /predict "$img"
if want_code 200; then
    want_json_ctype
    want_json 'pred_ok(j)'
    want_json "j['model'] == '$default_model'"
    want_json "j['prediction'] == $lab0"
fi
verdict "POST /predict raw image/png: 200, full prediction by the default model"

http POST /predict -F "image=@$img;type=image/png"
want_code 200 && { want_json 'pred_ok(j)'; want_json "j['prediction'] == $lab0"; }
verdict "POST /predict multipart field image"

http POST /predict -F "image=@$img;type=application/octet-stream;filename=x"
want_code 200 && want_json 'pred_ok(j)'
verdict "POST /predict multipart with an octet-stream part"

http POST /predict -H 'Content-Type: application/octet-stream' --data-binary "@$img"
want_code 200 && { want_json 'pred_ok(j)'; want_json "j['prediction'] == $lab0"; }
verdict "POST /predict raw application/octet-stream"

# What the model saw: the 28x28 network input as a base64 PNG.
http POST '/predict?include=preprocessed' -H 'Content-Type: image/png' --data-binary "@$img"
if want_code 200; then
    want_json "pred_ok(j) and j['prediction'] == $lab0"
    want_json "j['preprocessed']['width'] == j['preprocessed']['height'] == 28"
    want_json "png_size(j['preprocessed']['png']) == [28, 28]"
fi
http POST '/predict/batch?include=preprocessed' -F "image=@$img;type=image/png" -F "image=@$img;type=image/png"
want_code 200 && want_json "[png_size(r['preprocessed']['png']) for r in j['results']] == [[28, 28]] * 2"
http POST '/predict?include=heatmap' -H 'Content-Type: image/png' --data-binary "@$img"
want_error 400 && want_json "j['error']['code'] == 'bad_request'"
verdict "?include=preprocessed adds the 28x28 PNG the model saw; an unknown include= is 400"

for m in mlp lenet; do
    post_png "/predict?model=$m" "$img"
    want_code 200 && { want_json 'pred_ok(j)'; want_json "j['model'] == '$m'"; }
    verdict "POST /predict?model=$m answers with model $m"
done
post_png "/predict?model=nosuchmodel" "$img"
want_error 404
verdict "POST /predict?model=nosuchmodel: 404 with the error envelope"

# ---------------------------------------------------------------- batch
http POST /predict/batch -F "image=@$tmp/fx/mnist_1.png" -F "image=@$tmp/fx/not_png.bin" \
    -F "image=@$tmp/fx/mnist_2.png;type=image/png" -F "image=@$tmp/fx/blank_white.png"
if want_code 200; then
    want_json_ctype
    want_json 'isinstance(j.get("results"), list) and len(j["results"]) == 4'
    want_json "pred_ok(j['results'][0]) and j['results'][0]['prediction'] == ${mnist_lab[1]}"
    want_json "err_ok(j['results'][1]) and 'prediction' not in j['results'][1]"
    want_json "pred_ok(j['results'][2]) and j['results'][2]['prediction'] == ${mnist_lab[2]}"
    want_json "err_ok(j['results'][3])"
fi
verdict "POST /predict/batch: results in order, a bad part gets its own error entry"

http POST "/predict/batch?model=mlp" -F "image=@$tmp/fx/mnist_3.png" -F "image=@$tmp/fx/mnist_4.png"
want_code 200 && want_json 'len(j["results"]) == 2 and all(pred_ok(r) and r["model"] == "mlp" for r in j["results"])'
verdict "POST /predict/batch?model=mlp uses mlp for every part"

# ---------------------------------------------------------------- out of distribution
# The default model carries out-of-distribution statistics (models/README.md):
# a Fashion-MNIST item uploaded as a PNG is marked not digit-like, an MNIST
# digit is not. Fashion-MNIST is never used to fit or to choose the threshold.
FASHION=${FASHION_DIR:-/usr/share/datasets/fashion-mnist}
if [ "$MODELS" = models ] && [ -f "$FASHION/t10k-images-idx3-ubyte.gz" ]; then
    gzip -dc "$FASHION/t10k-images-idx3-ubyte.gz" > "$tmp/fashion-images" || fail "gzip -dc failed"
    fashion_pngs=()
    for i in $(seq 0 29); do
        "$MKPNG" --from-idx "$tmp/fashion-images" "$i" "$tmp/fx/fashion_$i.png" 2>> "$tmp/mkpng.log" \
            || fail "mkpng --from-idx (Fashion-MNIST) $i failed: $(tail -1 "$tmp/mkpng.log")"
        fashion_pngs+=("$tmp/fx/fashion_$i.png")
    done
    verdict "Fashion-MNIST test items 0-29 as PNGs"
    # Which item and which digit: a rule over mnist-predict's scores and
    # the default model's threshold (tests/integration/ood_answers.py),
    # then each is posted in every answer format.
    def_file=$("$PY" -c 'import json, sys; j = json.load(sys.stdin); print(next(m["members"][0]["path"] for m in j["models"] if m["name"] == j["default"]))' \
        < <(curl -s "$base/v1/models") 2> /dev/null)
    ood_digits=()
    for i in "${mnist_idx[@]}"; do ood_digits+=("$tmp/fx/mnist_$i.png"); done
    "$PREDICT" --model "${def_file:-$MODELS/cnn.safetensors}" "${fashion_pngs[@]}" "${ood_digits[@]}" \
        > "$tmp/ood-predict.jsonl" 2> "$tmp/ood-predict.err" || fail "mnist-predict: $(tail -1 "$tmp/ood-predict.err")"
    verdict "mnist-predict scores the 30 Fashion-MNIST items and 20 MNIST digits"
    py_verdicts "out-of-distribution answers" < <("$PY" "$here/ood_answers.py" "$base" "$tmp/ood-predict.jsonl" \
        "$(IFS=,; echo "${fashion_pngs[*]}")" "$(IFS=,; echo "${ood_digits[*]}")" \
        "$(IFS=,; echo "${mnist_lab[*]}")" 2>&1)
    http POST "/predict?model=mlp" -H 'Content-Type: image/png' --data-binary "@$img"
    want_code 200 && want_json "j['ood_score'] is None and j['in_distribution'] is None"
    verdict "POST /predict?model=mlp (no statistics): ood_score and in_distribution null"
    px=$("$PY" -c 'import sys; print(",".join(["0"] * 784))')
    http POST /v2/models/mlp/infer -H 'Content-Type: application/json' \
        --data-binary "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[$px]}],\"outputs\":[{\"name\":\"ood_score\"}]}"
    want_code 400
    verdict "POST /v2/models/mlp/infer asking for ood_score (no statistics): 400"
else
    echo "# skipped (not counted): out-of-distribution checks need the shipped models and $FASHION"
fi

post_png /predict/batch "$img"
want_error 415
verdict "POST /predict/batch with a raw PNG body: 415"
http POST /predict/batch -F "file=@$img"
want_error 400
verdict "POST /predict/batch without image parts: 400"

# ---------------------------------------------------------------- mkpng's fixtures
# mkpng checks each fixture against the decoder and lists it in MANIFEST as
# "<file> <decoder status> <digit or ->"; over HTTP each status has its code.
# Every colour type and bit depth, palette, tRNS, interlaced, canvas (alpha
# as ink), big black-on-white digits, and the hostile files.
http_status_for() {
    case $1 in
        ok) echo 200 ;; invalid_png | not_png) echo 400 ;;
        image_too_large) echo 413 ;; blank_image) echo 422 ;; *) echo "unknown-$1" ;;
    esac
}
nfix=0
if [ -f "$tmp/fx/MANIFEST" ]; then
    while read -r f st digit; do
        case $f in ''|'#'*) continue ;; esac
        nfix=$((nfix + 1))
        want=$(http_status_for "$st")
        post_png /predict "$tmp/fx/$f"
        if [ "$want" = 200 ]; then
            want_code 200 && want_json 'pred_ok(j)' && [ "$digit" != - ] && want_json "j['prediction'] == $digit"
            verdict "fixture $f: 200 and predicted $digit"
        else
            want_error "$want"
            verdict "fixture $f ($st): $want with the error envelope, server stays healthy"
        fi
    done < "$tmp/fx/MANIFEST"
fi
[ "$nfix" -ge 30 ] || nok "mkpng's MANIFEST lists the fixtures" "found $nfix entries"

# ---------------------------------------------------------------- MNIST vs mnist-predict
# predict_cli MODEL_FILE PNG...: one prediction per line, as mnist-predict
# prints them (JSON per image, the same document the server answers).
predict_cli() {
    local model=$1; shift
    "$PREDICT" --model "$model" "$@" 2> "$tmp/predict.err" | "$PY" -c '
import json, sys
text = sys.stdin.read()
docs = []
try:
    d = json.loads(text)
    docs = d if isinstance(d, list) else d.get("results", [d])
except ValueError:
    docs = [json.loads(l) for l in text.splitlines() if l.strip()]
for d in docs:
    print(d.get("prediction", "error"))
'
}
default_file=$MODELS/$default_model.safetensors
mnist_pngs=()
for i in "${mnist_idx[@]}"; do mnist_pngs+=("$tmp/fx/mnist_$i.png"); done
mapfile -t cli_preds < <(predict_cli "$default_file" "${mnist_pngs[@]}")
problems=()
[ ${#cli_preds[@]} -eq ${#mnist_idx[@]} ] || fail "mnist-predict gave ${#cli_preds[@]} predictions for ${#mnist_idx[@]} images: $(head -c 300 "$tmp/predict.err")"
right=0 same=0
declare -A srv_pred
for k in "${!mnist_idx[@]}"; do
    i=${mnist_idx[k]}
    post_png /predict "$tmp/fx/mnist_$i.png"
    p=$(jget "$body" 'j["prediction"]')
    srv_pred[$i]=$p
    [ "$p" = "${cli_preds[k]:-}" ] && same=$((same + 1)) || fail "image $i: server $p (status $code), mnist-predict ${cli_preds[k]:-none}"
    [ "$p" = "${mnist_lab[k]}" ] && right=$((right + 1))
done
verdict "20 MNIST test images: server predictions equal mnist-predict's ($same/20)"
[ $right -ge 19 ] || fail "only $right/20 equal the true label"
verdict "20 MNIST test images: at least 19/20 predicted as labelled ($right/20)"

# Every fixture, valid and invalid: mnist-predict and POST /predict run one
# pipeline, so they answer the same code and the same float32 probabilities.
same_files=()
while read -r f _; do
    case $f in ''|'#'*) continue ;; esac
    same_files+=("$tmp/fx/$f")
done < "$tmp/fx/MANIFEST"
same_files+=("${mnist_pngs[@]}" "$tmp/fx/blank_white.png" "$tmp/fx/blank_black.png" "$tmp/fx/big_7.png")
"$PREDICT" --model "$default_file" "${same_files[@]}" > "$tmp/same.cli" 2> "$tmp/same.err"
: > "$tmp/same.list"
for f in "${same_files[@]}"; do
    post_png /predict "$f"
    printf '%s\t%s\n' "$f" "$body" >> "$tmp/same.list"
done
r=$("$PY" "$here/samecheck.py" "$tmp/same.cli" "$tmp/same.list" 2>&1) || fail "$r" "$(head -c 300 "$tmp/same.err")"
verdict "${#same_files[@]} fixtures: mnist-predict and POST /predict give the same codes and probabilities"

right=0
for k in "${!big_idx[@]}"; do
    i=${big_idx[k]}
    http POST /predict -F "image=@$tmp/fx/big_$i.png"
    p=$(jget "$body" 'j["prediction"]')
    [ "$p" = "${big_lab[k]}" ] && right=$((right + 1)) || fail "image $i (label ${big_lab[k]}): predicted '$p', status $code"
done
[ $right -ge 9 ] && problems=()
verdict "448x448 black-on-white renderings: at least 9/10 digits right ($right/10)"

# ---------------------------------------------------------------- hostile input
hostile() { # hostile DESC STATUS FILE [content type]
    http POST /predict -H "Content-Type: ${4:-image/png}" --data-binary "@$3"
    want_error "$2"
    verdict "$1: $2 with the error envelope, server stays healthy"
}
hostile "non-PNG bytes as octet-stream" 400 "$tmp/fx/not_png.bin" application/octet-stream
hostile "3 MiB random body (over the 2 MiB limit)" 413 "$tmp/fx/random_3mib.bin"
hostile "blank white image" 422 "$tmp/fx/blank_white.png"
hostile "blank black image" 422 "$tmp/fx/blank_black.png"
hostile "text/plain body" 415 "$img" text/plain
hostile "image/jpeg body" 415 "$img" image/jpeg

http POST /predict -H 'Expect:' -H 'Content-Type: image/png' --data-binary "@$tmp/fx/random_3mib.bin"
want_error 413
verdict "3 MiB body without Expect: 100-continue: 413, server stays healthy"
http POST /predict --data-binary "@$img"
want_error 415
verdict "POST /predict form-urlencoded (curl's default type): 415"
http POST /predict -F "file=@$img"
want_error 400
verdict "POST /predict multipart without an image field: 400"
http POST /predict -F "image=@$tmp/fx/bad_crc.png"
want_error 400
verdict "POST /predict multipart with a corrupt PNG: 400"
http POST /predict -F "image=@$tmp/fx/random_3mib.bin"
want_error 413
verdict "POST /predict multipart over the body limit: 413"

allow_check() { # METHOD PATH ALLOW_REGEX
    http "$1" "$2"
    want_error 405 && want_header Allow "$3"
    verdict "$1 $2: 405 with Allow"
}
allow_check GET /predict 'POST'
allow_check PUT /predict 'POST'
allow_check GET /predict/batch 'POST'
allow_check POST /healthz 'GET'
allow_check POST /readyz 'GET'
allow_check DELETE /v1/models 'GET'
allow_check POST /metrics 'GET'
allow_check POST /openapi.yaml 'GET'

http GET /nope
want_error 404
verdict "GET /nope: 404 with the error envelope"
post_png /predict/nope "$img"
want_error 404
verdict "POST /predict/nope: 404 with the error envelope"
http GET '/../../etc/passwd' --path-as-is
want_code '400|404' && want_json 'err_ok(j)'
verdict "path traversal attempt: 400/404 with the error envelope"

# ---------------------------------------------------------------- HTTP abuse
# Raw bytes curl would never send (tests/integration/abuse.py): conflicting
# lengths, chunked abuse, Host rules, HTTP/0.9 and 2.0 request lines, huge
# query strings, header floods, pipelining. Each case asserts the exact
# status or the connection's fate, then that /healthz still answers.
# py_verdicts: turns "PASS<TAB>what" / "FAIL<TAB>what<TAB>why" into TAP.
py_verdicts "HTTP abuse suite" < <("$PY" "$here/abuse.py" "$port" 2>&1)
healthy_after
verdict "server healthy after the HTTP abuse suite"

# ---------------------------------------------------------------- request ids, access log
post_png /predict "$img" -H 'X-Request-Id: itest-req-4711'
want_code 200
want_header X-Request-Id '^itest-req-4711$'
verdict "X-Request-Id is echoed"
http GET /nope -H 'X-Request-Id: itest-req-4712'
want_header X-Request-Id '^itest-req-4712$'
verdict "X-Request-Id is echoed on errors"
http GET /healthz
want_header X-Request-Id '^[^ ]{6,}$'
id1=$(header X-Request-Id)
http GET /healthz
[ "$(header X-Request-Id)" != "$id1" ] || fail "two requests got the same generated id $id1"
verdict "a request id is generated when none is sent, and differs per request"
# the line is written when the request completes, possibly just after the
# client has its answer: give it a moment
for _ in $(seq 50); do grep -qF itest-req-4711 "$tmp/server.log" && break; sleep 0.1; done
line=$(grep -F itest-req-4711 "$tmp/server.log" | head -1)
[ -n "$line" ] || fail "no access-log line with the request id"
[[ $line == *POST* && $line == */predict* && $line == *200* ]] || fail "access-log line lacks method/path/status: $line"
[[ $line =~ \ model=[a-z0-9.-]+\ model_version=1( |$) ]] || fail "access-log line lacks the model and its version: $line"
[ "$(grep -cF itest-req-4711 "$tmp/server.log")" -eq 1 ] || fail "expected one log line for the request"
verdict "one access-log line per request with method, path, status, request id, model and version"

# ---------------------------------------------------------------- Open Inference Protocol
# oip_client.py is a client written from the protocol's text (KServe v2
# REST, Triton's binary data extension): it prints PASS/FAIL lines and
# records every response in the manifest for the spec check below.
# run_client DESC ARGS...: its lines as TAP; a crash or silence is a failure.
run_client() {
    local desc=$1 rc line got=0; shift
    "$PY" "$here/oip_client.py" "$@" > "$tmp/oip.out" 2> "$tmp/oip.err"
    rc=$?
    while IFS=$'\t' read -r word what why; do
        case $word in
            PASS) ok "$what"; got=1 ;;
            FAIL) nok "$what" "$why"; got=1 ;;
        esac
    done < "$tmp/oip.out"
    if [ $got = 0 ] || { [ $rc -ne 0 ] && ! grep -q '^FAIL' "$tmp/oip.out"; }; then
        nok "$desc: the client ran (exit $rc)" "$(tail -5 "$tmp/oip.err")"
    fi
}
run_client "v2 protocol" protocol "$base" "$default_model" "$MNIST" 100 "$tmp/resp" "$tmp/manifest"
run_client "CORS off" cors-off "$base"
healthy_after
verdict "server healthy after the v2 protocol checks"

# ---------------------------------------------------------------- concurrency
http GET /metrics
cp "$body" "$tmp/metrics.before"
conc_imgs=(0 1 2 3 4 5 6 7)
conc_n=200
for i in $(seq 0 $((conc_n - 1))); do
    k=${conc_imgs[i % ${#conc_imgs[@]}]}
    echo "$i $tmp/fx/mnist_$k.png ${srv_pred[$k]:-x}"
done > "$tmp/conc/jobs"
export tmp base
# shellcheck disable=SC2016
t0=$SECONDS
xargs -P 16 -n 3 bash -c '
    code=$(curl -sS -o "$tmp/conc/$0.json" -w "%{http_code}" --max-time 60 \
        -H "Content-Type: image/png" --data-binary "@$1" "$base/predict" 2>"$tmp/conc/$0.err") || code=000
    echo "$0 $code $2" > "$tmp/conc/$0.code"' < "$tmp/conc/jobs"
problems=()
t1=$SECONDS
# One interpreter for all the answers: status, prediction and its validity.
r=$("$PY" - "$tmp/conc" "$conc_n" <<'EOF'
import json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
bad = []
for i in range(n):
    try:
        _, code, want = open(os.path.join(d, "%d.code" % i)).read().split()
        j = json.load(open(os.path.join(d, "%d.json" % i)))
        got = j.get("prediction")
        p = j.get("probabilities", [])
        if code != "200" or str(got) != want or len(p) != 10 or abs(sum(p) - 1) > 1e-3:
            bad.append("request %d: status %s, prediction %r, expected %s" % (i, code, got, want))
    except (OSError, ValueError) as e:
        bad.append("request %d: %s" % (i, e))
print(len(bad))
for line in bad[:5]:
    print(line)
EOF
)
bad=${r%%$'\n'*}
[ "$bad" = 0 ] || fail "$r"
verdict "$conc_n concurrent requests (16 at a time): all 200 with the sequential answer ($bad bad, $((t1 - t0)) s)"
healthy_after
verdict "server healthy after the concurrent burst"

http GET /metrics
cp "$body" "$tmp/metrics.after"
problems=()
req_fam=mnist_http_requests_total
pred_fam=mnist_predictions_total
if [ -z "$req_fam" ]; then fail "no request counter with route/status labels"
else
    b=$("$PY" "$here/metrics.py" "$tmp/metrics.before" sum "$req_fam" route=/predict status=200)
    a=$("$PY" "$here/metrics.py" "$tmp/metrics.after" sum "$req_fam" route=/predict status=200)
    "$PY" -c "import sys; sys.exit(0 if $a - $b >= $conc_n else 1)" \
        || fail "$req_fam{route=/predict,status=200} grew from $b to $a over $conc_n requests"
    b=$("$PY" "$here/metrics.py" "$tmp/metrics.before" sum "$req_fam" route=/predict status=404)
    [ "${b%.*}" -ge 1 ] 2>/dev/null || fail "$req_fam{route=/predict,status=404} is $b after a 404 on /predict"
fi
if [ -z "$pred_fam" ]; then fail "no predictions-by-digit counter"
else
    b=$("$PY" "$here/metrics.py" "$tmp/metrics.before" sum "$pred_fam")
    a=$("$PY" "$here/metrics.py" "$tmp/metrics.after" sum "$pred_fam")
    "$PY" -c "import sys; sys.exit(0 if $a - $b >= $conc_n else 1)" \
        || fail "$pred_fam grew from $b to $a over $conc_n predictions"
fi
verdict "metrics counters grow with the traffic (requests by route/status, predictions by digit)"

# The exposition is what Prometheus accepts: promtool's parser and lint
# (naming, types, HELP) find nothing, and a broken exposition is refused,
# so the check can fail.
if command -v promtool > /dev/null; then
    problems=()
    out=$(promtool check metrics < "$tmp/metrics.after" 2>&1) || fail "promtool check metrics: $out"
    printf '# TYPE bad_count counter\nbad_count 1\n' | promtool check metrics > /dev/null 2>&1 &&
        fail "promtool accepted a counter without _total: the check cannot fail"
    verdict "GET /metrics passes promtool check metrics"
else
    nok "GET /metrics passes promtool check metrics" "promtool is not installed (Debian package prometheus; make deps-test)"
fi
problems=()
for m in process_cpu_seconds_total process_resident_memory_bytes process_virtual_memory_bytes \
         process_open_fds process_max_fds process_start_time_seconds; do
    v=$("$PY" "$here/metrics.py" "$tmp/metrics.after" sum "$m")
    "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)" "$v" 2>/dev/null || fail "$m is '$v'"
done
"$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" \
    "$("$PY" "$here/metrics.py" "$tmp/metrics.after" sum process_cpu_seconds_total)" \
    "$("$PY" "$here/metrics.py" "$tmp/metrics.before" sum process_cpu_seconds_total)" ||
    fail "process_cpu_seconds_total went down"
grep -qE '^mnist_build_info\{version="[0-9][^"]*",commit="[0-9A-Za-z._-]+",kernels="[a-z0-9_-]+",precision="fp32"\} 1$' "$tmp/metrics.after" ||
    fail "no mnist_build_info{version,commit,kernels,precision=fp32} 1 line: $(grep build_info "$tmp/metrics.after")"
verdict "process metrics are positive and mnist_build_info names version, commit, kernels and precision"

# ---------------------------------------------------------------- graceful shutdown
# SIGTERM starts a drain in two phases. For --drain-delay (4 s here) the
# server says it is not ready but keeps accepting and serving, so a load
# balancer that still sends a request gets an answer; then it stops
# accepting and lets requests in flight finish (up to --drain-timeout).
# Slow uploads (a valid PNG padded to ~400 KB, sent at 50 KB/s, about 8 s)
# are in flight across both phases; they must all finish with 200 and the
# right digit, and the server must then exit 0.
"$PY" "$here/pngtool.py" pad "$tmp/fx/mnist_0.png" "$tmp/fx/slow.png" 400000
extra_pids=""
for s in 1 2 3; do
    curl -sS -o "$tmp/slow$s.json" -w '%{http_code}' --max-time 60 --limit-rate 50k \
        -H 'Content-Type: image/png' --data-binary "@$tmp/fx/slow.png" "$base/predict" \
        > "$tmp/slow$s.code" 2> "$tmp/slow$s.err" &
    extra_pids="$extra_pids $!"
done
sleep 1
alive=0
for p in $extra_pids; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
kill -TERM "$srv_pid"
t_term=$(date +%s.%N)
sleep 0.3
# Each curl below opens a new connection: one that exists only after the
# signal, as a load balancer's would.
c=$(curl -sS -o "$tmp/drain.json" -w '%{http_code}' --max-time 5 "$base/readyz" 2> "$tmp/drain.err") || c=000
if [ "$c" = 503 ] && "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if j['error']['code']=='not_ready' else 1)" "$tmp/drain.json" 2>/dev/null; then
    ok "during the drain delay, GET /readyz on a new connection: 503 not_ready"
else
    nok "during the drain delay, GET /readyz on a new connection: 503 not_ready" \
        "got ${c} $(cat "$tmp/drain.err") $(head -c 200 "$tmp/drain.json")"
fi
c=$(curl -sS -o "$tmp/drain.json" -w '%{http_code}' --max-time 5 "$base/v2/health/ready" 2> "$tmp/drain.err") || c=000
if [ "$c" = 503 ]; then
    ok "during the drain delay, GET /v2/health/ready on a new connection: 503"
else
    nok "during the drain delay, GET /v2/health/ready on a new connection: 503" \
        "got ${c} $(cat "$tmp/drain.err") $(head -c 200 "$tmp/drain.json")"
fi
http GET /healthz
want_code 200
verdict "during the drain delay, GET /healthz: 200 (alive, so liveness probes do not restart a draining server)"
c=$(curl -sS -o "$tmp/drain_pred.json" -w '%{http_code}' --max-time 5 -H 'Content-Type: image/png' \
    --data-binary "@$img" "$base/predict" 2> "$tmp/drain.err") || c=000
p=$(jget "$tmp/drain_pred.json" 'j["prediction"]')
if [ "$c" = 200 ] && [ "$p" = "$lab0" ]; then
    ok "during the drain delay, POST /predict on a new connection: 200 and the right digit"
else
    nok "during the drain delay, POST /predict on a new connection: 200 and the right digit" \
        "got ${c}, prediction '$p' (want $lab0) $(cat "$tmp/drain.err")"
fi
# After the delay the listener is closed: new connections are refused.
"$PY" -c "import sys, time; time.sleep(max(0, float(sys.argv[1]) + 4.5 - time.time()))" "$t_term"
curl -sS -o /dev/null --max-time 5 "$base/readyz" 2> "$tmp/drain.err"; rc=$?
if [ $rc = 7 ]; then   # curl: could not connect
    ok "after the drain delay, new connections are refused"
else
    nok "after the drain delay, new connections are refused" "curl exit $rc $(cat "$tmp/drain.err")"
fi
problems=()
[ "$alive" = 3 ] || fail "only $alive of 3 uploads were still running at SIGTERM: the drain was not exercised"
for p in $extra_pids; do wait "$p"; done
extra_pids=""
for s in 1 2 3; do
    c=$(cat "$tmp/slow$s.code")
    p=$(jget "$tmp/slow$s.json" 'j["prediction"]')
    [ "$c" = 200 ] && [ "$p" = "$lab0" ] || fail "upload $s: status $c, prediction '$p' (want $lab0) $(cat "$tmp/slow$s.err")"
done
verdict "SIGTERM with 3 slow uploads in flight: all finish with 200 and the right digit"
stop_server 40
grep -i 'draining' "$tmp/server.log" | sed 's/^/# server: /'
[ "$srv_rc" -eq 0 ] || fail "exit status $srv_rc; stderr tail: $(tail -5 "$tmp/server.log")"
grep -qiE 'AddressSanitizer|runtime error:|LeakSanitizer' "$tmp/server.log" && fail "sanitizer report: $(grep -iE -m3 'Sanitizer|runtime error' "$tmp/server.log")"
verdict "server exits 0 after draining"
problems=()
grep -q 'draining: not ready, still accepting for 4.0s' "$tmp/server.log" || fail "no log line for the drain delay"
grep -qE 'draining: no longer accepting, waiting up to 30.0s for [1-9]' "$tmp/server.log" ||
    fail "no log line for closing the listener with the uploads still in flight"
grep -qE 'stopped cleanly|stopped with' "$tmp/server.log" || fail "no log line for the stop"
verdict "each drain phase is logged"

# ================================================================ configuration
# Flags win over environment variables; env alone takes effect; --model
# NAME=PATH[,PATH] builds an ensemble; --default-model picks the default.
if MNIST_BODY_LIMIT=10 MNIST_MAX_PIXELS=10000 MNIST_DEFAULT_MODEL=ens \
    start_server "$tmp/server2.log" --model mlp="$MODELS/mlp.safetensors" \
        --model ens="$MODELS/mlp.safetensors,$MODELS/lenet.safetensors" \
        --default-model mlp --body-limit 20000 --max-batch 2 --threads 2 --grace 5 \
        --drain-delay 0 --timeout 2; then
    ok "second server starts with --model, an ensemble and limits"
    http GET /v1/models
    M='(j["models"] if isinstance(j, dict) else j)'
    want_code 200 && {
        want_json "sorted(m['name'] for m in $M) == ['ens', 'mlp']"
        want_json "[m['name'] for m in $M if m.get('default') is True] == ['mlp']"
    }
    verdict "--model NAME=PATH replaces the models dir; --default-model beats MNIST_DEFAULT_MODEL"
    post_png /predict "$img"
    want_code 200 && { want_json 'pred_ok(j)'; want_json 'j["model"] == "mlp"'; }
    verdict "--body-limit 20000 beats MNIST_BODY_LIMIT=10: a small PNG is accepted by the default mlp"
    post_png '/predict?model=ens' "$img"
    want_code 200 && { want_json 'pred_ok(j)'; want_json 'j["model"] == "ens"'; want_json "j['prediction'] == $lab0"; }
    verdict "ensemble of mlp+lenet answers ?model=ens"
    post_png /predict "$tmp/fx/mid_0.png"
    want_error 413
    verdict "MNIST_MAX_PIXELS=10000: a 112x112 image is 413"
    "$PY" "$here/pngtool.py" pad "$img" "$tmp/fx/pad30k.png" 30000
    post_png /predict "$tmp/fx/pad30k.png"
    want_error 413
    verdict "--body-limit 20000: a 30 KB body is 413"
    http POST /predict/batch -F "image=@$img" -F "image=@$tmp/fx/mnist_1.png"
    want_code 200 && want_json 'len(j["results"]) == 2 and all(pred_ok(r) for r in j["results"])'
    verdict "--max-batch 2: a batch of 2 is answered"
    http POST /predict/batch -F "image=@$img" -F "image=@$img" -F "image=@$img"
    want_error 413
    verdict "--max-batch 2: a batch of 3 is 413"
    # Slow clients with --timeout 2: a normal client is still answered at
    # once and the server closes every idle connection itself.
    py_verdicts "slowloris check" < <("$PY" "$here/abuse.py" --slowloris "$port" 2 2>&1)
    stop_server 20
    [ "$srv_rc" -eq 0 ] || fail "exit status $srv_rc; stderr tail: $(tail -5 "$tmp/server2.log")"
    verdict "second server exits 0 on SIGTERM"
else
    nok "second server starts with --model, an ensemble and limits" "$srv_fail" "$(tail -20 "$tmp/server2.log")"
fi

# ================================================================ CORS
# Flags name the allowed origins (a comma list and a repeat); env alone
# ('*') allows any. A one-model server starts fast.
if start_server "$tmp/server-cors.log" --model lenet="$MODELS/lenet.safetensors" \
        --cors-origin https://app.example,https://other.example --cors-origin http://localhost:3000 \
        --threads 2 --grace 5; then
    ok "server with --cors-origin starts"
    run_client "CORS" cors "$base" https://app.example
    run_client "CORS" cors "$base" http://localhost:3000
    stop_server 20
    [ "$srv_rc" -eq 0 ] || nok "CORS server exits 0" "exit status $srv_rc: $(tail -5 "$tmp/server-cors.log")"
else
    nok "server with --cors-origin starts" "$srv_fail" "$(tail -20 "$tmp/server-cors.log")"
fi
if MNIST_CORS_ORIGIN='*' start_server "$tmp/server-cors2.log" --model lenet="$MODELS/lenet.safetensors" \
        --threads 1 --grace 5; then
    ok "server with MNIST_CORS_ORIGIN='*' starts"
    run_client "CORS any" cors-any "$base"
    stop_server 20
    [ "$srv_rc" -eq 0 ] || nok "CORS '*' server exits 0" "exit status $srv_rc: $(tail -5 "$tmp/server-cors2.log")"
else
    nok "server with MNIST_CORS_ORIGIN='*' starts" "$srv_fail" "$(tail -20 "$tmp/server-cors2.log")"
fi
start_fail "invalid --cors-origin" "--cors-origin" --cors-origin "app.example/path"

# ================================================================ kernel path
# NN_ISA=generic caps the server's kernels: the start-up line and
# mnist_build_info name the path it runs, and it still answers right.
if NN_ISA=generic start_server "$tmp/server-isa.log" --model lenet="$MODELS/lenet.safetensors" \
        --threads 1 --grace 5; then
    grep -q ' generic kernels,' "$tmp/server-isa.log" ||
        fail "start-up line does not name the generic kernels: $(grep -m1 threads "$tmp/server-isa.log")"
    http GET /metrics
    grep -qE '^mnist_build_info\{.*kernels="generic",precision="fp32"\} 1$' "$body" ||
        fail "mnist_build_info does not say kernels=\"generic\": $(grep build_info "$body")"
    post_png "/predict" "$tmp/fx/mnist_0.png"
    want_code 200
    verdict "NN_ISA=generic: the server logs and exports the generic kernel path and predicts"
    stop_server 20
else
    nok "server starts with NN_ISA=generic" "$srv_fail" "$(tail -5 "$tmp/server-isa.log")"
fi

# ================================================================ precision
# NN_PRECISION: an unknown value stops the start; bf16 runs the default
# CNN's convolutions on AMX where the CPU has it (and says so in
# /v1/models, the start-up line and mnist_build_info, answering the same
# digits), and stops the start with one line where it has not.
NN_PRECISION=fp16 start_fail "unknown NN_PRECISION" "NN_PRECISION=fp16" \
    --model lenet="$MODELS/lenet.safetensors"
if grep -qw amx_bf16 /proc/cpuinfo && grep -qw amx_tile /proc/cpuinfo &&
        grep -qw avx512_bf16 /proc/cpuinfo; then
    if NN_PRECISION=bf16 start_server "$tmp/server-bf16.log" --model cnn="$MODELS/cnn.safetensors" \
            --model lenet="$MODELS/lenet.safetensors" --default-model cnn --threads 1 --grace 5; then
        grep -q ' bf16 precision,' "$tmp/server-bf16.log" ||
            fail "start-up line does not name bf16: $(grep -m1 threads "$tmp/server-bf16.log")"
        http GET /v1/models
        prec=$("$PY" -c 'import json, sys; j = json.load(sys.stdin); print(" ".join(m["name"] + "=" + m["precision"] for m in j["models"]))' < "$body")
        for want in cnn=bf16 lenet=fp32; do
            case " $prec " in *" $want "*) ;;
                *) fail "/v1/models precision: $prec (want cnn=bf16, lenet=fp32: LeNet has no chain)" ;; esac
        done
        http GET /metrics
        grep -qE '^mnist_build_info\{.*precision="bf16"\} 1$' "$body" ||
            fail "mnist_build_info does not say precision=\"bf16\": $(grep build_info "$body")"
        for i in "${mnist_idx[@]}"; do
            post_png "/predict" "$tmp/fx/mnist_$i.png"
            want_code 200 && { want_json 'pred_ok(j)'; want_json "j['prediction'] == ${mnist_lab[$i]}"; }
        done
        verdict "NN_PRECISION=bf16 (AMX): CNN in bf16, LeNet fp32, logged, exported, 20 test digits right"
        stop_server 20
    else
        nok "server starts with NN_PRECISION=bf16" "$srv_fail" "$(tail -5 "$tmp/server-bf16.log")"
    fi
else
    NN_PRECISION=bf16 start_fail "NN_PRECISION=bf16 without AMX" "needs AMX-BF16" \
        --model lenet="$MODELS/lenet.safetensors"
fi

# ================================================================ the spec
spec_src=${spec_file:-$tmp/served-openapi.yaml}
r=$("$PY" "$here/validate.py" "$spec_src" --examples 2>&1)
while IFS=$'\t' read -r verdict_word what why; do
    case $verdict_word in
        PASS) ok "$what" ;;
        FAIL) nok "$what" "$why" ;;
        *) [ -n "$verdict_word" ] && nok "spec examples check" "$verdict_word $what $why" ;;
    esac
done <<< "$r"
r=$("$PY" "$here/validate.py" "$spec_src" --manifest "$tmp/manifest" 2>&1)
while IFS=$'\t' read -r verdict_word what why; do
    case $verdict_word in
        PASS) ok "$what" ;;
        FAIL) nok "$what" "$why" ;;
        *) [ -n "$verdict_word" ] && nok "response validation" "$verdict_word $what $why" ;;
    esac
done <<< "$r"

finish

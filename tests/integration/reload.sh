#!/usr/bin/env bash
# Models changing while mnist-server runs: versions, SIGHUP, polling, the
# repository API, files that fail, and a short reload-under-load run.
#
#   tests/integration/reload.sh BUILD_DIR [SOAK_ARGS...]
#
# Every server binds 127.0.0.1 port 0 (port read from its log) and serves
# a scratch models directory: digits/1.safetensors (the shipped MLP) and
# lenet.safetensors. Output is TAP closed by "reload: N passed, M failed";
# the exit status is non-zero on any failure. SOAK_ARGS go to
# reload_soak.py (default: a short run, 16 connections, 4 s, 8 reloads;
# make reload-soak runs the full one).
set -uo pipefail

# shellcheck source=tests/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"
shift $(($# > 0 ? 1 : 0))
SOAK_ARGS=("$@")
[ ${#SOAK_ARGS[@]} -gt 0 ] || SOAK_ARGS=(--connections 16 --seconds 4 --reloads 8)

SERVER=$build/mnist-server
MKMODEL=$build/tests/tools/mkmodel
MODELS=${MODELS_DIR:-models}
PY=${PYTHON:-python3}
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"
suite_begin reload mnist-reload

# ---------------------------------------------------------------- helpers
code=000 body=/dev/null
mkdir -p "$tmp/resp"
: > "$tmp/manifest"
# http METHOD PATH [curl args...]: sets $code, the body in $body; every
# answer is recorded for the check against openapi.yaml at the end.
http() {
    local method=$1 path=$2; shift 2
    # (unique names: helpers call this in subshells, where a counter would
    # not advance)
    body=$(mktemp "$tmp/resp/r.XXXXXX")
    code=$(curl -sS -X "$method" -o "$body" -D "$body.hdr" -w '%{http_code}' --max-time 60 "$@" \
        "$base$path" 2>"$tmp/curl.err") || code=000
    [ "$code" = 000 ] || printf '%s\t%s\t%s\t%s\t%s\n' "$method" "$path" "$code" \
        "$(grep -i '^Content-Type:' "$body.hdr" | tail -1 | cut -d: -f2- | sed 's/^ *//; s/\r$//')" \
        "$body" >> "$tmp/manifest"
}
jget() { "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$body" "$1" 2>/dev/null; }
# predict QUERY [curl args...]
predict() {
    local q=$1; shift
    http POST "/predict$q" -H 'Content-Type: image/png' --data-binary "@$tmp/one.png" "$@"
}
# served_version NAME: the version answering ?model=NAME, or the status.
served_version() {
    predict "?model=$1"
    if [ "$code" = 200 ]; then jget 'j["model_version"]'; else echo "status-$code"; fi
}
# wait_for DESC CMD...: retries CMD (a test) for up to 15 s.
wait_for() {
    local desc=$1; shift
    local deadline=$((SECONDS + 15))
    while ! "$@"; do
        [ $SECONDS -ge $deadline ] && { fail "timed out waiting for $desc"; return 1; }
        sleep 0.05
    done
}
is_version() { [ "$(served_version "$1")" = "$2" ]; }
index_state() {  # index_state NAME VERSION -> READY/UNAVAILABLE/none
    http POST /v2/repository/index
    jget "next((e['state'] for e in j if e['name']=='$1' and e['version']=='$2'), 'none')"
}
is_state() { [ "$(index_state "$1" "$2")" = "$3" ]; }
ready_200() {
    local c; c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$base/readyz") || c=000
    [ "$c" = 200 ] || fail "/readyz answered $c"
}
publish() {  # publish SRC VERSION: write-then-rename
    cp "$1" "$dir/digits/.$2.tmp" && mv "$dir/digits/.$2.tmp" "$dir/digits/$2.safetensors"
}

sanitizer_clean() {  # sanitizer_clean LOG
    if grep -qiE 'AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:' "$1"; then
        fail "sanitizer report: $(grep -iE -m5 'Sanitizer|runtime error|^    #[0-3] ' "$1")"
    fi
}

# ================================================================ fixtures
echo "# build dir: $build"
for f in "$SERVER" "$MKMODEL"; do [ -x "$f" ] || { nok "program $f exists" "run: make all test-bins"; finish; }; done
for m in mlp lenet cnn; do
    [ -f "$MODELS/$m.safetensors" ] || { nok "model $MODELS/$m.safetensors exists"; finish; }
done
"$PY" - "$tmp/one.png" <<'EOF'
import struct, sys, zlib
w = h = 28
px = bytearray(w * h)
for y in range(5, 23):
    px[y * w + 13] = px[y * w + 14] = 255
raw = b"".join(b"\0" + bytes(px[y * w:(y + 1) * w]) for y in range(h))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
EOF
"$MKMODEL" "$tmp/narrow.safetensors" 1 14 14 > /dev/null || fail "mkmodel 1 14 14"
"$MKMODEL" "$tmp/five.safetensors" 1 28 28 5 > /dev/null || fail "mkmodel 1 28 28 5"
head -c 20000 "$MODELS/lenet.safetensors" > "$tmp/truncated.safetensors"
head -c 100000 /dev/urandom > "$tmp/corrupt.safetensors"
verdict "fixtures: a PNG, a 1x14x14 model, a 5-class model, truncated and corrupt files"

dir=$tmp/m
mkdir -p "$dir/digits"
cp "$MODELS/mlp.safetensors" "$dir/digits/1.safetensors"
cp "$MODELS/lenet.safetensors" "$dir/lenet.safetensors"

# ================================================================ SIGHUP and the API
log=$tmp/server.log
if ! start_server "$log" --threads 2 --models-dir "$dir" --enable-model-control; then
    nok "server starts with a versioned models directory" "$(tail -5 "$log")"; finish
fi
ok "server starts with a versioned models directory"

[ "$(served_version digits)" = 1 ] || fail "?model=digits: $(served_version digits), expected version 1"
[ "$(served_version digits:1)" = 1 ] || fail "?model=digits:1 does not answer with version 1"
predict "?model=digits&version=1"; [ "$code" = 200 ] || fail "?model=digits&version=1: $code"
predict "?model=digits:2"; [ "$code" = 404 ] && [ "$(jget 'j["error"]["code"]')" = model_not_found ] \
    || fail "?model=digits:2 before it exists: $code $(head -c 200 "$body")"
predict "?model=digits&version=x"; [ "$code" = 404 ] || fail "?version=x: $code"
[ "$(served_version lenet)" = 1 ] || fail "flat lenet.safetensors is not version 1"
verdict "versions on today's API: NAME, NAME:N, &version=N, unknown versions 404"

publish "$MODELS/lenet.safetensors" 2
kill -HUP "$srv_pid"
wait_for "version 2 after SIGHUP" is_version digits 2
server_alive || fail "the server died on SIGHUP"
grep -q 'model digits version 2 loaded (SIGHUP).*sha256 [0-9a-f]\{64\}' "$log" \
    || fail "no 'loaded' log line with version and sha256"
grep -q 'model digits version 1 unloaded (SIGHUP)' "$log" || fail "no 'unloaded' log line for version 1"
predict "?model=digits:1"; [ "$code" = 404 ] || fail "version 1 still answers with --keep-versions 1: $code"
predict "?model=digits" -H 'X-Request-Id: reload-v2-access'
wait_for "the access-log line of a version 2 answer" grep -q 'rid=reload-v2-access model=digits model_version=2' "$log"
ready_200
verdict "SIGHUP: published version 2 serves, version 1 unloaded, logged"

rm "$dir/digits/2.safetensors"
kill -HUP "$srv_pid"
wait_for "version 1 back after removing 2" is_version digits 1
ready_200
verdict "SIGHUP: version 2 removed, version 1 serves again"

# Files that fail: the old version keeps answering, the failure is reported.
for bad in corrupt truncated narrow five; do
    cp "$tmp/$bad.safetensors" "$dir/digits/.3.tmp" && mv "$dir/digits/.3.tmp" "$dir/digits/3.safetensors"
    before=$(curl -s "$base/metrics" | sed -n 's/^mnist_model_load_failures_total{model="digits"} //p')
    kill -HUP "$srv_pid"
    wait_for "version 3 ($bad) reported UNAVAILABLE" is_state digits 3 UNAVAILABLE
    [ "$(served_version digits)" = 1 ] || fail "$bad: version 1 no longer answers"
    ready_200
    http GET /v1/models
    reason=$(jget "[v for m in j['models'] if m['name']=='digits' for v in m['versions'] if v['version']==3][0]['reason']")
    [ -n "$reason" ] || fail "$bad: /v1/models has no reason for version 3"
    case $bad in
    narrow) [[ $reason == *1x14x14* ]] || fail "wrong-shape reason: $reason" ;;
    five) [[ $reason == *"5 classes"* ]] || fail "class-count reason: $reason" ;;
    esac
    after=$(curl -s "$base/metrics" | sed -n 's/^mnist_model_load_failures_total{model="digits"} //p')
    [ "$after" = $((before + 1)) ] || fail "$bad: load failures went $before -> $after"
    grep -q "model digits version 3 failed to load (SIGHUP): .*3.safetensors" "$log" \
        || fail "$bad: no log line naming the file"
    verdict "a $bad file as version 3: version 1 keeps answering, failure in /v1/models, index, metrics, log"
done

# A file that appears in two writes: the first half fails, the whole loads.
rm -f "$dir/digits/3.safetensors"
size=$(stat -c %s "$MODELS/cnn.safetensors")
head -c $((size / 2)) "$MODELS/cnn.safetensors" > "$dir/digits/3.safetensors"
kill -HUP "$srv_pid"
wait_for "half-written version 3 reported" is_state digits 3 UNAVAILABLE
[ "$(served_version digits)" = 1 ] || fail "half a file replaced version 1"
tail -c +$((size / 2 + 1)) "$MODELS/cnn.safetensors" >> "$dir/digits/3.safetensors"
kill -HUP "$srv_pid"
wait_for "version 3 after its second write" is_version digits 3
verdict "a file written in two steps: not loaded half-written, loaded once whole"

# The repository API.
publish "$MODELS/lenet.safetensors" 4
http POST /v2/repository/models/digits/load
[ "$code" = 200 ] || fail "load: $code $(head -c 300 "$body")"
[ "$(jget "[v['state'] for v in j['versions'] if v['version']=='4'][0]")" = READY ] \
    || fail "load answer lacks version 4 READY: $(head -c 300 "$body")"
[ "$(served_version digits)" = 4 ] || fail "version 4 does not serve after load"
cp "$tmp/corrupt.safetensors" "$dir/digits/5.safetensors"
http POST /v2/repository/models/digits/load
{ [ "$code" = 422 ] && [[ $(jget 'j["error"]') == *5.safetensors* ]]; } \
    || fail "load of a corrupt version: $code $(head -c 300 "$body")"
[ "$(served_version digits)" = 4 ] || fail "corrupt version 5 replaced version 4"
rm "$dir/digits/5.safetensors"
http POST /v2/repository/models/digits/unload
[ "$code" = 200 ] || fail "unload: $code"
predict "?model=digits"; [ "$code" = 404 ] || fail "digits answers after unload: $code"
[ "$(index_state digits 4)" = UNAVAILABLE ] || fail "index after unload: $(index_state digits 4)"
kill -HUP "$srv_pid"; sleep 0.5
predict "?model=digits"; [ "$code" = 404 ] || fail "SIGHUP brought back an unloaded model: $code"
http POST /v2/repository/models/lenet/unload
{ [ "$code" = 409 ] && [[ $(jget 'j["error"]') == *last* ]]; } || fail "unloading the last model: $code $(head -c 300 "$body")"
http POST /v2/repository/models/digits/load
[ "$code" = 200 ] || fail "load after unload: $code"
[ "$(served_version digits)" = 4 ] || fail "digits does not serve version 4 after load"
http POST /v2/repository/models/nosuch/load
[ "$code" = 404 ] || fail "load of an unknown model: $code"
http GET /v2/repository/index
[ "$code" = 405 ] || fail "GET /v2/repository/index: $code, expected 405"
ready_200
verdict "repository API: load, a failing load (422), unload, last model (409), unknown (404)"

# Reload under load, short (make reload-soak runs the full one).
rm -f "$dir"/digits/[2-9]*.safetensors
kill -HUP "$srv_pid"
wait_for "back to version 1" is_version digits 1
soak=$("$PY" "$here/reload_soak.py" --base "$base" --pid "$srv_pid" --dir "$dir" \
    --good "$MODELS/lenet.safetensors" --good "$MODELS/mlp.safetensors" "${SOAK_ARGS[@]}" 2>&1)
rc=$?
echo "$soak" | sed -n 's/^soak: /# soak: /p'
[ $rc -eq 0 ] || fail "$soak"
rss_note=", RSS within 10%"
[[ " ${SOAK_ARGS[*]} " == *" --no-rss-check "* ]] && rss_note=" (RSS not checked)"
verdict "reload under load (${SOAK_ARGS[*]}): all 200, no connection errors, versions live$rss_note"

stop_server
[ "$srv_rc" = 0 ] || fail "exit status $srv_rc after SIGTERM"
sanitizer_clean "$log"
verdict "server stops cleanly after the reloads"

# ================================================================ polling, no control
dir2=$tmp/m2
mkdir -p "$dir2/digits"
cp "$MODELS/mlp.safetensors" "$dir2/digits/1.safetensors"
cp "$MODELS/lenet.safetensors" "$dir2/lenet.safetensors"
log2=$tmp/poll.log
if ! start_server "$log2" --threads 2 --models-dir "$dir2" --poll-interval 0.2; then
    nok "server starts with --poll-interval 0.2" "$(tail -5 "$log2")"; finish
fi
for p in /v2/repository/index /v2/repository/models/digits/load /v2/repository/models/digits/unload; do
    http POST "$p"
    { [ "$code" = 403 ] && [[ $(jget 'j["error"]') == *--enable-model-control* ]]; } \
        || fail "POST $p without --enable-model-control: $code $(head -c 200 "$body")"
done
[ "$(served_version digits)" = 1 ] || fail "the refused API changed what serves"
verdict "repository API refused (403) without --enable-model-control"

cp "$MODELS/lenet.safetensors" "$dir2/digits/.2.tmp" && mv "$dir2/digits/.2.tmp" "$dir2/digits/2.safetensors"
wait_for "poll picks up version 2" is_version digits 2
grep -q 'model digits version 2 loaded (poll)' "$log2" || fail "no 'loaded (poll)' line"
cp "$MODELS/mlp.safetensors" "$dir2/digits/.2.tmp" && mv "$dir2/digits/.2.tmp" "$dir2/digits/2.safetensors"
wait_for "poll picks up the changed version 2" \
    grep -q 'model digits version 2 loaded (poll).*flatten-dense(128)' "$log2"
cp "$tmp/corrupt.safetensors" "$dir2/digits/3.safetensors"
wait_for "poll reports the corrupt version 3" grep -q 'model digits version 3 failed to load (poll)' "$log2"
sleep 0.6
[ "$(grep -c 'model digits version 3 failed to load' "$log2")" = 1 ] \
    || fail "an unchanged failing file was retried by every poll"
[ "$(served_version digits)" = 2 ] || fail "corrupt version 3 replaced version 2"
cp "$MODELS/mlp.safetensors" "$dir2/bad name.safetensors"
wait_for "poll reports a file whose name is no model name" grep -q "models: .*'bad name' must be" "$log2"
sleep 0.6
[ "$(grep -c "'bad name' must be" "$log2")" = 1 ] || fail "the same bad file name was reported by every poll"
rm "$dir2/bad name.safetensors"
rm "$dir2/digits/2.safetensors" "$dir2/digits/3.safetensors"
wait_for "poll: version 1 back" is_version digits 1
ready_200
verdict "--poll-interval: new, changed and removed files noticed; a failing file reported once"
stop_server
[ "$srv_rc" = 0 ] || fail "exit status $srv_rc after SIGTERM"
sanitizer_clean "$log2"
verdict "polling server stops cleanly"

# ================================================================ the spec
r=$("$PY" "$here/validate.py" openapi.yaml --manifest "$tmp/manifest" 2>&1)
if [ $? -eq 0 ]; then ok "every answer above matches openapi.yaml ($(grep -c '^PASS' <<< "$r") routes)"
else nok "every answer above matches openapi.yaml" "$(grep -v '^PASS' <<< "$r" | head -20)"; fi

finish

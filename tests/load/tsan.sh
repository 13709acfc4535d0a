#!/bin/sh
# tsan.sh BUILD_DIR - the server built with -fsanitize=thread under the
# concurrent parts of the integration suite and a 20 s mixed load:
# The server batches (--batch-delay: a /predict's connection suspended
# while the batcher's runner threads or another request's thread run its
# forward pass), so requests wait for and run in each other's forward
# passes throughout, and batchers are freed under load by the reloads.
#   1. 200 predictions, 16 at a time, each equal to the sequential answer;
#   2. the HTTP abuse suite and slow clients (tests/integration/abuse.py);
#   3. LOAD_SECONDS (20) of wrk at once on /predict with four models
#      (a single net, an MLP, the five-member ensemble, a versioned model
#      being reloaded), /predict/batch, v2 inference (a UINT8 tensor of
#      two images), /metrics and /v1/models, every
#      answer 2xx (slow ones are fine: the race detector slows the server
#      several times), while the versioned model's version 2 is published
#      and removed in turn and picked up by SIGHUP or by the repository
#      API's load, each reload swapping the model under the load;
#   4. SIGTERM: exit 0 after draining.
# Fails on any ThreadSanitizer report in the server's log.
# Needs models/, data/mnist (make data), curl, python3, wrk.
set -u
BUILD=${1:?usage: tsan.sh BUILD_DIR}
LOAD_SECONDS=${LOAD_SECONDS:-20}
here=$(dirname "$0")
# shellcheck source=tests/load/common.sh
. "$here/common.sh"
fails=0
say() { echo "tsan: $*"; }
bad() { echo "tsan: FAIL: $*" >&2; fails=$((fails + 1)); }

export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
# The shipped models, and "digits" in versions (models/digits/N.safetensors)
# for the reloads.
mdir=$tmp/models
cp -r models "$mdir" && mkdir -p "$mdir/digits" && cp models/mlp.safetensors "$mdir/digits/1.safetensors" ||
    exit 2
start_server "$tmp/server.log" --models-dir "$mdir" --enable-model-control --threads 6 --timeout 5 \
    --max-batch 8 --batch-delay 2000 --max-batch-size 4 || exit 1
say "server on $base (ThreadSanitizer build)"

# 1. concurrent predictions: the sequential answer first, then 200 at once.
want=$(curl -s -H 'Content-Type: image/png' --data-binary "@$tmp/d0.png" "$base/predict" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["prediction"])')
seq 200 | xargs -P 16 -I{} sh -c 'curl -sS -o "$0/c{}.json" -w "%{http_code}\n" \
    -H "Content-Type: image/png" --data-binary "@$0/d0.png" "$1/predict" > "$0/c{}.code" \
    2> "$0/c{}.err"' "$tmp" "$base"
n_ok=$(python3 - "$tmp" "$want" <<'PY'
import glob, json, os, sys
d, want = sys.argv[1], sys.argv[2]
ok = 0
for f in glob.glob(os.path.join(d, "c*.code")):
    j = f[:-5] + ".json"
    try:
        if open(f).read().strip() == "200" and str(json.load(open(j))["prediction"]) == want:
            ok += 1
    except (OSError, ValueError, KeyError):
        pass
print(ok)
PY
)
[ "$n_ok" = 200 ] && say "200 concurrent predictions: all 200 with the sequential answer ($want)" ||
    bad "concurrent predictions: $n_ok of 200 right (statuses: $(cat "$tmp"/c*.code | sort | uniq -c |
        tr '\n' ' '); $(cat "$tmp"/c*.err | sort | uniq -c | head -3))"

# 2. hostile HTTP and slow clients.
if python3 tests/integration/abuse.py "$port" > "$tmp/abuse.out" 2>&1 &&
   python3 tests/integration/abuse.py --slowloris "$port" 5 >> "$tmp/abuse.out" 2>&1; then
    say "abuse suite: $(grep -c '^PASS' "$tmp/abuse.out") cases passed"
else
    bad "abuse suite: $(grep -v '^PASS' "$tmp/abuse.out" | head -5)"
fi

# 3. mixed load. A v2 inference request: two MNIST test images as a
# UINT8 tensor.
python3 - data/mnist/t10k-images-idx3-ubyte > "$tmp/v2.json" <<'PY'
import json, sys
px = list(open(sys.argv[1], "rb").read()[16:16 + 2 * 784])
print(json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 28, 28],
                              "datatype": "UINT8", "data": px}]}))
PY
say "mixed load for ${LOAD_SECONDS}s"
w() { # NAME CONNS SCRIPT URL [VAR=VALUE...]
    name=$1 conns=$2 script=$3 url=$4; shift 4
    env "$@" wrk -t1 -c"$conns" -d"${LOAD_SECONDS}s" --timeout 10s -s "$here/$script" "$url" \
        > "$tmp/wrk.$name" 2>&1 &
    wrk_pids="$wrk_pids $!"
}
wrk_pids=
w cnn 4 count.lua "$base/predict" BODY="$tmp/d0.png"
w mlp 2 count.lua "$base/predict?model=mlp" BODY="$tmp/d1.png"
w ens 2 count.lua "$base/predict?model=cnn-ensemble" BODY="$tmp/d0.png"
w batch 2 count.lua "$base/predict/batch" BODY="$tmp/batch.body" \
    CTYPE="multipart/form-data; boundary=BND"
w digits 2 count.lua "$base/predict?model=digits" BODY="$tmp/d0.png"
w v2 1 count.lua "$base/v2/models/lenet/infer" BODY="$tmp/v2.json" CTYPE=application/json
w metrics 1 count.lua "$base/metrics"
w models 1 count.lua "$base/v1/models"
# Reloads meanwhile: version 2 published then SIGHUP, removed then the
# API's load (back to version 1), one round a second.
end=$(($(date +%s) + LOAD_SECONDS - 1))
rounds=0
: > "$tmp/load.codes"
while [ "$(date +%s)" -lt "$end" ]; do
    cp models/lenet.safetensors "$mdir/digits/.2.tmp" && mv "$mdir/digits/.2.tmp" "$mdir/digits/2.safetensors"
    kill -HUP "$srv_pid"
    sleep 0.5
    rm -f "$mdir/digits/2.safetensors"
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 -X POST \
        "$base/v2/repository/models/digits/load" >> "$tmp/load.codes"
    sleep 0.5
    rounds=$((rounds + 1))
done
# shellcheck disable=SC2086  # a list of process ids
wait $wrk_pids
hups=$(grep -c 'model digits version 2 loaded (SIGHUP)' "$tmp/server.log")
loads=$(grep -c '^200$' "$tmp/load.codes")
if [ "$rounds" -gt 0 ] && [ "$hups" -ge 1 ] && [ "$loads" = "$rounds" ]; then
    say "reloads under the load: $rounds rounds, version 2 loaded $hups times by SIGHUP, $loads API loads (all 200)"
else
    bad "reloads: $rounds rounds, $hups SIGHUP loads of version 2, API loads answered: $(sort "$tmp/load.codes" | uniq -c | tr '\n' ' ')"
fi
for name in cnn mlp ens batch digits v2 metrics models; do
    f=$tmp/wrk.$name
    reqs=$(sed -n 's/^ *\([0-9][0-9]*\) requests in.*/\1/p' "$f")
    nb=$(non2xx "$f")
    if [ -z "$reqs" ] || [ "$reqs" -eq 0 ] || [ "$nb" != 0 ]; then
        bad "load $name: ${reqs:-no} requests, $nb not 2xx: $(tail -3 "$f")"
    else
        # The race detector slows the server 5-15x: a slow answer is not a
        # failure here (the soak test times answers), a wrong one is.
        say "load $name: $reqs requests, all 2xx ($(sed -n 's/^ *Socket errors: //p' "$f"))"
    fi
done

# 4. shutdown.
stop_server
[ "$srv_rc" = 0 ] && say "server exited 0 after SIGTERM" || bad "server exit status $srv_rc"
if grep -q 'ThreadSanitizer' "$tmp/server.log"; then
    bad "ThreadSanitizer reports: $(grep -c 'WARNING: ThreadSanitizer' "$tmp/server.log")"
    grep -A30 -m3 'WARNING: ThreadSanitizer' "$tmp/server.log" >&2
fi
if [ "$fails" -ne 0 ]; then
    echo "tsan: $fails failure(s)" >&2
    exit 1
fi
echo "tsan: no data races reported; all checks passed"

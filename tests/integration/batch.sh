#!/usr/bin/env bash
# Dynamic batching over HTTP: a server with batching off and one with it
# on (--batch-delay, --max-batch-size, more request threads than cores so
# requests can wait for each other) answer the same requests; the
# batching one gets them CLIENTS at a time and must answer each as the
# other does (tests/integration/batchcheck.py says within what and why),
# and its /metrics must show batches of more than one image. Then SIGTERM
# under load: every request answered, exit status 0.
#
#   tests/integration/batch.sh BUILD_DIR     (build, build/asan, build/tsan)
#
# Knobs (environment): CLIENTS (16), ROUNDS (2), START_TIMEOUT (60 s),
# PYTHON (python3). Output: TAP lines, then "batch: N passed, M failed".
set -uo pipefail

# shellcheck source=tests/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"

SERVER=$build/mnist-server
PY=${PYTHON:-python3}
CLIENTS=${CLIENTS:-16}
ROUNDS=${ROUNDS:-2}
START_TIMEOUT=${START_TIMEOUT:-60}
MNIST=${MNIST_DIR:-data/mnist}
for v in $(env | sed -n 's/^\(MNIST_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnist-batch.XXXXXX") || exit 2
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

n=0 npass=0 nfail=0
ok() { n=$((n + 1)); npass=$((npass + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); nfail=$((nfail + 1)); echo "not ok $n - $1"; printf '%s\n' "${@:2}" | sed 's/^/#   /'; }
finish() {
    echo "1..$n"
    echo "batch: $npass passed, $nfail failed"
    [ "$nfail" -eq 0 ]
    exit $?
}
# TAP lines from batchcheck.py's PASS/FAIL lines.
tap() {
    local status what why
    while IFS=$'\t' read -r status what why; do
        case $status in
        PASS) ok "$what" ;;
        FAIL) nok "$what" "$why" ;;
        *) nok "batchcheck.py: $status $what" ;;
        esac
    done
}

# start LOG ARGS...: a server on a free port, ready; sets pid and base.
start() {
    local log=$1 port="" c deadline=$((SECONDS + START_TIMEOUT))
    shift
    "$SERVER" --host 127.0.0.1 --port 0 --drain-delay 0 --access-log off \
        --model cnn=models/cnn.safetensors --model lenet=models/lenet.safetensors "$@" \
        > /dev/null 2> "$log" &
    pid=$!
    pids+=("$pid")
    base=""
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$pid" 2>/dev/null || return 1
        [ -n "$port" ] || port=$(sed -n 's#.*listening on http://[^ ]*:\([0-9][0-9]*\).*#\1#p' "$log" | head -1)
        if [ -n "$port" ]; then
            base=http://127.0.0.1:$port
            c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/readyz") || c=000
            [ "$c" = 200 ] && return 0
        fi
        sleep 0.1
    done
    return 1
}
# stop PID: SIGTERM; the exit status (124: still running after 60 s).
stop() {
    local p=$1 deadline=$((SECONDS + 60))
    kill -TERM "$p" 2>/dev/null
    while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p"; wait "$p" 2>/dev/null; return 124; fi
    wait "$p"
}

[ -x "$SERVER" ] || { nok "program $SERVER exists" "run: make all"; finish; }
[ -f "$MNIST/t10k-images-idx3-ubyte" ] || { nok "MNIST test set in $MNIST" "run: make data"; finish; }

start "$tmp/off.log" --threads 2 || { nok "server without batching starts" "$(tail -5 "$tmp/off.log")"; finish; }
off_pid=$pid off=$base
grep -q 'dynamic batching' "$tmp/off.log" &&
    nok "without --batch-delay the server does not batch" "$(grep 'dynamic batching' "$tmp/off.log")"
start "$tmp/on.log" --threads 8 --batch-delay 20000 --max-batch-size 8 ||
    { nok "server with batching starts" "$(tail -5 "$tmp/on.log")"; finish; }
on_pid=$pid on=$base
if grep -q 'dynamic batching: up to 8 images per forward pass, waiting at most 20000us' "$tmp/on.log"; then
    ok "with --batch-delay the start-up log states the batching"
else
    nok "with --batch-delay the start-up log states the batching" "$(head -8 "$tmp/on.log")"
fi

"$PY" "$here/batchcheck.py" answers "$off" "$on" "$MNIST" "$CLIENTS" "$ROUNDS" > "$tmp/answers.out" 2>&1
rc=$?
tap < "$tmp/answers.out"
[ $rc -le 1 ] || nok "batchcheck.py answers ran" "$(tail -5 "$tmp/answers.out")"

# The exposition with the batch families is still what Prometheus takes.
if command -v promtool > /dev/null; then
    curl -s "$on/metrics" > "$tmp/metrics"
    if out=$(promtool check metrics < "$tmp/metrics" 2>&1); then
        ok "promtool check metrics passes with batch histograms"
    else
        nok "promtool check metrics passes with batch histograms" "$out"
    fi
fi

stop "$off_pid"
rc=$?
[ $rc = 0 ] && ok "server without batching exits 0 on SIGTERM" || nok "server without batching exits 0 on SIGTERM" "status $rc"

"$PY" "$here/batchcheck.py" drain "$on" "$MNIST" "$CLIENTS" "$on_pid" > "$tmp/drain.out" 2>&1
tap < "$tmp/drain.out"
stop "$on_pid"
rc=$?
if [ $rc = 0 ] && grep -q 'stopped cleanly' "$tmp/on.log"; then
    ok "server with batching drains and exits 0 on SIGTERM"
else
    nok "server with batching drains and exits 0 on SIGTERM" "status $rc" "$(tail -3 "$tmp/on.log")"
fi
if grep -q 'ThreadSanitizer\|AddressSanitizer\|runtime error' "$tmp/on.log" "$tmp/off.log"; then
    nok "no sanitizer report in the servers' logs" "$(grep -m3 -A5 'Sanitizer\|runtime error' "$tmp/on.log" "$tmp/off.log")"
fi
finish

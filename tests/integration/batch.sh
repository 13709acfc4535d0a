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
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"
suite_begin batch mnist-batch

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

# start LOG ARGS...: a server with cnn and lenet, ready; sets srv_pid, base.
start() {
    local log=$1
    shift
    start_server "$log" --drain-delay 0 --access-log off --model cnn=models/cnn.safetensors \
        --model lenet=models/lenet.safetensors "$@"
}
# stop PID: SIGTERM; the exit status (124: still running after 60 s).
stop() {
    srv_pid=$1
    stop_server 60
    return "$srv_rc"
}

[ -x "$SERVER" ] || { nok "program $SERVER exists" "run: make all"; finish; }
[ -f "$MNIST/t10k-images-idx3-ubyte" ] || { nok "MNIST test set in $MNIST" "run: make data"; finish; }

start "$tmp/off.log" --threads 2 || { nok "server without batching starts" "$(tail -5 "$tmp/off.log")"; finish; }
off_pid=$srv_pid off=$base
grep -q 'dynamic batching' "$tmp/off.log" &&
    nok "without --batch-delay the server does not batch" "$(grep 'dynamic batching' "$tmp/off.log")"
start "$tmp/on.log" --threads 2 --batch-delay 20000 --max-batch-size 8 ||
    { nok "server with batching starts" "$(tail -5 "$tmp/on.log")"; finish; }
on_pid=$srv_pid on=$base
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

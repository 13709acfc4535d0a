#!/usr/bin/env bash
# Rolling update under load, on one machine: three mnist-server processes
# behind HAProxy (health-checked on /readyz), wrk at 64 connections for
# DURATION seconds, and meanwhile each server in turn gets SIGTERM, exits,
# and is started again on its port (what a rolling update does to pods).
#
#   tests/rolling/run.sh BUILD_DIR
#
# Two runs: with the drain (--drain-delay 3: not ready at once, still
# serving while HAProxy notices) every request must succeed: no non-2xx
# answer and no connection error at the client. Then with --drain-delay 0
# (the listener closes at SIGTERM) the same update must lose requests,
# which shows what the drain buys; that count is reported.
#
# HAProxy is configured without retries: like kube-proxy routing to an
# endpoint that is going away, a connection the server refuses is an error
# for the client, not something the balancer quietly hides.
#
# Knobs: DURATION (30), CONNECTIONS (64), DRAIN_DELAY (3), HAPROXY, WRK.
# Needs haproxy, wrk (Debian packages), python3, curl, and
# BUILD_DIR/mnist-server, BUILD_DIR/tests/tools/mkpng, data/mnist.
# Output closes with "rolling: N passed, M failed"; exit status non-zero on
# any failure.
set -uo pipefail
# shellcheck source=tests/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"

DURATION=${DURATION:-30}
CONNS=${CONNECTIONS:-64}
DELAY=${DRAIN_DELAY:-3}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
WRK=${WRK:-$(command -v wrk || echo wrk)}
SERVER=$build/mnist-server
MKPNG=$build/tests/tools/mkpng

pass=0 failc=0 n=0
ok() { n=$((n + 1)); pass=$((pass + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); failc=$((failc + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do printf '%s\n' "$l" | sed 's/^/# /'; done; }
finish() { echo "rolling: $pass passed, $failc failed"; [ "$failc" = 0 ]; exit; }

for t in "$HAPROXY" "$WRK" python3 curl; do
    command -v "$t" > /dev/null || { nok "$t is installed (make deps-test)"; finish; }
done
for f in "$SERVER" "$MKPNG"; do
    [ -x "$f" ] || { nok "$f exists (make all test-bins)"; finish; }
done
for v in $(env | sed -n 's/^\(MNIST_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnist-rolling.XXXXXX") || exit 2
pids=() lb_pid="" wrk_pid=""
cleanup() {
    for p in "${pids[@]}" $lb_pid $wrk_pid; do
        [ -n "$p" ] && kill -KILL "$p" 2> /dev/null
    done
    wait 2> /dev/null
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT

"$MKPNG" --from-idx data/mnist/t10k-images-idx3-ubyte 0 "$tmp/digit.png" > /dev/null 2>&1 ||
    { nok "MNIST test image 0 as a PNG (make data)"; finish; }

# start_one I PORT DELAY: server I on PORT (0 = any free port); sets port[I].
port=()
start_one() {
    local i=$1 p=$2 delay=$3 log=$tmp/server$1.log
    : > "$log"
    "$SERVER" --host 127.0.0.1 --port "$p" --threads 2 --access-log off \
        --model lenet=models/lenet.safetensors --drain-delay "$delay" \
        --drain-timeout 10 >> "$log" 2>&1 &
    pids[i]=$!
    for _ in $(seq 300); do
        p=$(sed -n 's/.*listening on http:\/\/[^ ]*:\([0-9][0-9]*\)$/\1/p' "$log" | tail -1)
        if [ -n "$p" ] && curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$p/readyz" 2> /dev/null; then
            port[i]=$p
            return 0
        fi
        kill -0 "${pids[i]}" 2> /dev/null || break
        sleep 0.1
    done
    return 1
}

# A free port for HAProxy's front end (it cannot report a port it chose).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# backend_up I: HAProxy's stats socket says server I is UP.
backend_up() {
    python3 - "$tmp/lb.sock" "s$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
rows = data.decode().splitlines()
head = rows[0].lstrip("# ").split(",")
for r in rows[1:]:
    f = dict(zip(head, r.split(",")))
    if f.get("pxname") == "servers" and f.get("svname") == sys.argv[2]:
        sys.exit(0 if f.get("status") == "UP" else 1)
sys.exit(1)
PY
}

# one_run DELAY NAME: the whole rolling update; writes $tmp/NAME.json (wrk's
# summary) and $tmp/NAME.events.
one_run() {
    local delay=$1 name=$2 i lb
    pids=() port=()
    for i in 0 1 2; do
        start_one "$i" 0 "$delay" || { nok "$name: server $i starts" "$(tail -5 "$tmp/server$i.log")"; return 1; }
    done
    lb=$(free_port)
    cat > "$tmp/haproxy.cfg" <<CFG
global
    maxconn 4096
    stats socket $tmp/lb.sock mode 600 level user
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 0
frontend web
    bind 127.0.0.1:$lb
    default_backend servers
backend servers
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 1 rise 1
    server s0 127.0.0.1:${port[0]}
    server s1 127.0.0.1:${port[1]}
    server s2 127.0.0.1:${port[2]}
CFG
    "$HAPROXY" -db -f "$tmp/haproxy.cfg" > "$tmp/haproxy.log" 2>&1 &
    lb_pid=$!
    for _ in $(seq 100); do
        backend_up 0 2> /dev/null && backend_up 1 2> /dev/null && backend_up 2 2> /dev/null && break
        sleep 0.1
    done
    backend_up 0 && backend_up 1 && backend_up 2 ||
        { nok "$name: HAProxy sees three healthy servers" "$(tail -5 "$tmp/haproxy.log")"; return 1; }

    PNG_BODY=$tmp/digit.png "$WRK" -t2 -c"$CONNS" -d"${DURATION}s" --timeout 5s \
        -s bench/wrk/predict.lua "http://127.0.0.1:$lb/predict" > "$tmp/$name.wrk" 2>&1 &
    wrk_pid=$!
    local t_end=$((SECONDS + DURATION))
    sleep 2
    : > "$tmp/$name.events"
    for i in 0 1 2; do
        echo "$(date +%T.%N | cut -c1-12) SIGTERM server $i (port ${port[i]})" >> "$tmp/$name.events"
        kill -TERM "${pids[i]}"
        wait "${pids[i]}"; local rc=$?
        echo "$(date +%T.%N | cut -c1-12) server $i exited $rc" >> "$tmp/$name.events"
        [ $rc = 0 ] || echo "exit status $rc" >> "$tmp/$name.bad"
        start_one "$i" "${port[i]}" "$delay" || echo "server $i did not restart" >> "$tmp/$name.bad"
        for _ in $(seq 50); do backend_up "$i" 2> /dev/null && break; sleep 0.1; done
        echo "$(date +%T.%N | cut -c1-12) server $i back in rotation" >> "$tmp/$name.events"
    done
    # The whole update must happen under load, or the run proves nothing.
    [ $SECONDS -lt "$t_end" ] || echo "the update outlasted the ${DURATION}s of load (slow restarts?)" >> "$tmp/$name.bad"
    wait "$wrk_pid"; wrk_pid=""
    kill -TERM "$lb_pid"; wait "$lb_pid" 2> /dev/null; lb_pid=""
    for i in 0 1 2; do kill -TERM "${pids[i]}"; done
    wait 2> /dev/null
    grep '^{' "$tmp/$name.wrk" | tail -1 > "$tmp/$name.json"
    sed 's/^/# /' "$tmp/$name.events"
    [ -s "$tmp/$name.json" ] || { nok "$name: wrk reports" "$(tail -5 "$tmp/$name.wrk")"; return 1; }
    return 0
}

# summary FILE: "REQUESTS FAILED" from wrk's JSON line (failed = non-2xx +
# connect, read, write errors and timeouts).
summary() {
    python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
bad = sum(j[k] for k in ("errors_status", "errors_connect", "errors_read", "errors_write", "errors_timeout"))
print(j["requests"], bad)' "$1"
}

echo "# $CONNS connections for ${DURATION}s through HAProxy to 3 servers; each restarted in turn"
if one_run "$DELAY" drain; then
    read -r req bad <<< "$(summary "$tmp/drain.json")"
    echo "# with --drain-delay $DELAY: $req requests, $bad failed: $(cat "$tmp/drain.json")"
    if [ "$req" -gt 0 ] && [ "$bad" = 0 ] && [ ! -s "$tmp/drain.bad" ]; then
        ok "rolling update with --drain-delay $DELAY: 0 of $req requests failed"
    else
        nok "rolling update with --drain-delay $DELAY: 0 requests failed" "$req requests, $bad failed" \
            "$(cat "$tmp/drain.bad" 2> /dev/null)" "$(tail -3 "$tmp/drain.wrk")"
    fi
fi
if one_run 0 nodrain; then
    read -r req bad <<< "$(summary "$tmp/nodrain.json")"
    echo "# with --drain-delay 0: $req requests, $bad failed: $(cat "$tmp/nodrain.json")"
    if [ "$req" -gt 0 ] && [ "$bad" -gt 0 ] && [ ! -s "$tmp/nodrain.bad" ]; then
        ok "rolling update with --drain-delay 0 loses requests ($bad of $req): the drain is what saves them"
    else
        nok "rolling update with --drain-delay 0 loses requests" "$req requests, $bad failed" \
            "$(cat "$tmp/nodrain.bad" 2> /dev/null)"
    fi
fi
finish

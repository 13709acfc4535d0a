#!/usr/bin/env bash
# profile.sh [BUILD_DIR] [--seconds N] - `make profile`: where a server
# request's CPU time goes, by perf, under the load of make bench's server
# rows (wrk, 64 connections, POST /predict with MNIST's first test digit
# as a PNG, mnist-server --threads 2).
#
# For the LeNet and the default CNN in turn: the server runs under load
# while `perf record --call-graph dwarf` samples it; each sample is put in
# the first part of the request its call stack shows, in this order:
#
#   forward      the network (pipe_forward, nn_*)
#   preprocess   crop, fit, centre (img_prep_*)
#   PNG decode   libpng and zlib (img_png_decode)
#   JSON         the answer's text (result_json, srv_buf_json*)
#   network      the kernel's TCP send and receive over loopback, and
#                waiting for it (sendmsg, recv, epoll_wait, accept4)
#   HTTP, other  libmicrohttpd's parsing and buffers, metrics, malloc, ...
#
# and the table gives each part's share of the server's samples and, from
# the server's CPU time over the run divided by the requests answered, its
# microseconds a request. Sampling with call stacks slows the server, so
# the requests/s here are below make bench's; the shares are what count.
# wrk shares the machine: its CPU time is printed too.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=build
SECS=8
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) SECS=${2:?--seconds needs a number}; shift ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "profile: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) BUILD=$1 ;;
    esac
    shift
done
case $SECS in ''|*[!0-9]*) echo "profile: --seconds wants a whole number of seconds" >&2; exit 2 ;; esac
[ "$SECS" -ge 3 ] || { echo "profile: --seconds wants at least 3" >&2; exit 2; }

die() { printf 'profile: %s\n' "$*" >&2; exit 1; }
for t in perf wrk curl; do
    command -v "$t" > /dev/null 2>&1 || die "$t not found (make deps-bench installs it)"
done
if [ ! -x "$BUILD/mnist-server" ] || [ ! -x "$BUILD/tests/tools/mkpng" ]; then
    die "$BUILD/mnist-server or $BUILD/tests/tools/mkpng missing (make profile builds them)"
fi

TMP=$(mktemp -d /tmp/mnist-profile.XXXXXX)
SERVER_PID=
cleanup() {
    [ -z "$SERVER_PID" ] || { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PNG=$TMP/digit.png
"$BUILD/tests/tools/mkpng" --from-idx data/mnist/t10k-images-idx3-ubyte 0 "$PNG" ||
    die "could not make the PNG request body (make data)"
# perf must be allowed to sample another process of ours.
perf record -q -o "$TMP/probe.data" -- true > /dev/null 2>&1 ||
    die "perf cannot record here (as root, or lower /proc/sys/kernel/perf_event_paranoid)"

CLK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# profile NAME MODEL: one server, warmed up, then the measured run.
profile() {
    local name=$1 model=$2 port=
    # Port 0: the server picks a free one and names it in its log.
    "$BUILD/mnist-server" --host 127.0.0.1 --port 0 --model "$name=$model" --threads 2 \
        --drain-delay 0 --access-log off > "$TMP/server-$name.log" 2>&1 &
    SERVER_PID=$!
    local tries=0
    until [ -n "$port" ] && curl -sf -o /dev/null -H 'Content-Type: image/png' --data-binary "@$PNG" \
        "http://127.0.0.1:$port/predict"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 300 ] || ! kill -0 "$SERVER_PID" 2> /dev/null; then
            cat "$TMP/server-$name.log" >&2
            die "mnist-server did not answer"
        fi
        sleep 0.2
        port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$TMP/server-$name.log")
    done
    local url=http://127.0.0.1:$port/predict
    PNG_BODY=$PNG wrk -t2 -c64 -d2s -s bench/wrk/predict.lua "$url" > /dev/null
    local c0 c1
    c0=$(cpu_ticks "$SERVER_PID")
    (
        TIMEFORMAT='%3U %3S'
        { time PNG_BODY=$PNG wrk -t2 -c64 -d"${SECS}s" --timeout 10s -s bench/wrk/predict.lua "$url" \
            > "$TMP/wrk-$name.out" 2> /dev/null; } 2> "$TMP/wrk-$name.time"
    ) &
    local wrk_pid=$!
    sleep 0.5
    perf record -q -F 999 --call-graph dwarf -p "$SERVER_PID" -o "$TMP/$name.data" \
        -- sleep $((SECS - 2)) > /dev/null 2>&1 || die "perf record failed"
    wait "$wrk_pid"
    c1=$(cpu_ticks "$SERVER_PID")
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2> /dev/null || true
    SERVER_PID=
    local reqs
    reqs=$(tail -1 "$TMP/wrk-$name.out" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p')
    [ "${reqs:-0}" -gt 0 ] || die "wrk gave no result for $name"
    perf script -i "$TMP/$name.data" 2> /dev/null > "$TMP/$name.txt"
    awk -v RS= -v name="$name" -v reqs="$reqs" -v secs="$SECS" -v cpu=$((c1 - c0)) -v clk="$CLK" \
        -v wrk_time="$(cat "$TMP/wrk-$name.time")" '
    {
        if ($0 ~ /pipe_forward|nn_net_forward|nn_ensemble_forward/) p = "forward"
        else if ($0 ~ /img_prep_/) p = "preprocess"
        else if ($0 ~ /img_png_decode/) p = "PNG decode"
        else if ($0 ~ /result_json|srv_buf_json/) p = "JSON"
        else if ($0 ~ /sendmsg|__libc_recv|recvfrom|epoll_wait|accept4/) p = "network"
        else p = "HTTP, other"
        n[p]++; total++
    }
    END {
        split(wrk_time, w, " ")
        us = cpu / clk / reqs * 1e6
        printf "%s: %d requests in %d s (%.0f/s while sampled); server CPU %.1f us a request; wrk %.1f s of CPU (%.0f%% of the machine)\n\n", \
            name, reqs, secs, reqs / secs, us, w[1] + w[2], 100 * (w[1] + w[2]) / (secs * 2)
        print "| Part of a request | Share of the server'"'"'s CPU | us a request |"
        print "|---|---:|---:|"
        split("forward|preprocess|PNG decode|JSON|network|HTTP, other", order, "|")
        for (i = 1; i <= 6; i++)
            printf "| %s | %.1f%% | %.1f |\n", order[i], 100 * n[order[i]] / total, us * n[order[i]] / total
        printf "| all (%d samples) | 100%% | %.1f |\n\n", total, us
    }' "$TMP/$name.txt"
}

printf 'Machine: %s, %s cores\n\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(nproc)"
profile lenet models/lenet.safetensors
profile cnn models/cnn.safetensors

#!/bin/sh
# soak.sh BUILD_DIR SECONDS - wrk with 64 connections on POST /predict for
# SECONDS, sampling the server's resident memory and open file
# descriptors every 10 s, then prints the curve. Fails when
#   - any answer is not 2xx, or a request gets no answer (wrk socket
#     errors: connect, read, write, or no answer within 10 s);
#   - RSS at the end is more than 10% above RSS at the baseline (the
#     sample at 60 s; in runs under two minutes, the first sample after a
#     third of the run: warm-up allocations are not growth);
#   - the server holds more descriptors after the load than before it
#     (connections leaked), or more than 64 + 8 above that during it.
# Needs models/, data/mnist (make data), curl, wrk.
set -u
BUILD=${1:?usage: soak.sh BUILD_DIR SECONDS}
SECS=${2:?usage: soak.sh BUILD_DIR SECONDS}
here=$(dirname "$0")
# shellcheck source=tests/load/common.sh
. "$here/common.sh"
start_server "$tmp/server.log" --models-dir models --access-log off || exit 1
echo "soak: server on $base, wrk -c64 for ${SECS}s on POST /predict"

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$srv_pid/status"; }
fds() { ls "/proc/$srv_pid/fd" | wc -l; }
fd0=$(fds)
rss0=$(rss)
BODY="$tmp/d0.png" wrk -t2 -c64 -d"${SECS}s" --timeout 10s -s "$here/count.lua" "$base/predict" \
    > "$tmp/wrk.out" 2>&1 &
wrk_pid=$!
echo "  t(s)   RSS(KiB)  fds" > "$tmp/curve"
printf '%6d %10d %4d\n' 0 "$rss0" "$fd0" >> "$tmp/curve"
t=0
base_t=60
[ "$SECS" -lt 120 ] && base_t=$(( (SECS / 3 + 9) / 10 * 10 ))
rss_base="" maxfd=$fd0 last=$rss0
while [ $t -lt "$SECS" ]; do
    sleep 10
    t=$((t + 10))
    kill -0 "$srv_pid" 2>/dev/null || { echo "soak: FAIL: the server died" >&2; exit 1; }
    r=$(rss) f=$(fds)
    printf '%6d %10d %4d\n' "$t" "$r" "$f" >> "$tmp/curve"
    [ $t -ge "$base_t" ] && [ -z "$rss_base" ] && rss_base=$r
    [ "$f" -gt "$maxfd" ] && maxfd=$f
    last=$r
done
wait "$wrk_pid"
sleep 2
fd_end=$(fds)
printf '%6s %10d %4d  (after the load)\n' end "$(rss)" "$fd_end" >> "$tmp/curve"
cat "$tmp/curve"
grep -E 'requests in|Requests/sec|Latency|Socket errors' "$tmp/wrk.out" | sed 's/^/  wrk: /'

fails=0
bad() { echo "soak: FAIL: $*" >&2; fails=$((fails + 1)); }
reqs=$(sed -n 's/^ *\([0-9][0-9]*\) requests in.*/\1/p' "$tmp/wrk.out")
nb=$(non2xx "$tmp/wrk.out")
[ -n "$reqs" ] && [ "$reqs" -gt 0 ] || bad "wrk made no requests: $(tail -3 "$tmp/wrk.out")"
[ "$nb" = 0 ] || bad "$nb answers were not 2xx"
serr=$(sed -n 's/^ *Socket errors: //p' "$tmp/wrk.out")
[ -z "$serr" ] || bad "socket errors (no answer within 10 s counts): $serr"
rss_base=${rss_base:-$rss0}
if [ $((last * 10)) -gt $((rss_base * 11)) ]; then
    bad "RSS grew from $rss_base KiB (t=${base_t}s) to $last KiB, over 10%"
fi
[ "$fd_end" -le "$fd0" ] || bad "$fd0 descriptors before the load, $fd_end after it"
[ "$maxfd" -le $((fd0 + 72)) ] || bad "$maxfd descriptors during the load (64 connections + $fd0)"
stop_server
[ "$srv_rc" = 0 ] || bad "server exit status $srv_rc"
[ "$fails" -eq 0 ] || exit 1
echo "soak: ${reqs} requests, all 2xx; RSS ${rss_base} -> ${last} KiB; fds $fd0 -> $fd_end"

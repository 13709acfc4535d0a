# shellcheck shell=bash
# Sourced by the integration suites (run.sh, edges.sh, reload.sh) after
# tests/setup.sh: their common start.
#
#   suite_begin NAME PREFIX  unsets the caller's MNIST_* variables (they
#                    must not reach the servers under test), makes the
#                    scratch directory $tmp (KEEP_TMP=1 keeps it) and on
#                    exit kills every server still running and whatever
#                    process ids $extra_pids lists; NAME starts the
#                    summary line ("NAME: N passed, M failed")
#   ok DESC, nok DESC [DETAIL...], fail MSG (collected), verdict DESC (ok
#                    or nok with what fail collected), finish (summary,
#                    exit status), bail DESC [DETAIL...] (nok, finish):
#                    TAP output; py_verdicts WHAT: the same from a Python
#                    checker's PASS/FAIL lines on stdin
#   start_server LOG [ARGS...]  $SERVER on 127.0.0.1 port 0 (the port read
#                    from its log line), stderr to LOG, stdout to LOG.out;
#                    waits up to START_TIMEOUT (30) s for /readyz 200. Sets
#                    srv_pid, srv_log, port, base; on failure returns 1
#                    with the reason in srv_fail
#   stop_server [SECONDS]  SIGTERM, waits (30 s), sets srv_rc (124: hung,
#                    killed)
#   server_alive     the server runs (a zombie does not)
# Needs SERVER set by the caller; uses curl.

suite_begin() {
    suite_name=$1
    local v
    for v in $(env | sed -n 's/^\(MNIST_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/$2.XXXXXX") || exit 2
    server_pids=()
    extra_pids=""
    trap suite_cleanup EXIT
    trap 'exit 130' INT TERM
}
suite_cleanup() {
    local p
    for p in "${server_pids[@]}"; do
        if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null; fi
    done
    # shellcheck disable=SC2086  # a list of process ids
    [ -n "$extra_pids" ] && kill $extra_pids 2>/dev/null
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "# scratch kept in $tmp"; else rm -rf "$tmp"; fi
}

n=0 npass=0 nfail=0
ok() { n=$((n + 1)); npass=$((npass + 1)); echo "ok $n - $1"; }
nok() {
    n=$((n + 1)); nfail=$((nfail + 1)); echo "not ok $n - $1"; shift
    local l; for l in "$@"; do printf '%s\n' "$l" | head -c 2000 | sed 's/^/#   /'; echo; done
}
problems=()
fail() { problems+=("$*"); }
verdict() { if [ ${#problems[@]} -eq 0 ]; then ok "$1"; else nok "$1" "${problems[@]}"; fi; problems=(); }
finish() {
    echo "1..$n"
    echo "$suite_name: $npass passed, $nfail failed"
    [ "$nfail" -eq 0 ]
    exit $?
}
bail() { nok "$1" "${@:2}"; finish; }
# py_verdicts WHAT: TAP lines from "PASS<TAB>what" and
# "FAIL<TAB>what<TAB>why" lines on stdin (the Python checkers' output);
# any other line fails WHAT.
py_verdicts() {
    local verdict_word what why
    while IFS=$'\t' read -r verdict_word what why; do
        case $verdict_word in
            PASS) ok "$what" ;;
            FAIL) nok "$what" "$why" ;;
            *) [ -n "$verdict_word" ] && nok "$1" "$verdict_word $what $why" ;;
        esac
    done
}

START_TIMEOUT=${START_TIMEOUT:-30}
srv_pid="" srv_log="" port="" base="" srv_fail=""
start_server() {
    srv_log=$1; shift
    "$SERVER" --host 127.0.0.1 --port 0 "$@" > "$srv_log.out" 2> "$srv_log" &
    srv_pid=$!
    server_pids+=("$srv_pid")
    port="" base=""
    local deadline=$((SECONDS + START_TIMEOUT)) c
    while [ $SECONDS -lt $deadline ]; do
        if [ -z "$port" ]; then
            port=$(sed -n 's#.*listening on http://[^ "]*:\([0-9][0-9]*\).*#\1#p' "$srv_log" 2>/dev/null | head -1)
            [ -n "$port" ] && base=http://127.0.0.1:$port
        fi
        if [ -n "$port" ]; then
            c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/readyz") || c=000
            [ "$c" = 200 ] && return 0
        fi
        server_alive || { srv_fail="server exited early"; return 1; }
        sleep 0.1
    done
    srv_fail="not ready within ${START_TIMEOUT}s (port: ${port:-never logged})"
    return 1
}
stop_server() {
    local limit=${1:-30} deadline
    kill -TERM "$srv_pid" 2>/dev/null
    deadline=$((SECONDS + limit))
    # One verdict from one look: asking again after the deadline could
    # catch the exit half-way and call a clean stop a hang.
    local alive=1
    while :; do
        server_alive || { alive=0; break; }
        [ $SECONDS -lt $deadline ] || break
        sleep 0.1
    done
    if [ $alive = 1 ]; then kill -KILL "$srv_pid" 2>/dev/null; wait "$srv_pid" 2>/dev/null; srv_rc=124
    else wait "$srv_pid"; srv_rc=$?; fi
}
# Running: its /proc entry exists and is not a zombie. One read of the
# status file: kill -0 succeeds on a zombie, and a zombie reaped between
# two looks leaves no file, which is gone, not alive.
server_alive() {
    [ -n "${srv_pid:-}" ] || return 1
    local st
    st=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$srv_pid/status" 2>/dev/null)
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# shellcheck shell=bash
# Sourced by the command-line suites (tests/cli/*.sh) once they have set
# $tmp (a scratch directory): TAP-like counters and the checks they share.
#   ok NAME, not_ok NAME [DETAIL...]   one result line (details as # lines)
#   expect STATUS PATTERN NAME -- CMD...
#       CMD exits with STATUS and writes exactly one line to stderr,
#       matching the extended regex PATTERN.
# The suite ends with its own summary from $n, $pass and $failed.
# shellcheck disable=SC2154  # $tmp is set by the suite that sources this
n=0 pass=0 failed=0
ok()     { n=$((n + 1)); pass=$((pass + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }

expect() {
    local want=$1 pat=$2 name=$3
    shift 4
    "$@" > "$tmp/out" 2> "$tmp/err"
    local rc=$? lines
    lines=$(wc -l < "$tmp/err")
    if [ "$rc" -eq "$want" ] && [ "$lines" -eq 1 ] && grep -Eq -- "$pat" "$tmp/err"; then
        ok "$name"
    else
        not_ok "$name" "exit $rc (want $want), $lines stderr lines (want 1)" "$(head -c 400 "$tmp/err")"
    fi
}

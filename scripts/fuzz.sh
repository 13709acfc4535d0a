#!/bin/sh
# fuzz.sh FUZZ_BUILD_DIR SECONDS [TARGET...] - runs each libFuzzer harness
# (tests/fuzz/fuzz_TARGET.c, built as FUZZ_BUILD_DIR/fuzz_TARGET) for
# SECONDS, one after the other, and prints a table of what each did.
#
#   corpus    FUZZ_BUILD_DIR/corpus/TARGET (grows; seeded from the
#             committed tests/fuzz/corpus/TARGET, which is only read)
#   crashes   FUZZ_BUILD_DIR/crashes/TARGET/crash-* (also leak-, timeout-,
#             oom-), with REPRODUCE: the command that replays them
#   options   tests/fuzz/TARGET.dict (a dictionary), tests/fuzz/TARGET.flags
#             (extra libFuzzer flags)
#
# Exit status: non-zero when any target found something. Targets default
# to all harnesses. Run from the repository root (make fuzz does).
set -u
# shellcheck disable=SC2086  # $extra and $seeds are word lists by design
BUILD=${1:?usage: fuzz.sh FUZZ_BUILD_DIR SECONDS [TARGET...]}
SECS=${2:?usage: fuzz.sh FUZZ_BUILD_DIR SECONDS [TARGET...]}
shift 2
if [ $# -eq 0 ]; then
    set -- $(ls tests/fuzz/fuzz_*.c | sed 's#tests/fuzz/fuzz_\(.*\)\.c#\1#')
fi

failed=""
summary=$BUILD/summary.txt
printf '%-14s %8s %10s %8s %8s %s\n' target seconds execs exec/s cov result > "$summary"
for t in "$@"; do
    bin=$BUILD/fuzz_$t
    [ -x "$bin" ] || { echo "fuzz: $bin is not built (make fuzz builds it)" >&2; exit 2; }
    corpus=$BUILD/corpus/$t
    crashes=$BUILD/crashes/$t
    log=$BUILD/logs/$t.log
    mkdir -p "$corpus" "$crashes" "$BUILD/logs"
    extra=
    [ -f "tests/fuzz/$t.dict" ] && extra="-dict=tests/fuzz/$t.dict"
    [ -f "tests/fuzz/$t.flags" ] && extra="$extra $(cat "tests/fuzz/$t.flags")"
    seeds=tests/fuzz/corpus/$t
    [ -d "$seeds" ] || seeds=
    echo "fuzz: $t for ${SECS}s"
    # -timeout: one input taking 10 s is a finding; -rss_limit_mb: the
    # parsers promise memory bounded by a small multiple of the input.
    "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$crashes/" $extra \
        "$corpus" $seeds > "$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    found=$(ls "$crashes" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' || true)
    if [ $rc -ne 0 ] || [ -n "$found" ]; then
        result=FAILED
        failed="$failed $t"
        {
            echo "# replay with:"
            for f in $found; do echo "$bin $crashes/$f"; done
        } > "$crashes/REPRODUCE"
        echo "fuzz: $t FAILED (exit $rc); last lines of $log:" >&2
        grep -E 'ERROR|invariant|SUMMARY|==[0-9]+==' "$log" | head -20 >&2
        echo "fuzz: replay with:" >&2
        for f in $found; do echo "    $bin $crashes/$f" >&2; done
    else
        result=ok
    fi
    printf '%-14s %8s %10s %8s %8s %s\n' "$t" "$SECS" "${execs:-?}" "${eps:-?}" \
        "${cov:-?}" "$result" >> "$summary"
done
cat "$summary"
if [ -n "$failed" ]; then
    echo "fuzz: findings in:$failed (see $BUILD/crashes/*/REPRODUCE)" >&2
    exit 1
fi
echo "fuzz: all targets ran ${SECS}s without a finding"

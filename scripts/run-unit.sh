#!/bin/sh
# run-unit.sh BIN... - run each cmocka test binary and summarise.
#
# A binary passes only when it exits 0: cmocka exits with the number of
# failed tests, and a crash (signal) shows as a status above 128. Every
# binary runs even after a failure, so one report lists all broken ones.
set -u

if [ $# -eq 0 ]; then
    echo "usage: $0 TEST_BINARY..." >&2
    exit 2
fi

passed=0
failed=0
failed_names=
for bin in "$@"; do
    echo "==> $bin"
    if [ ! -x "$bin" ]; then
        echo "unit: $bin: not found or not executable" >&2
        status=127
    else
        "$bin"
        status=$?
    fi
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failed_names="$failed_names $(basename "$bin")"
        if [ ! -x "$bin" ]; then
            : # already reported
        elif [ "$status" -gt 128 ]; then
            echo "unit: $bin crashed (signal $((status - 128)))" >&2
        else
            echo "unit: $bin failed (exit status $status)" >&2
        fi
    fi
done

echo "unit: $passed binaries passed, $failed failed"
if [ "$failed" -ne 0 ]; then
    echo "unit: failed:$failed_names" >&2
    exit 1
fi
exit 0

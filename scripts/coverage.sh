#!/bin/sh
# coverage.sh - line and branch coverage of the unit, integration and
# command-line suites (make coverage).
#
# Builds everything with gcov instrumentation in its own tree
# (build/coverage, -O0 so lines and branches map to the source), clears
# old counters, runs the three suites (a failing suite fails this script),
# then summarises with lcov and writes an HTML report with genhtml:
#
#   build/coverage/coverage.info   lcov tracefile (nn/ image/ pipeline/ server/ tools/)
#   build/coverage/html/index.html the report
#
# and prints line and branch coverage per directory. Each directory has a
# floor (FLOORS below, percent, lines then branches); coverage under a
# floor fails the script, so coverage that tests lose is noticed.
#
#   scripts/coverage.sh [--report-only]
set -eu

cd "$(dirname "$0")/.."
BUILD=build/coverage
OUT=$BUILD

# ---- floors: directory, minimum line %, minimum branch % ------------------
# Set just under what the suites reach, so a test that stops reaching its
# code is noticed. Machines differ a little (nn/gemm.c runs the AVX-512
# kernels only where the CPU has them), hence the small margin.
# tools/ sits lower since its option parsing (well covered) moved to cli/
# and mnist-eval gained the OOD fitting and report, whose long runs over
# the full training set the suites only exercise on small sets.
FLOORS="nn 90 76
image 90 80
pipeline 90 80
cli 94 90
server 90 80
tools 75 55"
# ---------------------------------------------------------------------------

MAKE=${MAKE:-make}
RC="--rc lcov_branch_coverage=1"

# --report-only: summarise the counters already in build/coverage (e.g.
# after running one suite by hand with the same make variables).
if [ "${1:-}" != --report-only ]; then
    # The counters of earlier runs would add up: start from zero.
    if [ -d "$BUILD/obj" ]; then
        find "$BUILD/obj" -name '*.gcda' -delete
    fi
    # -O0: the optimiser merges and removes lines and branches, which makes
    # the figures say less about the source. SAN is the Makefile's hook for
    # flags that go to both the compiler and the linker.
    $MAKE --no-print-directory BUILD=$BUILD OPT=-O0 SAN=--coverage all test-bins
    status=0
    $MAKE --no-print-directory BUILD=$BUILD OPT=-O0 SAN=--coverage unit integration cli || status=$?
    if [ "$status" -ne 0 ]; then
        echo "coverage: a test suite failed (status $status); no figures" >&2
        exit 1
    fi
fi

# Debian's lcov 1.16 geninfo prints "Subroutine ... redefined" perl
# warnings on every run; they say nothing about the data, so they are
# dropped and everything else it says is kept.
lcov $RC --quiet --capture --directory "$BUILD/obj" --base-directory . \
    --output-file "$OUT/all.info" 2> "$OUT/lcov.err" || { cat "$OUT/lcov.err" >&2; exit 1; }
grep -v '^Subroutine .* redefined at ' "$OUT/lcov.err" >&2 || true
lcov $RC --quiet --extract "$OUT/all.info" "$PWD/nn/*" "$PWD/image/*" "$PWD/pipeline/*" "$PWD/cli/*" "$PWD/server/*" \
    "$PWD/tools/*" --output-file "$OUT/coverage.info"
# The AMX code (nn/amx.c) runs only where the CPU has AMX-BF16: elsewhere
# its tests skip and the file is left out of the figures, as it says.
if ! NN_PRECISION=bf16 "$BUILD/mnist-eval" --list-kernels > /dev/null 2>&1; then
    lcov $RC --quiet --remove "$OUT/coverage.info" "$PWD/nn/amx.c" --output-file "$OUT/coverage.tmp"
    mv "$OUT/coverage.tmp" "$OUT/coverage.info"
    echo "coverage: nn/amx.c left out (this CPU has no AMX-BF16: its code cannot run here)"
fi
rm -rf "$OUT/html"
genhtml $RC --quiet --branch-coverage --legend --title "mnist-c coverage" \
    --prefix "$PWD" --output-directory "$OUT/html" "$OUT/coverage.info"

# Per directory: lines hit/found and branches hit/found, from the
# tracefile's LH/LF/BRH/BRF records.
summary() { # DIR
    awk -v dir="$PWD/$1/" '
        /^SF:/ { mine = index(substr($0, 4), dir) == 1 }
        mine && /^LH:/ { lh += substr($0, 4) }
        mine && /^LF:/ { lf += substr($0, 4) }
        mine && /^BRH:/ { bh += substr($0, 5) }
        mine && /^BRF:/ { bf += substr($0, 5) }
        END { printf "%d %d %d %d\n", lh, lf, bh, bf }' "$OUT/coverage.info"
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "100.0"; else printf "%.1f\n", 100 * a / b }'; }
below() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }

echo
printf '%-8s %22s %24s   %s\n' dir lines branches "floors (lines/branches)"
rm -f "$OUT/below"
echo "$FLOORS" | while read -r dir lfloor bfloor; do
    set -- $(summary "$dir")
    lp=$(pct "$1" "$2")
    bp=$(pct "$3" "$4")
    verdict=ok
    if below "$lp" "$lfloor" || below "$bp" "$bfloor"; then verdict=BELOW; fi
    printf '%-8s %6s%% (%5d/%5d) %7s%% (%5d/%5d)   %s%%/%s%% %s\n' \
        "$dir/" "$lp" "$1" "$2" "$bp" "$3" "$4" "$lfloor" "$bfloor" "$verdict"
    [ "$verdict" = ok ] || echo "$dir" >> "$OUT/below"
done
echo "coverage: report in $OUT/html/index.html"
if [ -s "$OUT/below" ]; then
    echo "coverage: under the floor: $(tr '\n' ' ' < "$OUT/below")" >&2
    rm -f "$OUT/below"
    exit 1
fi
exit 0

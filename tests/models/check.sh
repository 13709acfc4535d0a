#!/bin/sh
# Checks every shipped model against its model card: the test-set accuracy
# that build/mnist-eval measures now must match the card's figure (within
# 0.0003, i.e. 3 of 10,000 images, for floating-point differences between
# CPUs) and reach the card's stated minimum.
#
# The card (models/README.md) has a summary table whose rows look like
#   | MLP | `mlp.safetensors` | 101,770 | 0.9821 | 0.9784 |
# columns: name, file (a weights file or a NAME.ensemble list), parameters,
# test accuracy, minimum. Usage: tests/models/check.sh BUILD_DIR
set -eu
BUILD=${1:-build}
CARD=models/README.md
[ -f "$CARD" ] || { echo "models: $CARD missing"; exit 1; }
TMPF=$(mktemp)
trap 'rm -f "$TMPF"' EXIT
# shellcheck disable=SC2016
rows=$(grep -E '^\| [^|]+ \| `[^`]+\.(safetensors|ensemble)`' "$CARD" || true)
[ -n "$rows" ] || { echo "models: no model rows in $CARD"; exit 1; }
echo "$rows" | while IFS='|' read -r _ name file _params acc minimum _rest; do
    file=$(echo "$file" | tr -d ' `')
    acc=$(echo "$acc" | tr -d ' ')
    minimum=$(echo "$minimum" | tr -d ' ')
    name=$(echo "$name" | sed 's/^ *//;s/ *$//')
    # mnist-eval reads .ensemble lists itself and picks the test set by
    # the model's dataset (MNIST or Fashion-MNIST).
    got=$("$BUILD/mnist-eval" --json "models/$file" | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p')
    if [ -z "$got" ]; then
        echo "not ok - $name ($file): mnist-eval gave no accuracy"
        echo FAIL >> "$TMPF"
        continue
    fi
    verdict=$(awk -v g="$got" -v c="$acc" -v m="$minimum" 'BEGIN {
        d = g - c; if (d < 0) d = -d;
        if (d > 0.0003) print "differs from the card";
        else if (g + 1e-9 < m) print "below the minimum";
        else print "ok" }')
    if [ "$verdict" = ok ]; then
        echo "ok - $name ($file): accuracy $got (card $acc, minimum $minimum)"
        echo PASS >> "$TMPF"
    else
        echo "not ok - $name ($file): accuracy $got $verdict (card $acc, minimum $minimum)"
        echo FAIL >> "$TMPF"
    fi
done
pass=$(grep -c PASS "$TMPF" || true)
fail=$(grep -c FAIL "$TMPF" || true)
echo "models: $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]

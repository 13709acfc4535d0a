#!/bin/sh
# Checks every shipped model against its model card: the test-set accuracy
# that build/mnist-eval measures now must match the card's figure to the
# image and reach the card's stated minimum.
#
# "To the image", with one allowance that is a property of the arithmetic:
# kernel paths (NN_ISA) add the same products in different orders, with or
# without fused multiply-add, which moves a probability by far less than
# 1e-4 on these models. An image whose two top probabilities are closer
# than that (mnist-eval's "borderline" count) could go either way, so the
# error count may differ from the card's by at most that many images. For
# the shipped models the count is 0 or close to it: in effect, exact.
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
    out=$("$BUILD/mnist-eval" --json "models/$file" || true)
    got=$(echo "$out" | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p')
    n=$(echo "$out" | sed -n 's/.*"n":\([0-9]*\).*/\1/p')
    errors=$(echo "$out" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')
    border=$(echo "$out" | sed -n 's/.*"borderline":\([0-9]*\).*/\1/p')
    kern=$(echo "$out" | sed -n 's/.*"kernels":"\([^"]*\)".*/\1/p')
    if [ -z "$got" ] || [ -z "$n" ] || [ -z "$errors" ] || [ -z "$border" ]; then
        echo "not ok - $name ($file): mnist-eval gave no accuracy"
        echo FAIL >> "$TMPF"
        continue
    fi
    verdict=$(awk -v g="$got" -v c="$acc" -v m="$minimum" -v n="$n" -v e="$errors" -v b="$border" 'BEGIN {
        want = int((1 - c) * n + 0.5); d = e - want; if (d < 0) d = -d;
        if (d > b) printf "differs from the card by %d images (%d borderline)", d, b;
        else if (g + 1e-9 < m) print "below the minimum";
        else print "ok" }')
    if [ "$verdict" = ok ]; then
        echo "ok - $name ($file, $kern): accuracy $got, $errors errors, $border borderline (card $acc, minimum $minimum)"
        echo PASS >> "$TMPF"
    else
        echo "not ok - $name ($file, $kern): accuracy $got $verdict (card $acc, minimum $minimum)"
        echo FAIL >> "$TMPF"
    fi
done
pass=$(grep -c PASS "$TMPF" || true)
fail=$(grep -c FAIL "$TMPF" || true)
echo "models: $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]

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
#   | MLP | `mlp.safetensors` | 101,770 | 0.9821 | 0.9784 | 0.45% | - |
# columns: name, file (a weights file or a NAME.ensemble list), parameters,
# test accuracy, minimum, expected calibration error (ECE), test accuracy
# in bf16 on AMX.
#
# The ECE must match the card's figure to its last digit (half of 0.01%)
# plus what a kernel path could move: a confidence moves by less than 1e-4
# (the margin above), which changes the ECE by at most that much, plus
# 2/n for each image within 1e-4 of a bin edge (it may change bins) and
# 1/n for each borderline image (its answer may flip); mnist-eval --json
# counts both ("ece_edge", "borderline"). See nn_ece_edge in nn/eval.h.
#
# Out-of-distribution figures: every row of the card's table
#   | `cnn.safetensors` | raw IDX images | Mahalanobis | 0.9934 | 0.61% | 94.31% | 0.40% |
# (file, input path, method, AUROC, share of Fashion-MNIST passing at the
# score 95% of MNIST test digits do not exceed, and at the stored
# threshold the shares of MNIST and of Fashion-MNIST passing; empty cells
# state nothing) is re-measured with mnist-eval --ood $OOD_DATA. Each must
# match to half the card's last digit plus the room mnist-eval counts for
# that figure: images within a score's rounding margin of the cut (1/n
# each) or, for AUROC, the (digit, item) pairs whose order rounding could
# swap (1/(n_in n_out) each). models/README.md explains the margin.
#
# With NN_PRECISION=bf16 (AMX machines; see nn/amx.h) the accuracy is
# checked against the card's "bf16 on AMX" column instead, to the image as
# above ("-": no convolution chain, the model runs in fp32: the test
# accuracy column), and the page's digits: bf16 moves probabilities by
# far more than 1e-4, so the card's ECE and out-of-distribution figures,
# measured in fp32, are not re-measured.
#
# Usage: tests/models/check.sh BUILD_DIR
set -eu
BF16=0
[ "${NN_PRECISION:-}" = bf16 ] && BF16=1
BUILD=${1:-build}
OOD_DATA=${OOD_DATA:-/usr/share/datasets/fashion-mnist}
CARD=models/README.md
[ -f "$CARD" ] || { echo "models: $CARD missing"; exit 1; }
TMPF=$(mktemp)
trap 'rm -f "$TMPF" "$TMPF.o"' EXIT
# shellcheck disable=SC2016
rows=$(grep -E '^\| [^|]+ \| `[^`]+\.(safetensors|ensemble)`' "$CARD" || true)
[ -n "$rows" ] || { echo "models: no model rows in $CARD"; exit 1; }
echo "$rows" | while IFS='|' read -r _ name file _params acc minimum ece bf16 _rest; do
    file=$(echo "$file" | tr -d ' `')
    acc=$(echo "$acc" | tr -d ' ')
    bf16=$(echo "$bf16" | tr -d ' ')
    if [ "$BF16" = 1 ]; then
        case $bf16 in
        -) ;;
        0.[0-9]*) acc=$bf16 ;;
        *) echo "not ok - $name ($file): no \"bf16 on AMX\" figure in the card"
           echo FAIL >> "$TMPF"
           continue ;;
        esac
    fi
    minimum=$(echo "$minimum" | tr -d ' ')
    ece=$(echo "$ece" | tr -d ' %')
    name=$(echo "$name" | sed 's/^ *//;s/ *$//')
    # mnist-eval reads .ensemble lists itself and picks the test set by
    # the model's dataset (MNIST or Fashion-MNIST).
    out=$("$BUILD/mnist-eval" --json "models/$file" || true)
    got=$(echo "$out" | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p')
    n=$(echo "$out" | sed -n 's/.*"n":\([0-9]*\).*/\1/p')
    errors=$(echo "$out" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')
    border=$(echo "$out" | sed -n 's/.*"borderline":\([0-9]*\).*/\1/p')
    kern=$(echo "$out" | sed -n 's/.*"kernels":"\([^"]*\)".*/\1/p')
    [ "$BF16" = 0 ] || kern="$kern, $(echo "$out" | sed -n 's/.*"precision":"\([^"]*\)".*/\1/p')"
    gece=$(echo "$out" | sed -n 's/.*"ece":\([-0-9.e]*\).*/\1/p')
    edge=$(echo "$out" | sed -n 's/.*"ece_edge":\([0-9]*\).*/\1/p')
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
    if [ -z "$ece" ] || [ "$BF16" = 1 ]; then continue; fi
    if [ -z "$gece" ] || [ -z "$edge" ]; then
        echo "not ok - $name ($file): mnist-eval gave no ECE"
        echo FAIL >> "$TMPF"
        continue
    fi
    # shellcheck disable=SC2016
    verdict=$(awk -v g="$gece" -v c="$ece" -v n="$n" -v e="$edge" -v b="$border" 'BEGIN {
        room = 0.00005 + 1e-4 + (2 * e + b) / n; d = g - c / 100; if (d < 0) d = -d;
        if (c !~ /^[0-9]+(\.[0-9]+)?$/) print "unreadable in the card";
        else if (d > room) printf "differs from the card by %.4f%% (room %.4f%%)", 100 * d, 100 * room;
        else print "ok" }')
    if [ "$verdict" = ok ]; then
        printf 'ok - %s (%s, %s): ECE %.4f%%, %d near a bin edge (card %s%%)\n' "$name" "$file" \
            "$kern" "$(awk -v g="$gece" 'BEGIN { print 100 * g }')" "$edge" "$ece"
        echo PASS >> "$TMPF"
    else
        echo "not ok - $name ($file, $kern): ECE $gece $verdict (card $ece%)"
        echo FAIL >> "$TMPF"
    fi
done

# Out-of-distribution figures, one mnist-eval --ood run per file.
# shellcheck disable=SC2016
orows=$(grep -E '^\| `[^`]+\.(safetensors|ensemble)` \| (raw|uploaded)' "$CARD" || true)
if [ -n "$orows" ] && [ "$BF16" = 0 ]; then
    for file in $(echo "$orows" | cut -d'|' -f2 | tr -d ' `' | sort -u); do
        if [ ! -d "$OOD_DATA" ]; then
            echo "not ok - OOD figures of $file: $OOD_DATA missing (scripts/deps.sh test installs it)"
            echo FAIL >> "$TMPF"
            continue
        fi
        out=$("$BUILD/mnist-eval" --json --ood "$OOD_DATA" "models/$file" || true)
        echo "$orows" | grep -F "| \`$file\` |" |
            python3 tests/models/ood_rows.py "$file" "$out" >> "$TMPF.o" || true
    done
    if [ -f "$TMPF.o" ]; then
        cat "$TMPF.o"
        sed -n 's/^ok - .*/PASS/p; s/^not ok - .*/FAIL/p' "$TMPF.o" >> "$TMPF"
    fi
fi
# The drawing page's own digits (three pens, three hands: 90 PNGs) are
# read right and found digit-like by the default model, the one the page
# and mnist-predict use: a model that refuses a plainly drawn 1 is not a
# default, whatever its figures.
if command -v node > /dev/null; then
    pages=$(mktemp -d)
    node tests/models/page-digits.mjs "$pages"
    out=$("$BUILD/mnist-predict" "$pages"/*.png || true)
    total=$(echo "$out" | grep -c '"prediction"' || true)
    bad=$(for f in "$pages"/*.png; do
        d=$(basename "$f" | cut -c1)
        echo "$out" | grep -F "\"file\":\"$f\"" |
            grep -q "\"prediction\":$d,.*\"in_distribution\":true" || basename "$f" .png
    done | tr '\n' ' ')
    rm -rf "$pages"
    if [ "$total" -eq 90 ] && [ -z "$bad" ]; then
        echo "ok - the default model reads and passes the page's 90 drawn digits"
        echo PASS >> "$TMPF"
    else
        echo "not ok - the default model reads and passes the page's 90 drawn digits ($total answered; wrong or refused: $bad)"
        echo FAIL >> "$TMPF"
    fi
else
    echo "not ok - the page's drawn digits: node missing (make deps-test installs it)"
    echo FAIL >> "$TMPF"
fi
pass=$(grep -c PASS "$TMPF" || true)
fail=$(grep -c FAIL "$TMPF" || true)
echo "models: $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]

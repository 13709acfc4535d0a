#!/bin/sh
# Prints the robustness table of the model cards: test accuracy of each
# model on the MNIST test set moved by a fixed transform (build/mnist-eval
# --shift/--rotate/--scale; the same transform for every image).
#   scripts/robustness.sh BUILD_DIR MODEL...
set -eu
BUILD=${1:?usage: robustness.sh BUILD_DIR MODEL...}
shift
acc() {
    # shellcheck disable=SC2068
    "$BUILD/mnist-eval" --json $@ | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p' |
        awk '{ printf "%.2f%%", 100 * $1 }'
}
echo "| Model | none | shift (+3,+3) px | shift (-3,-3) px | rotate +15° | rotate -15° | scale 0.8 | scale 1.2 |"
echo "|---|---|---|---|---|---|---|---|"
for m in "$@"; do
    name=$(basename "$m" .safetensors)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
        "$(acc "$m")" "$(acc --shift 3,3 "$m")" "$(acc --shift -3,-3 "$m")" \
        "$(acc --rotate 15 "$m")" "$(acc --rotate -15 "$m")" \
        "$(acc --scale 0.8 "$m")" "$(acc --scale 1.2 "$m")"
done

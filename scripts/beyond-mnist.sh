#!/bin/sh
# Prints the "Beyond MNIST scans" tables of the model cards (make robustness):
#   1. accuracy of each MODEL on MNIST's test digits uploaded as inverted,
#      coloured and alpha PNGs, on printed digits from the eval and train
#      fonts (raw IDX images, and uploaded), and on digits drawn with the
#      page's pen (uploaded);
#   2. for OOD_MODEL (one carrying out-of-distribution statistics), the
#      share of each set its Mahalanobis score marks in distribution at the
#      shipped threshold, raw and uploaded, with the AUROC against MNIST's
#      test digits.
# "Uploaded" = build/mnist-eval --upload: a PNG through the serving
# pipeline (decode, preprocessing, forward), as a client's upload.
#
#   scripts/beyond-mnist.sh BUILD_DIR OOD_MODEL MODEL...
#
# Needs data/mnist (make data), data/glyphs (make glyphs) and
# data/glyphs/pen-digits (node scripts/pen-digits.mjs data/glyphs/pen-digits).
set -eu
BUILD=${1:?usage: beyond-mnist.sh BUILD_DIR OOD_MODEL MODEL...}
OOD_MODEL=${2:?usage: beyond-mnist.sh BUILD_DIR OOD_MODEL MODEL...}
shift 2
G=data/glyphs
for set in digits-eval digits-train letters-eval letters-train pen-digits; do
    if [ ! -f "$G/$set-images-idx3-ubyte" ]; then
        echo "beyond-mnist: $G/$set-images-idx3-ubyte missing (make glyphs; node scripts/pen-digits.mjs $G/pen-digits)" >&2
        exit 1
    fi
done
PY=/usr/bin/python3
command -v "$PY" > /dev/null || PY=python3

acc() {
    # shellcheck disable=SC2068
    "$BUILD/mnist-eval" --json $@ | sed -n 's/.*"accuracy":\([0-9.e-]*\).*/\1/p' |
        awk '{ printf "%.2f%%", 100 * $1 }'
}
echo "| Model | MNIST test | as inverted PNG | as coloured PNG | as alpha PNG | font digits, eval fonts | uploaded | font digits, train fonts | uploaded | pen digits, uploaded |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for m in "$@"; do
    name=$(basename "$m")
    name=${name%.safetensors}
    name=${name%.ensemble}
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
        "$(acc "$m")" "$(acc --upload inverted "$m")" "$(acc --upload colour "$m")" \
        "$(acc --upload alpha "$m")" \
        "$(acc --data $G/digits-eval "$m")" "$(acc --upload gray --data $G/digits-eval "$m")" \
        "$(acc --data $G/digits-train "$m")" "$(acc --upload gray --data $G/digits-train "$m")" \
        "$(acc --upload gray --data $G/pen-digits "$m")"
done

echo
echo "| Set ($(basename "$OOD_MODEL")) | Images | In distribution, raw | In distribution, uploaded | AUROC vs MNIST test, raw | AUROC vs MNIST test, uploaded |"
echo "|---|---|---|---|---|---|"
first=1
for set in digits-eval digits-train letters-eval letters-train pen-digits; do
    "$BUILD/mnist-eval" --json --ood "$G/$set" "$OOD_MODEL" > "${TMPDIR:-/tmp}/beyond-mnist.$$.json"
    "$PY" - "${TMPDIR:-/tmp}/beyond-mnist.$$.json" "$set" "$first" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
name, first = sys.argv[2], sys.argv[3] == "1"
name = {"digits-eval": "font digits, eval fonts", "digits-train": "font digits, train fonts",
        "letters-eval": "letters, eval fonts", "letters-train": "letters, train fonts",
        "pen-digits": "pen digits"}.get(name, name)
if d["ood_method"] is None:
    sys.exit("beyond-mnist: the model carries no out-of-distribution statistics")
pct = lambda v: "%.2f%%" % (100 * v)
raw, up = d["raw"], d["prepared"]
if first:
    print("| MNIST test digits | %d | %s | %s | | |" % (up["in_n"], pct(raw["stored"]["in_pass"]),
                                                    pct(up["stored"]["in_pass"])))
n = up["out_n"] + up["out_blank"]
cells = [name, str(n)]
cells.append(pct(raw["stored"]["out_pass"]) if raw else "(not 28x28: uploads only)")
# A blank image is refused, never marked in distribution.
cells.append(pct(up["stored"]["out_pass"] * up["out_n"] / n))
cells.append("%.4f" % raw["stored"]["auroc"] if raw else "")
cells.append("%.4f" % up["stored"]["auroc"])
print("| " + " | ".join(cells) + " |")
PYEOF
    first=0
done
rm -f "${TMPDIR:-/tmp}/beyond-mnist.$$.json"

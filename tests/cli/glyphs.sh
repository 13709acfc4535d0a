#!/usr/bin/env bash
# Command-line tests of mnist-glyphs (printed characters from Debian
# fonts as IDX files): a small subset of the fonts is rendered twice and
# must give the same bytes, well-formed IDX headers and the expected
# labels; bad input gives one line on stderr; the default model reads the
# rendered digits. Then scripts/pen-digits.mjs: digits drawn with the
# drawing page's pen, read through the upload path.
#
#   tests/cli/glyphs.sh BUILD_DIR      (BUILD_DIR: build or build/asan)
#
# Needs the fonts of tools/glyph-fonts.txt (scripts/deps.sh test installs
# them). Output is TAP-like, closed by "cli-glyphs: N passed, M failed";
# the exit status is non-zero on any failure.
set -uo pipefail

# shellcheck source=tests/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"
GLYPHS=$build/mnist-glyphs
PY=/usr/bin/python3
command -v "$PY" >/dev/null || PY=python3

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnist-glyphs.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/cli/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


# check_idx PREFIX COUNT NCLASSES: IDX headers (magic, count, 28x28), the
# file lengths, and labels that run 0..NCLASSES-1 in order, the same
# number of times each.
check_idx() {
    "$PY" - "$@" <<'PYEOF'
import struct, sys
prefix, count, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
im = open(prefix + "-images-idx3-ubyte", "rb").read()
lb = open(prefix + "-labels-idx1-ubyte", "rb").read()
assert struct.unpack(">IIII", im[:16]) == (0x803, count, 28, 28), im[:16]
assert struct.unpack(">II", lb[:8]) == (0x801, count), lb[:8]
assert len(im) == 16 + 784 * count and len(lb) == 8 + count, (len(im), len(lb))
assert list(lb[8:]) == list(range(k)) * (count // k), "labels out of order"
# Every image has ink, none is all ink, and the ink is centred as MNIST's.
for i in range(count):
    px = im[16 + 784 * i:16 + 784 * (i + 1)]
    s = sum(px)
    assert 0 < s < 255 * 784 and max(px) == 255, "image %d: no ink or no background" % i
    cy = sum(v * (j // 28) for j, v in enumerate(px)) / s
    cx = sum(v * (j % 28) for j, v in enumerate(px)) / s
    assert abs(cx - 14) <= 1 and abs(cy - 14) <= 1, "image %d: centre of mass %.1f,%.1f" % (i, cx, cy)
PYEOF
}

# ---------------------------------------------------------------- bad input
expect 2 '^mnist-glyphs: --chars wants digits or letters$' "glyphs: no --chars" -- "$GLYPHS" --set eval --out "$tmp"
expect 2 '^mnist-glyphs: --chars wants digits or letters$' "glyphs: --chars symbols" -- "$GLYPHS" --chars symbols --set eval --out "$tmp"
expect 2 '^mnist-glyphs: --set wants train or eval$' "glyphs: --set test" -- "$GLYPHS" --chars digits --set test --out "$tmp"
expect 2 '^mnist-glyphs: --out DIR is required$' "glyphs: no --out" -- "$GLYPHS" --chars digits --set eval
expect 2 "^mnist-glyphs: --max-fonts wants an integer from 0 to 100000, got '-1'$" "glyphs: --max-fonts -1" -- \
    "$GLYPHS" --chars digits --set eval --out "$tmp" --max-fonts -1
expect 2 'unexpected argument' "glyphs: a stray operand" -- "$GLYPHS" --chars digits --set eval --out "$tmp" extra
expect 1 'nofile.txt: No such file' "glyphs: missing font list" -- \
    "$GLYPHS" --chars digits --set eval --out "$tmp" --fonts "$tmp/nofile.txt"
printf 'eval serif fonts-none-such /usr/share/fonts/none/NoSuch.ttf\n' > "$tmp/missing.txt"
expect 1 '^mnist-glyphs: /usr/share/fonts/none/NoSuch.ttf: .*install the Debian package fonts-none-such\)$' \
    "glyphs: a missing font names its Debian package" -- \
    "$GLYPHS" --chars digits --set eval --out "$tmp" --fonts "$tmp/missing.txt"
printf '# comment\n\neval serif\n' > "$tmp/short.txt"
expect 1 'short.txt:3: want SET STYLE PACKAGE FILE' "glyphs: a short list line" -- \
    "$GLYPHS" --chars digits --set eval --out "$tmp" --fonts "$tmp/short.txt"
printf 'test serif fonts-x /x.ttf\n' > "$tmp/badset.txt"
expect 1 "badset.txt:1: set 'test' is neither train nor eval" "glyphs: a list line of an unknown set" -- \
    "$GLYPHS" --chars digits --set eval --out "$tmp" --fonts "$tmp/badset.txt"
expect 1 "no font in set 'train'" "glyphs: a set without fonts" -- \
    "$GLYPHS" --chars digits --set train --out "$tmp" --fonts "$tmp/missing.txt"
printf 'eval serif fonts-x /etc/hostname\n' > "$tmp/notfont.txt"
expect 1 '/etc/hostname: FreeType cannot read this font' "glyphs: a file that is not a font" -- \
    "$GLYPHS" --chars digits --set eval --out "$tmp" --fonts "$tmp/notfont.txt"
expect 2 "^mnist-glyphs: --except: '1' is not one of the letters$" "glyphs: --except names a digit among letters" -- \
    "$GLYPHS" --chars letters --set eval --except I1 --out "$tmp"
expect 2 '^mnist-glyphs: --except leaves no character to draw$' "glyphs: --except every digit" -- \
    "$GLYPHS" --chars digits --set eval --except 9876543210 --out "$tmp"
expect 1 "$tmp/nodir/digits-eval-images-idx3-ubyte.tmp: No such file" "glyphs: an output directory that is not there" -- \
    "$GLYPHS" --chars digits --set eval --out "$tmp/nodir" --max-fonts 1

# ---------------------------------------------------------------- output
# Two eval fonts (a serif and a handwriting-like one are enough to show
# the shapes differ) and one train font; letters from one font.
grep -E '^(eval +serif .*NimbusRoman|eval +hand .*Z003|train +sans .*DejaVuSans.ttf)' \
    tools/glyph-fonts.txt > "$tmp/fonts.txt"
mkdir -p "$tmp/a" "$tmp/b"
run_ok=1
for d in a b; do
    for cs in "digits eval" "digits train" "letters eval"; do
        set -- $cs
        "$GLYPHS" --fonts "$tmp/fonts.txt" --chars "$1" --set "$2" --out "$tmp/$d" --max-fonts 2 \
            > "$tmp/$d/$1-$2.out" 2> "$tmp/$d.err" || run_ok=0
    done
done
if [ $run_ok -eq 1 ] && grep -qx "$tmp/a/digits-eval: 120 images (2 fonts x 2 sizes x 3 stroke widths x 10 characters)" \
        "$tmp/a/digits-eval.out"; then
    ok "glyphs: renders 2 fonts x 2 sizes x 3 stroke widths x 10 digits"
else
    not_ok "glyphs: renders the subset" "$(cat "$tmp/a/digits-eval.out" 2> /dev/null)" "$(head -c 400 "$tmp/a.err" "$tmp/b.err")"
fi
same=1
for f in digits-eval digits-train letters-eval; do
    for t in images-idx3 labels-idx1; do
        cmp -s "$tmp/a/$f-$t-ubyte" "$tmp/b/$f-$t-ubyte" || same=0
    done
done
if [ $same -eq 1 ]; then ok "glyphs: two runs write the same bytes"; else not_ok "glyphs: two runs write the same bytes"; fi
if check_idx "$tmp/a/digits-eval" 120 10 2> "$tmp/idx.err"; then
    ok "glyphs: digits: IDX headers, 28x28, labels 0..9 in order, ink centred by mass"
else
    not_ok "glyphs: digits IDX" "$(tail -c 300 "$tmp/idx.err")"
fi
if check_idx "$tmp/a/digits-train" 60 10 2> "$tmp/idx.err"; then
    ok "glyphs: --set train takes the train fonts only (1 font here)"
else
    not_ok "glyphs: train set" "$(tail -c 300 "$tmp/idx.err")"
fi
if check_idx "$tmp/a/letters-eval" 624 52 2> "$tmp/idx.err"; then
    ok "glyphs: letters: 52 labels (A-Z a-z) x 2 fonts x 6 variants"
else
    not_ok "glyphs: letters IDX" "$(tail -c 300 "$tmp/idx.err")"
fi
# --except: the same images with those characters left out, labels kept.
mkdir -p "$tmp/x"
if "$GLYPHS" --fonts "$tmp/fonts.txt" --chars letters --set eval --except IOlo --out "$tmp/x" \
        --max-fonts 2 > "$tmp/x.out" 2> "$tmp/x.err" &&
    "$PY" - "$tmp/a/letters-eval" "$tmp/x/letters-eval" 2>> "$tmp/x.err" <<'PYEOF'
import sys
def load(prefix):
    im = open(prefix + "-images-idx3-ubyte", "rb").read()[16:]
    lb = open(prefix + "-labels-idx1-ubyte", "rb").read()[8:]
    return [(lb[i], im[784 * i:784 * (i + 1)]) for i in range(len(lb))]
full, some = load(sys.argv[1]), load(sys.argv[2])
left_out = {8, 14, 37, 40}  # I O l o
assert len(some) == 576, len(some)
assert some == [x for x in full if x[0] not in left_out], "not the full set less I, O, l and o"
PYEOF
then
    ok "glyphs: --except IOlo: the full set's images less I, O, l and o, labels kept (576)"
else
    not_ok "glyphs: --except IOlo" "$(cat "$tmp/x.out")" "$(tail -c 300 "$tmp/x.err")"
fi
if ! cmp -s <(head -c 10000 "$tmp/a/digits-eval-images-idx3-ubyte") \
        <(head -c 10000 "$tmp/a/digits-train-images-idx3-ubyte"); then
    ok "glyphs: the train and eval fonts draw different images"
else
    not_ok "glyphs: the train and eval fonts draw different images"
fi

# ---------------------------------------------------------------- the default model
# The two eval fonts' 120 digits, read through mnist-eval --data PREFIX. Both
# fonts read 100% with the shipped CNN; chance is 10%, and a renderer that
# got the polarity, the framing or the label order wrong falls far below
# the floor of 90%, which leaves room for retrained models.
EVAL=$build/mnist-eval
MODEL=models/cnn.safetensors
if "$EVAL" --json --data "$tmp/a/digits-eval" "$MODEL" > "$tmp/eval.json" 2> "$tmp/eval.err" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1]))
sys.exit(0 if d["n"] == 120 and d["data"].endswith("/a/digits-eval") and d["accuracy"] >= 0.9 else 1)' "$tmp/eval.json"; then
    ok "glyphs: the default model reads the rendered digits (at least 90%: $(grep -o '"accuracy":[0-9.]*' "$tmp/eval.json"))"
else
    not_ok "glyphs: the default model reads the rendered digits" "$(head -c 300 "$tmp/eval.json")" "$(head -c 300 "$tmp/eval.err")"
fi
# The letters as an out-of-distribution set (mnist-eval --ood PREFIX): the
# first font's 312 scored, raw and prepared, against as many MNIST digits.
if "$EVAL" --json --ood "$tmp/a/letters-eval" --limit 312 "$MODEL" > "$tmp/ood.json" 2> "$tmp/ood.err" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); r, p = d["raw"], d["prepared"]
sys.exit(0 if r["out_n"] == 312 and p["out_n"] + p["out_blank"] == 312 and 0 <= r["msp"]["auroc"] <= 1 else 1)' "$tmp/ood.json"; then
    ok "glyphs: mnist-eval --ood scores the rendered letters"
else
    not_ok "glyphs: mnist-eval --ood scores the rendered letters" "$(head -c 300 "$tmp/ood.json")" "$(head -c 300 "$tmp/ood.err")"
fi

# ---------------------------------------------------------------- the page's pen
# scripts/pen-digits.mjs: 900 digits drawn with the page's pen, 140x140 as
# the page sends them; the first 300 (the smaller size, every slant, pen
# width and wobble) read by the default model through the upload path (the
# same 90% floor as above).
if node scripts/pen-digits.mjs "$tmp/pen" > "$tmp/pen.out" 2> "$tmp/pen.err" &&
    "$PY" -c 'import struct,sys; p = sys.argv[1]
im, lb = open(p + "-images-idx3-ubyte", "rb").read(), open(p + "-labels-idx1-ubyte", "rb").read()
assert struct.unpack(">IIII", im[:16]) == (0x803, 900, 140, 140) and len(im) == 16 + 900 * 140 * 140
assert struct.unpack(">II", lb[:8]) == (0x801, 900) and list(lb[8:]) == list(range(10)) * 90
assert im[16] == 255 and min(im[16:16 + 19600]) == 0  # white paper, black ink' "$tmp/pen" &&
    "$EVAL" --json --upload gray --limit 300 --data "$tmp/pen" "$MODEL" > "$tmp/pen.json" 2> "$tmp/pen.err" &&
    "$PY" -c 'import json,sys; d = json.load(open(sys.argv[1]))
sys.exit(0 if d["n"] == 300 and d["refused"] == 0 and d["accuracy"] >= 0.9 else 1)' "$tmp/pen.json"; then
    ok "pen-digits: 900 pen-drawn 140x140 digits; 300 read through the upload path ($(grep -o '"accuracy":[0-9.]*' "$tmp/pen.json"))"
else
    not_ok "pen-digits" "$(cat "$tmp/pen.out")" "$(head -c 300 "$tmp/pen.err")" "$(head -c 300 "$tmp/pen.json" 2> /dev/null)"
fi
if node scripts/pen-digits.mjs > /dev/null 2> "$tmp/pen.err"; [ $? -eq 2 ] && grep -q '^usage: ' "$tmp/pen.err"; then
    ok "pen-digits: usage without OUT_PREFIX"
else
    not_ok "pen-digits: usage without OUT_PREFIX" "$(cat "$tmp/pen.err")"
fi

echo "cli-glyphs: $pass passed, $failed failed"
[ "$failed" -eq 0 ]

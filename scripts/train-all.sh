#!/bin/sh
# Retrains the shipped models from scratch with their recorded seeds and
# settings (the commands in models/README.md), writing into $MODELS_OUT
# (default models/). Runs are reproducible for the same seed and thread
# count (2 here): the same weights, bit for bit, on the same kind of CPU.
#
#   scripts/train-all.sh BUILD_DIR [MODEL...]
#   MODEL: mlp lenet cnn-s1 cnn cnn-s2 cnn-s3 cnn-pool-s4 cnn-dsk-s13 fashion-cnn
#          (default: all)
#
# cnn-s1 is the CNN recipe with seed 1 (with Mahalanobis statistics); cnn,
# the default, is cnn-s1 fine-tuned for one epoch with outlier exposure
# (build/mnist-outliers, letters from the training fonts of make glyphs)
# and an out-of-distribution head trained on its features: it needs cnn-s1
# first.
# cnn-s2 and cnn-s3 are the CNN recipe with seeds 2 and 3, cnn-pool-s4 the
# pooling CNN (architecture file models/members/cnn-pool.json),
# cnn-dsk-s13 the CNN recipe behind a deskew layer: the
# ensemble's other members (models/members/, listed by
# models/cnn-ensemble.ensemble).
# The CNNs take 30-60 minutes each on two cores; `make train MODELS="mlp lenet"`
# skips them.
set -eu
BUILD=${1:?usage: train-all.sh BUILD_DIR [MODEL...]}
shift
OUT=${MODELS_OUT:-models}
THREADS=${TRAIN_THREADS:-2}
TRAIN="$BUILD/mnist-train --threads $THREADS --quiet"
mkdir -p "$OUT" "$OUT/members"
MODELS=${*:-mlp lenet cnn-s1 cnn cnn-s2 cnn-s3 cnn-pool-s4 cnn-dsk-s13 fashion-cnn}

for m in $MODELS; do
    echo "== training $m"
    case $m in
    mlp)   $TRAIN --arch mlp --seed 1 --out "$OUT/mlp.safetensors" ;;
    lenet) $TRAIN --arch lenet --seed 1 --out "$OUT/lenet.safetensors" ;;
    cnn-s1)
           $TRAIN --arch cnn --seed 1 --epochs 18 --out "$OUT/members/cnn-s1.tmp.safetensors"
           "$BUILD/mnist-eval" --ood-fit "$OUT/members/cnn-s1.safetensors" \
               "$OUT/members/cnn-s1.tmp.safetensors"
           mv "$OUT/members/cnn-s1.tmp.safetensors.csv" "$OUT/members/cnn-s1.history.csv"
           rm "$OUT/members/cnn-s1.tmp.safetensors" ;;
    cnn)
           [ -f "$OUT/members/cnn-s1.safetensors" ] ||
               { echo "train-all: cnn is fine-tuned from cnn-s1: train that first" >&2; exit 2; }
           [ -f data/glyphs/letters-train-images-idx3-ubyte ] || make --no-print-directory glyphs
           tmp=${TMPDIR:-/tmp}/train-all.$$
           mkdir -p "$tmp"
           "$BUILD/mnist-outliers" --out "$tmp/outliers.idx" --n 60000 --seed 1 \
               --letters data/glyphs/letters-train-images-idx3-ubyte
           $TRAIN --arch cnn --init "$OUT/members/cnn-s1.safetensors" --outliers "$tmp/outliers.idx" \
               --oe-batch 16 --oe-weight 0.15 --epochs 1 --sched cosine --lr 5e-5 --warmup 0.1 \
               --seed 23 --name cnn --out "$tmp/cnn.safetensors"
           # The served score: a head trained on the fine-tuned net's
           # features, the printed digits of the train fonts and pen-drawn
           # 0s and 1s (20 times) beside the training digits, against other
           # outliers whose letters leave out I, O, l and o (a drawn 1 or 0
           # is one).
           "$BUILD/mnist-glyphs" --chars letters --set train --except IOlo --out "$tmp" > /dev/null
           "$BUILD/mnist-outliers" --out "$tmp/outliers48.idx" --n 60000 --seed 1 \
               --letters "$tmp/letters-train-images-idx3-ubyte"
           "$BUILD/mnist-strokes" --out "$tmp/strokes" --n 3000 --seed 1 > /dev/null
           "$BUILD/mnist-eval" --ood-fit "$OUT/cnn.safetensors" --ood-method head \
               --head-in "data/glyphs/digits-train,$tmp/strokes" --head-in-repeat 20 \
               --head-out "$tmp/outliers48.idx,$tmp/letters-train" "$tmp/cnn.safetensors"
           mv "$tmp/cnn.safetensors.csv" "$OUT/cnn.history.csv"
           rm -r "$tmp" ;;
    cnn-s2|cnn-s3)
           # One thread each (as shipped; the thread count shapes the
           # batch-norm shards), both members side by side when both asked.
           case " $MODELS " in
           *" cnn-s2 "*" cnn-s3 "*|*" cnn-s3 "*" cnn-s2 "*)
               [ -n "${members_done:-}" ] && continue
               members_done=1
               "$BUILD/mnist-train" --threads 1 --quiet --arch cnn --seed 2 --epochs 18 \
                   --out "$OUT/members/cnn-s2.safetensors" &
               p2=$!
               "$BUILD/mnist-train" --threads 1 --quiet --arch cnn --seed 3 --epochs 18 \
                   --out "$OUT/members/cnn-s3.safetensors" &
               p3=$!
               wait "$p2"
               wait "$p3" ;;
           *)  "$BUILD/mnist-train" --threads 1 --quiet --arch cnn --seed "${m#cnn-s}" --epochs 18 \
                   --out "$OUT/members/$m.safetensors" ;;
           esac ;;
    cnn-dsk-s*)
           # The CNN recipe behind a deskew layer (--deskew).
           $TRAIN --arch cnn --deskew --seed "${m#cnn-dsk-s}" --epochs 18 \
               --out "$OUT/members/$m.safetensors" ;;
    cnn-pool-s4)
           $TRAIN --arch models/members/cnn-pool.json --seed 4 --epochs 18 --batch 64 \
               --sched onecycle --lr 3e-3 --warmup 2 --ema 0.999 --aug 12,0.12,0.1 \
               --out "$OUT/members/cnn-pool-s4.safetensors" ;;
    fashion-cnn)
           $TRAIN --arch cnn --seed 1 --epochs 24 --dropout 0.2 --aug 0,0.05,0.08 --flip 0.5 \
               --data /usr/share/datasets/fashion-mnist \
               --dataset fashion-mnist --name fashion-cnn --out "$OUT/fashion-cnn.safetensors" ;;
    *)     echo "train-all: unknown model $m" >&2; exit 2 ;;
    esac
done

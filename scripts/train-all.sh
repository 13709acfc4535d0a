#!/bin/sh
# Retrains the shipped models from scratch with their recorded seeds and
# settings (the commands in models/README.md), writing into $MODELS_OUT
# (default models/). Runs are reproducible for the same seed and thread
# count (2 here): the same weights, bit for bit, on the same kind of CPU.
#
#   scripts/train-all.sh BUILD_DIR [MODEL...]
#   MODEL: mlp lenet cnn cnn-s2 cnn-s3 cnn-pool-s4 cnn-dsk-s13 fashion-cnn
#          (default: all)
#
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
MODELS=${*:-mlp lenet cnn cnn-s2 cnn-s3 cnn-pool-s4 cnn-dsk-s13 fashion-cnn}

for m in $MODELS; do
    echo "== training $m"
    case $m in
    mlp)   $TRAIN --arch mlp --seed 1 --out "$OUT/mlp.safetensors" ;;
    lenet) $TRAIN --arch lenet --seed 1 --out "$OUT/lenet.safetensors" ;;
    cnn)   $TRAIN --arch cnn --seed 1 --epochs 18 --out "$OUT/cnn.safetensors" ;;
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

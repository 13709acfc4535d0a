#!/bin/sh
# Retrains the shipped models from scratch with their recorded seeds and
# settings (the commands in models/README.md), writing into $MODELS_OUT
# (default models/). Runs are reproducible for the same seed and thread
# count (2 here): the same weights, bit for bit, on the same kind of CPU.
#
#   scripts/train-all.sh BUILD_DIR [MODEL...]    MODEL: mlp lenet cnn fashion-cnn
#
# The CNNs take 30-60 minutes each on two cores; `make train MODELS="mlp lenet"`
# skips it.
set -eu
BUILD=${1:?usage: train-all.sh BUILD_DIR [MODEL...]}
shift
OUT=${MODELS_OUT:-models}
THREADS=${TRAIN_THREADS:-2}
TRAIN="$BUILD/mnist-train --threads $THREADS --quiet"
mkdir -p "$OUT"
MODELS=${*:-mlp lenet cnn fashion-cnn}

for m in $MODELS; do
    echo "== training $m -> $OUT/$m.safetensors"
    case $m in
    mlp)   $TRAIN --arch mlp --seed 1 --out "$OUT/mlp.safetensors" ;;
    lenet) $TRAIN --arch lenet --seed 1 --out "$OUT/lenet.safetensors" ;;
    cnn)   $TRAIN --arch cnn --seed 1 --epochs 18 --out "$OUT/cnn.safetensors" ;;
    fashion-cnn)
           $TRAIN --arch cnn --seed 1 --epochs 12 --data /usr/share/datasets/fashion-mnist \
               --dataset fashion-mnist --name fashion-cnn --out "$OUT/fashion-cnn.safetensors" ;;
    *)     echo "train-all: unknown model $m" >&2; exit 2 ;;
    esac
done

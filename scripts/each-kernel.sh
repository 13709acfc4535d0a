#!/bin/sh
# each-kernel.sh EVAL COMMAND [ARG...] - run COMMAND once per kernel path
# this CPU runs (as `EVAL --list-kernels` lists them, e.g. "generic avx2
# avx512"), with NN_ISA set to that path, so every path's kernels meet the
# same tests. A cap the caller already set in NN_ISA is honoured: the list
# then stops there. Every path runs even after a failure; prints the paths
# tested and fails if any run failed.
set -u

if [ $# -lt 2 ]; then
    echo "usage: $0 MNIST_EVAL COMMAND [ARG...]" >&2
    exit 2
fi
eval_bin=$1
shift
paths=$("$eval_bin" --list-kernels) || {
    echo "kernels: $eval_bin --list-kernels failed" >&2
    exit 1
}
[ -n "$paths" ] || { echo "kernels: no kernel path listed" >&2; exit 1; }

failed=
for p in $paths; do
    echo "==> NN_ISA=$p $*"
    if ! NN_ISA=$p "$@"; then
        failed="$failed $p"
    fi
done
echo "kernels tested: $paths"
if [ -n "$failed" ]; then
    echo "kernels: failed on:$failed" >&2
    exit 1
fi

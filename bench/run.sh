#!/usr/bin/env bash
# run.sh [BUILD_DIR] [--quick] [--repeats N] [--out DIR] - `make bench`:
# our training, inference and server side by side with PyTorch (and Flask
# under gunicorn) on this machine, in the same run.
#
# Every timing is repeated (3 times by default) with ours and the peer
# interleaved, alternating which goes first, so machine noise hits both;
# bench/report.py takes the medians, prints the table and writes
# bench/results/bench-YYYYMMDD-HHMM.json and bench/results/latest.md.
# About 10 minutes on 2 cores.
#
# --quick: one repeat of tiny runs (seconds each) that proves every piece
# works end to end; the figures mean nothing, so they go to
# /tmp/mnist-bench-quick unless --out says otherwise.
#
# Environment: BENCH_PYTHON (default /usr/bin/python3, Debian's, which has
# torch), BENCH_LENET_MODEL / BENCH_CNN_MODEL (default models/lenet and
# models/cnn .safetensors; a stand-in of the preset's shape is trained for a
# few steps when missing: latency depends on the weights' values only
# through how many activations are zero, which the batch-1 kernels of the
# CNN's last two convolutions skip, so the shipped models give the figures
# users see).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD=build
QUICK=0
REPEATS=${BENCH_REPEATS:-3}
OUT=
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --repeats) REPEATS=${2:?--repeats needs a number}; shift ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) BUILD=$1 ;;
    esac
    shift
done
case $REPEATS in ''|*[!0-9]*|0) echo "bench: --repeats wants a positive integer" >&2; exit 2 ;; esac

PY=${BENCH_PYTHON:-/usr/bin/python3}
PEER=bench/peer/torch_bench.py

if [ "$QUICK" = 1 ]; then
    REPEATS=1
    S_LENET32=20 S_LENET128=8 S_MLP=50 S_CNN=3 WARM=2 WARM_CNN=1
    LAT_RUNS=200 LAT_SECS=0.2 WINO_ITERS=20 WRK_SECS=1 WRK_WARM=1 CAL_SECS=1 PEAK_SECS=0.05 STANDIN_STEPS=2
    OUT=${OUT:-/tmp/mnist-bench-quick}
else
    # Sized so each training run takes seconds, not minutes, for both sides.
    S_LENET32=1000 S_LENET128=300 S_MLP=1875 S_CNN=60 WARM=10 WARM_CNN=3
    LAT_RUNS=2000 LAT_SECS=2 WINO_ITERS=500 WRK_SECS=10 WRK_WARM=2 CAL_SECS=3 PEAK_SECS=0.3 STANDIN_STEPS=20
    OUT=${OUT:-bench/results}
fi

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

TMP=$(mktemp -d /tmp/mnist-bench.XXXXXX)
RAW=$TMP/runs.jsonl
META=$TMP/meta.tsv
: > "$RAW"
: > "$META"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

meta() { printf '%s\t%s\n' "$1" "$2" >> "$META"; }

# ---- tools, build, data ----------------------------------------------------
for t in wrk gunicorn curl; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (make deps-bench installs it)"
done
"$PY" -c 'import torch, flask, PIL' 2>/dev/null ||
    die "$PY cannot import torch, flask and PIL (Debian: python3-torch python3-flask python3-pil)"
[ -f data/mnist/t10k-images-idx3-ubyte ] || die "no MNIST data in data/mnist (run make data)"

log "building"
make --no-print-directory -s BUILD="$BUILD" all "$BUILD/bench/peak" "$BUILD/bench/epoch_time" \
    "$BUILD/bench/latency" "$BUILD/bench/infer_bench" "$BUILD/tests/tools/mkpng" >&2 || die "build failed"
# Our kernel path: the best this CPU runs under NN_ISA's cap (the last
# word of the list); every program below inherits NN_ISA.
KERNELS=$("$BUILD/mnist-eval" --list-kernels) || die "NN_ISA=${NN_ISA:-}: not a kernel path this CPU runs"
meta kernels "${KERNELS##* }"
meta kernels_available "$(NN_ISA= "$BUILD/mnist-eval" --list-kernels)"
log "kernels: ${KERNELS##* } (NN_ISA=${NN_ISA:-auto}; this CPU runs: $(NN_ISA= "$BUILD/mnist-eval" --list-kernels))"

# The peer's best configuration: OpenBLAS built for OpenMP behind Debian's
# libblas.so.3 (the reference BLAS trains about 7x slower; the pthread
# flavour fights torch's own threads).
for lib in libblas.so.3 liblapack.so.3; do
    alt=$lib-$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
    cur=$(update-alternatives --query "$alt" 2>/dev/null | awk '/^Value:/ {print $2}')
    case $cur in
    *openblas-openmp*) ;;
    *)
        want=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-openmp | head -n1 || true)
        if [ -n "$want" ] && [ "$(id -u)" = 0 ]; then
            log "selecting $want for $alt (was ${cur:-unset})"
            update-alternatives --set "$alt" "$want" >&2
        else
            log "warning: $alt is ${cur:-unset}, not OpenBLAS/OpenMP; the peer will be slower than it can be"
            log "  fix as root: apt-get install libopenblas0-openmp && update-alternatives --set $alt ${want:-<openblas-openmp path>}"
        fi
        ;;
    esac
done
BLAS_JSON=$("$PY" "$PEER" blas) || die "the peer cannot start torch"
log "peer: $BLAS_JSON"
meta peer_blas "$BLAS_JSON"

CPU=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)
CORES=$(nproc)
meta cpu "${CPU:-unknown}"
meta cores "$CORES"
meta kernel "$(uname -sr)"
meta repeats "$REPEATS"
meta wrk_seconds "$WRK_SECS"
meta steps_note "LeNet b32 $S_LENET32, b128 $S_LENET128, MLP $S_MLP, CNN $S_CNN"
meta quick "$QUICK"

log "measuring the FP32 peak"
PEAK_OUT=$("$BUILD/bench/peak" "$PEAK_SECS") || die "bench/peak failed"
printf '%s\n' "$PEAK_OUT" >&2
# Best ISA per thread count: lines are "isa threads GFLOP/s".
PEAK1=$(printf '%s\n' "$PEAK_OUT" | awk '$2 == 1 && $3 + 0 > b {b = $3 + 0; i = $1} END {print b}')
PEAKN=$(printf '%s\n' "$PEAK_OUT" | awk -v n="$CORES" '$2 == n && $3 + 0 > b {b = $3 + 0} END {print b}')
[ "$CORES" = 1 ] && PEAKN=$PEAK1
PEAK_ISA=$(printf '%s\n' "$PEAK_OUT" | awk '$2 == 1 && $3 + 0 > b {b = $3 + 0; i = $1} END {print i}')
meta peak_1core_gflops "$PEAK1"
meta peak_all_gflops "$PEAKN"
meta peak_isa "$PEAK_ISA"

# Architectures from the trainer's presets, for the peer to build the same.
for a in mlp lenet cnn; do
    "$BUILD/bench/epoch_time" --arch "$a" --print-arch > "$TMP/$a.json"
done

# Models for inference and serving.
model_for() { # NAME ENVVAR-VALUE -> path
    local name=$1 given=$2
    if [ -n "$given" ]; then
        [ -f "$given" ] || die "$given: no such model file"
        printf '%s\n' "$given"
    elif [ -f "models/$name.safetensors" ]; then
        printf '%s\n' "$ROOT/models/$name.safetensors"
    else
        log "models/$name.safetensors missing: training a stand-in of the preset's shape"
        "$BUILD/bench/epoch_time" --arch "$name" --batch 64 --steps "$STANDIN_STEPS" --warmup 0 \
            --save "$TMP/$name.safetensors" >/dev/null || die "could not make a $name model"
        printf '%s\n' "$TMP/$name.safetensors"
    fi
}
LENET=$(model_for lenet "${BENCH_LENET_MODEL:-}")
CNN=$(model_for cnn "${BENCH_CNN_MODEL:-}")
case $LENET in /*) ;; *) LENET=$ROOT/$LENET ;; esac
case $CNN in /*) ;; *) CNN=$ROOT/$CNN ;; esac
meta lenet_model "$LENET"
meta cnn_model "$CNN"
PNG=$TMP/digit.png
"$BUILD/tests/tools/mkpng" --from-idx data/mnist/t10k-images-idx3-ubyte 0 "$PNG" ||
    die "could not make the PNG request body"
# The same image as a v2 inference request: a UINT8 [1,28,28] tensor.
V2_BODY=$TMP/digit-v2.json
"$PY" -c '
import json, sys
with open(sys.argv[1], "rb") as f:
    f.seek(16)
    px = list(f.read(784))
json.dump({"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": px}]},
          open(sys.argv[2], "w"))' data/mnist/t10k-images-idx3-ubyte "$V2_BODY" ||
    die "could not make the v2 request body"

# ---- training and batch-1 inference ------------------------------------------
cmd_ours() {
    local et=$BUILD/bench/epoch_time
    case $1 in
    train_lenet_b32)  "$et" --arch lenet --batch 32 --steps "$S_LENET32" --warmup "$WARM" --threads 2 ;;
    train_lenet_b128) "$et" --arch lenet --batch 128 --steps "$S_LENET128" --warmup "$WARM" --threads 2 ;;
    train_mlp_b32)    "$et" --arch mlp --batch 32 --steps "$S_MLP" --warmup "$WARM" --threads 2 ;;
    train_cnn_b64)    "$et" --arch cnn --batch 64 --steps "$S_CNN" --warmup "$WARM_CNN" --threads 2 ;;
    infer_lenet) "$BUILD/bench/latency" "$LENET" --runs "$LAT_RUNS" --seconds "$LAT_SECS" --peak "$PEAK1" ;;
    infer_cnn)   "$BUILD/bench/latency" "$CNN" --runs "$LAT_RUNS" --seconds "$LAT_SECS" --peak "$PEAK1" ;;
    # Ours only: the same without the inference plan (before Winograd),
    # and the Winograd layers' effective rate against the direct one.
    infer_cnn_direct) "$BUILD/bench/latency" "$CNN" --direct --runs "$LAT_RUNS" --seconds "$LAT_SECS" --peak "$PEAK1" ;;
    wino_cnn) "$BUILD/bench/infer_bench" --arch cnn --iters "$WINO_ITERS" --json ;;
    # Where the CPU has AMX: the convolutions in bf16 (NN_PRECISION).
    infer_cnn_bf16) NN_PRECISION=bf16 "$BUILD/bench/latency" "$CNN" --runs "$LAT_RUNS" --seconds "$LAT_SECS" --peak "$PEAK1" ;;
    esac
}
cmd_peer() {
    case $1 in
    train_lenet_b32)  "$PY" "$PEER" train --arch-json "$TMP/lenet.json" --batch 32 --steps "$S_LENET32" --warmup "$WARM" --threads 2 ;;
    train_lenet_b128) "$PY" "$PEER" train --arch-json "$TMP/lenet.json" --batch 128 --steps "$S_LENET128" --warmup "$WARM" --threads 2 ;;
    train_mlp_b32)    "$PY" "$PEER" train --arch-json "$TMP/mlp.json" --raw --batch 32 --steps "$S_MLP" --warmup "$WARM" --threads 2 ;;
    train_cnn_b64)    "$PY" "$PEER" train --arch-json "$TMP/cnn.json" --batch 64 --steps "$S_CNN" --warmup "$WARM_CNN" --threads 2 ;;
    infer_lenet) "$PY" "$PEER" infer "$LENET" --runs "$LAT_RUNS" --seconds "$LAT_SECS" --peak "$PEAK1" ;;
    infer_cnn)   "$PY" "$PEER" infer "$CNN" --runs "$LAT_RUNS" --seconds "$LAT_SECS" --peak "$PEAK1" ;;
    esac
}

# record WORKLOAD SIDE REP JSON|null
record() { printf '{"w":"%s","side":"%s","rep":%d,"r":%s}\n' "$1" "$2" "$3" "$4" >> "$RAW"; }

# run_one WORKLOAD SIDE REP: runs it, records its last stdout line (JSON).
run_one() {
    local w=$1 side=$2 rep=$3 out line
    out=$TMP/$w.$side.$rep
    if "cmd_$side" "$w" > "$out.stdout" 2> "$out.stderr"; then
        line=$(grep '^{' "$out.stdout" | tail -n1 || true)
    else
        line=
    fi
    if [ -z "$line" ]; then
        log "$w ($side, run $rep) failed:"
        tail -n 5 "$out.stderr" >&2
        record "$w" "$side" "$rep" null
        return
    fi
    log "$w $side $rep: $line"
    record "$w" "$side" "$rep" "$line"
}

# Alternate which side goes first from one repeat to the next.
order() { if [ $(($1 % 2)) = 1 ]; then echo "ours peer"; else echo "peer ours"; fi; }

WORKLOADS="train_lenet_b32 train_lenet_b128 train_mlp_b32 train_cnn_b64 infer_lenet infer_cnn
           infer_cnn_direct wino_cnn"
# Where our best kernels are AVX-512 (and NN_ISA does not cap them), the
# same rows again as an AVX2-only machine would run them: our kernels
# capped to AVX2, and the peer's too (PEER_AVX2: oneDNN, ATen and
# OpenBLAS each have their cap), interleaved like the others. The report
# sets ours capped against both peers.
PEER_AVX2=(DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell)
CAPPED=
if [ -z "${NN_ISA:-}" ] && [ "${KERNELS##* }" = avx512 ]; then
    CAPPED="train_lenet_b32_avx2 train_lenet_b128_avx2 train_cnn_b64_avx2 infer_lenet_avx2 infer_cnn_avx2"
    WORKLOADS="$WORKLOADS $CAPPED"
    # What each peer runs: torch's kernel level, OpenBLAS's core, oneDNN's ISA.
    meta peer_isa "$("$PY" "$PEER" isa)"
    meta peer_capped_isa "$(env "${PEER_AVX2[@]}" "$PY" "$PEER" isa)"
    meta peer_capped_env "${PEER_AVX2[*]}"
fi
meta capped_avx2 "${CAPPED:+yes}"
# BF16 on AMX (NN_PRECISION=bf16) where this CPU runs it: separate rows,
# ours only (the peer stays at FP32, as its users run it).
BF16=
if [ -z "${NN_ISA:-}" ] && NN_PRECISION=bf16 "$BUILD/mnist-eval" --list-kernels > /dev/null 2>&1; then
    BF16=yes
    WORKLOADS="$WORKLOADS infer_cnn_bf16"
fi
meta bf16_amx "$BF16"
cmd_capped() { NN_ISA=avx2 cmd_ours "${1%_avx2}"; }
cmd_peer_capped() { (export "${PEER_AVX2[@]}" && cmd_peer "${1%_avx2}"); }
for rep in $(seq 1 "$REPEATS"); do
    log "== repeat $rep of $REPEATS: training and inference"
    for w in $WORKLOADS; do
        case $w in
        *_avx2) if [ $((rep % 2)) = 1 ]; then sides="capped peer_capped"; else sides="peer_capped capped"; fi ;;
        infer_cnn_direct|wino_cnn|infer_cnn_bf16) sides=ours ;; # no peer figure
        *) sides=$(order "$rep") ;;
        esac
        for side in $sides; do
            run_one "$w" "$side" "$rep"
        done
    done
done

# ---- servers ------------------------------------------------------------------
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready PORT PID: until POST /predict answers 200 (60 s at most).
wait_ready() {
    local port=$1 pid=$2 i
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -sf -o /dev/null -H 'Content-Type: image/png' --data-binary "@$PNG" \
            "http://127.0.0.1:$port/predict"; then
            return 0
        fi
        [ "$i" = 1 ] || sleep 0.2
    done
    return 1
}

SERVER_PID='' SERVER_PORT=''
# Dynamic batching as the README recommends it for many connections (the
# server's default is off): the "batch" side of the CNN section.
BATCH_ARGS=${BENCH_BATCH_ARGS:---batch-delay 500 --max-batch-size 16}
start_ours() { # NAME MODEL [SERVER-ARGS...]
    local name=$1 model=$2
    shift 2
    SERVER_PORT=$(free_port)
    # No balancer in front: nothing to wait for on SIGTERM. Later
    # arguments win (BENCH_BATCH_ARGS may set --threads).
    "$BUILD/mnist-server" --host 127.0.0.1 --port "$SERVER_PORT" --model "$name=$model" --threads 2 \
        --drain-delay 0 --access-log off "$@" > "$TMP/ours-$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_ready "$SERVER_PORT" "$SERVER_PID" || { cat "$TMP/ours-$1.log" >&2; die "mnist-server did not start"; }
}
# Workers load the model themselves (no --preload): torch's threads are
# created after the fork, one per worker.
start_peer() { # NAME MODEL WORKER-ARGS...
    local name=$1 model=$2
    shift 2
    SERVER_PORT=$(free_port)
    OMP_NUM_THREADS=1 PEER_MODEL=$model gunicorn --workers 2 "$@" --bind "127.0.0.1:$SERVER_PORT" \
        --chdir "$ROOT/bench/peer" --log-level warning --backlog 2048 server:app \
        > "$TMP/peer-$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_ready "$SERVER_PORT" "$SERVER_PID" || { cat "$TMP/peer-$name.log" >&2; die "the peer server did not start"; }
}
stop_server() { # PID
    local p keep=()
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
# Peak RSS in KiB of a process and its children (gunicorn: master + workers).
peak_rss() {
    local pid=$1 total=0 p kb
    # shellcheck disable=SC2046  # one PID per word
    for p in "$pid" $(pgrep -P "$pid" || true); do
        kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
# wrk_json PORT CONNS SECONDS: wrk's summary line from bench/wrk/predict.lua.
# wrk runs min(2, CONNS) threads (it wants a connection per thread).
wrk_json() {
    PNG_BODY=$PNG wrk -t$(($2 < 2 ? $2 : 2)) -c"$2" -d"$3s" --timeout 10s -s bench/wrk/predict.lua \
        "http://127.0.0.1:$1/predict" 2>&1 | grep '^{"requests"' | tail -n1
}
# wrk_v2_json PORT CONNS SECONDS MODEL: the same image as a v2 UINT8 tensor.
wrk_v2_json() {
    PNG_BODY=$V2_BODY wrk -t2 -c"$2" -d"$3s" --timeout 10s \
        -s bench/wrk/predict.lua "http://127.0.0.1:$1/v2/models/$4/infer" 2>&1 |
        grep '^{"requests"' | tail -n1
}

# Which gunicorn worker kind serves the peer best here: sync closes every
# connection, gthread keeps them alive; measured, not assumed.
log "== choosing the peer's gunicorn worker class (LeNet, 64 connections, ${CAL_SECS}s each)"
best_rps=0 BEST_WORKER="sync"
for wk in "sync" "gthread --threads 1" "gthread --threads 4"; do
    # shellcheck disable=SC2086  # $wk is a list of gunicorn arguments
    start_peer lenet "$LENET" --worker-class $wk
    wrk_json "$SERVER_PORT" 64 1 >/dev/null || true
    j=$(wrk_json "$SERVER_PORT" 64 "$CAL_SECS" || true)
    stop_server "$SERVER_PID"
    rps=$(printf '%s\n' "$j" | sed -n 's/.*"rps":\([0-9.]*\).*/\1/p')
    log "  $wk: ${rps:-failed} req/s"
    if [ -n "$rps" ] && awk -v a="$rps" -v b="$best_rps" 'BEGIN {exit !(a > b)}'; then
        best_rps=$rps BEST_WORKER=$wk
    fi
done
log "peer worker class: $BEST_WORKER"
meta gunicorn_worker "$BEST_WORKER"

# server_section NAME MODEL CONNS...: both servers up, wrk runs interleaved.
# With SECTION_BATCH=1 a third server, ours with dynamic batching
# (BATCH_ARGS), takes its turn after the two: workload
# server_NAME_batch_cC, compared with ours unbatched in the report.
server_section() {
    local name=$1 model=$2 ours_pid ours_port peer_pid peer_port batch_pid='' batch_port='' rep c
    local bf16_pid='' bf16_port=''
    local side port j w sides
    shift 2
    start_ours "$name" "$model"
    ours_pid=$SERVER_PID ours_port=$SERVER_PORT
    if [ "${SECTION_BATCH:-0}" = 1 ]; then
        # shellcheck disable=SC2086  # a list of server arguments
        start_ours "$name-batch" "$model" $BATCH_ARGS
        batch_pid=$SERVER_PID batch_port=$SERVER_PORT
        meta batch_args "$BATCH_ARGS"
    fi
    if [ "${SECTION_BF16:-0}" = 1 ]; then
        NN_PRECISION=bf16 start_ours "$name-bf16" "$model"
        bf16_pid=$SERVER_PID bf16_port=$SERVER_PORT
    fi
    # shellcheck disable=SC2086
    start_peer "$name" "$model" --worker-class $BEST_WORKER
    peer_pid=$SERVER_PID peer_port=$SERVER_PORT
    for rep in $(seq 1 "$REPEATS"); do
        for c in "$@"; do
            sides=$(order "$rep")
            [ -z "$batch_pid" ] || sides="$sides batch"
            [ -z "$bf16_pid" ] || sides="$sides bf16"
            for side in $sides; do
                w=server_${name}_c$c
                case $side in
                ours) port=$ours_port ;;
                peer) port=$peer_port ;;
                batch) port=$batch_port w=server_${name}_batch_c$c ;;
                bf16) port=$bf16_port w=server_${name}_bf16_c$c ;;
                esac
                wrk_json "$port" "$c" "$WRK_WARM" >/dev/null || true
                j=$(wrk_json "$port" "$c" "$WRK_SECS" || true)
                if [ -z "$j" ]; then
                    log "$w ($side, run $rep): wrk gave no result"
                    j=null
                else
                    log "$w $side $rep: $j"
                fi
                case $side in batch|bf16) side=ours ;; esac
                record "$w" "$side" "$rep" "$j"
                # Ours only (the peer has no v2 protocol): LeNet at 64
                # connections through /v2 with a UINT8 tensor, right after
                # the PNG figure on the same server.
                if [ "$side" = ours ] && [ "$name" = lenet ] && [ "$c" = 64 ]; then
                    wrk_v2_json "$port" "$c" "$WRK_WARM" "$name" >/dev/null || true
                    j=$(wrk_v2_json "$port" "$c" "$WRK_SECS" "$name" || true)
                    [ -n "$j" ] || { log "server_lenet_v2_c64 (run $rep): wrk gave no result"; j=null; }
                    log "server_lenet_v2_c64 ours $rep: $j"
                    record server_lenet_v2_c64 ours "$rep" "$j"
                fi
            done
        done
    done
    record "rss_$name" ours 1 "{\"kb\":$(peak_rss "$ours_pid")}"
    record "rss_$name" peer 1 "{\"kb\":$(peak_rss "$peer_pid")}"
    stop_server "$ours_pid"
    stop_server "$peer_pid"
    [ -z "$batch_pid" ] || stop_server "$batch_pid"
    [ -z "$bf16_pid" ] || stop_server "$bf16_pid"
}
log "== servers: LeNet at 64 and 8 connections"
server_section lenet "$LENET" 64 8
log "== servers: big CNN at 64 and 1 connections, with and without dynamic batching"
SECTION_BATCH=1 SECTION_BF16=${BF16:+1} server_section cnn "$CNN" 64 1

# ---- report ----------------------------------------------------------------------
q=()
[ "$QUICK" = 1 ] && q=(--quick)
"$PY" bench/report.py --raw "$RAW" --meta "$META" --out "$OUT" "${q[@]}"

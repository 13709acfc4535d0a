# Sourced by tests/load/*.sh: fixtures and a server on a free port.
# Needs BUILD (the build dir), sets tmp, png, batch, srv_pid, base.

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnist-load.XXXXXX") || exit 2
srv_pid=""
cleanup() {
    if [ -n "$srv_pid" ] && kill -0 "$srv_pid" 2>/dev/null; then
        kill -KILL "$srv_pid" 2>/dev/null
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "# scratch kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for v in $(env | sed -n 's/^\(MNIST_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

# A digit as PNG, and a two-image multipart batch body.
"$BUILD/tests/tools/mkpng" --from-idx data/mnist/t10k-images-idx3-ubyte 0 "$tmp/d0.png" > /dev/null ||
    { echo "load: cannot render a test digit (make data, make test-bins)" >&2; exit 2; }
"$BUILD/tests/tools/mkpng" --from-idx data/mnist/t10k-images-idx3-ubyte 1 "$tmp/d1.png" > /dev/null
{
    printf -- '--BND\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
    cat "$tmp/d0.png"
    printf -- '\r\n--BND\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
    cat "$tmp/d1.png"
    printf -- '\r\n--BND--\r\n'
} > "$tmp/batch.body"

# start_server LOG [args...]: --port 0, waits for /readyz; sets srv_pid, base.
start_server() {
    log=$1; shift
    "$BUILD/mnist-server" --host 127.0.0.1 --port 0 "$@" > "$log.out" 2> "$log" &
    srv_pid=$!
    port=""
    for _ in $(seq 600); do
        port=$(sed -n 's#.*listening on http://[^ ]*:\([0-9][0-9]*\).*#\1#p' "$log" | head -1)
        if [ -n "$port" ] &&
           [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; then
            base=http://127.0.0.1:$port
            return 0
        fi
        kill -0 "$srv_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "load: server did not become ready; log:" >&2
    tail -20 "$log" >&2
    return 1
}

# stop_server: SIGTERM, wait up to 30 s; sets srv_rc.
stop_server() {
    kill -TERM "$srv_pid"
    for _ in $(seq 300); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$srv_pid" 2>/dev/null; then kill -KILL "$srv_pid"; srv_rc=124
    else wait "$srv_pid"; srv_rc=$?; fi
    srv_pid=""
}

# nonxx FILE: the "non2xx N" count a wrk run printed (missing: -1).
non2xx() { sed -n 's/^non2xx //p' "$1" | tail -1 | grep . || echo -1; }

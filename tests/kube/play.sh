#!/usr/bin/env bash
# The base's Deployment, as `kubectl kustomize deploy/kubernetes` renders
# it, run by `podman kube play` with the image the Docker check built: it
# must become ready and answer a prediction and /metrics.
#
#   tests/kube/play.sh BUILD_DIR [IMAGE]
#
# IMAGE defaults to the tag ../shared/docker-check/check.sh gives this
# checkout (localhost/docker-check/<directory name>:latest). Services, HPAs,
# PDBs and NetworkPolicies mean nothing to podman and are left out. The only
# changes to the rendered objects: the image, a hostPort so the test can
# reach the pod, and one replica (podman 4.3 starts one pod per replica,
# and only one can own the host port). Where podman or the image is missing the test says SKIP and exits 0
# without counting anything as passed.
set -uo pipefail
# shellcheck source=tests/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"

pass=0 failc=0 n=0
ok() { n=$((n + 1)); pass=$((pass + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); failc=$((failc + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do printf '%s\n' "$l" | sed 's/^/# /'; done; }

if ! command -v podman > /dev/null; then
    echo "kube-play: SKIP: podman is not installed (../shared/docker-check/setup.sh installs it); nothing was tested"
    exit 0
fi
image=${2:-localhost/docker-check/$(basename "$root" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9_.\n-' '-'):latest}
if ! podman image exists "$image"; then
    echo "kube-play: SKIP: image $image not built (run ../shared/docker-check/check.sh . 8080 /healthz first); nothing was tested"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnist-kube.XXXXXX") || exit 2
played=""
cleanup() {
    [ -n "$played" ] && podman kube down "$played" > /dev/null 2>&1
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT

hostport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kubectl kustomize deploy/kubernetes > "$tmp/all.yaml" 2> "$tmp/kustomize.err" ||
    { nok "kubectl kustomize deploy/kubernetes" "$(cat "$tmp/kustomize.err")"; echo "kube-play: $pass passed, $failc failed"; exit 1; }
python3 - "$tmp/all.yaml" "$image" "$hostport" > "$tmp/play.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
keep = [d for d in docs if d["kind"] in ("ConfigMap", "Deployment")]
for d in keep:
    if d["kind"] == "Deployment":
        d["spec"]["replicas"] = 1
        c = d["spec"]["template"]["spec"]["containers"][0]
        c["image"] = sys.argv[2]
        c["ports"][0]["hostPort"] = int(sys.argv[3])
        c["ports"][0]["hostIP"] = "127.0.0.1"
yaml.safe_dump_all(keep, sys.stdout, sort_keys=False)
PY
name=$(python3 -c 'import sys, yaml; print([d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Deployment"][0]["metadata"]["name"])' "$tmp/play.yaml")
played=$tmp/play.yaml   # from here on, `podman kube down` on exit
if podman kube play "$tmp/play.yaml" > "$tmp/play.log" 2>&1; then
    ok "podman kube play runs the rendered Deployment ($image)"
else
    nok "podman kube play runs the rendered Deployment ($image)" "$(grep -v systemd "$tmp/play.log" | tail -20)"
    echo "kube-play: $pass passed, $failc failed"; exit 1
fi

base=http://127.0.0.1:$hostport
code=000
for _ in $(seq 120); do
    code=$(curl -s -o "$tmp/ready.json" -w '%{http_code}' --max-time 2 "$base/v2/health/ready") || code=000
    [ "$code" = 200 ] && break
    sleep 0.5
done
logs() { podman logs "$name-pod-0-mnist-server" 2>&1 | tail -20 || podman pod logs "$name-pod-0" 2>&1 | tail -20; }
if [ "$code" = 200 ]; then
    ok "the pod becomes ready: GET /v2/health/ready 200"
else
    nok "the pod becomes ready: GET /v2/health/ready 200" "last status $code" "$(podman ps -a --format '{{.Names}} {{.Status}}' 2>&1)" "$(logs)"
fi
"$build/tests/tools/mkpng" --from-idx data/mnist/t10k-images-idx3-ubyte 0 "$tmp/digit.png" > /dev/null 2>&1
code=$(curl -s -o "$tmp/pred.json" -w '%{http_code}' --max-time 10 -H 'Content-Type: image/png' \
    --data-binary "@$tmp/digit.png" "$base/predict") || code=000
pred=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["prediction"])' "$tmp/pred.json" 2>/dev/null)
if [ "$code" = 200 ] && [ "$pred" = 7 ]; then
    ok "POST /predict in the pod: 200, MNIST test image 0 is a 7"
else
    nok "POST /predict in the pod: 200, MNIST test image 0 is a 7" "status $code, prediction '$pred'" "$(head -c 300 "$tmp/pred.json")"
fi
# The settings reach the server from the ConfigMap: JSON logs, 2 threads.
if logs | grep -q '"msg":"2 threads'; then
    ok "the ConfigMap's MNIST_* settings reach the server (JSON log, 2 threads)"
else
    nok "the ConfigMap's MNIST_* settings reach the server (JSON log, 2 threads)" "$(logs)"
fi
echo "kube-play: $pass passed, $failc failed"
[ "$failc" = 0 ]

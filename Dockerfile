# mnist-server container: build and unit-test in one stage, ship only the
# server, its runtime libraries and the models in the other.
#
#   docker build -t mnist-server .
#   docker run --rm -p 8080:8080 mnist-server
#   curl -F image=@digit.png localhost:8080/predict
#
# Configure with MNIST_* variables (docker run -e MNIST_THREADS=4 ...), the
# same ones `mnist-server --help` lists; CMD passes no flags so that they
# all stay overridable. No heredocs: the builder here is podman 4.3.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        gcc libc6-dev make pkg-config \
        libmicrohttpd-dev libcjson-dev libpng-dev zlib1g-dev libcmocka-dev libfreetype-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The build context has no .git: pass the commit for mnist_build_info with
#   docker build --build-arg MNIST_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG MNIST_COMMIT=unknown
# The unit tests run here so a broken build never becomes an image. The
# MNIST files are not in the build context (see .dockerignore), so test
# programs whose source reads data/mnist are left out; the rest, including
# the golden outputs of the shipped models, must pass.
RUN MNIST_COMMIT="$MNIST_COMMIT" make -j"$(nproc)" all test-bins \
 && scripts/run-unit.sh $(for t in build/tests/test_*; do \
        grep -q data/mnist "tests/unit/${t##*/}.c" || echo "$t"; done)

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        libmicrohttpd12 libcjson1 libpng16-16 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin mnist
COPY --from=build /src/build/mnist-server /usr/local/bin/mnist-server
COPY --from=build /src/models/ /opt/mnist/models/
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /opt/mnist
ENV MNIST_HOST=0.0.0.0 \
    MNIST_PORT=8080 \
    MNIST_MODELS_DIR=/opt/mnist/models
EXPOSE 8080
# No curl in the image: bash speaks enough HTTP/1.0 over /dev/tcp. The
# check asks the address and port the server listens on, as `docker run -e
# MNIST_PORT=... -e MNIST_HOST=...` set them (a wildcard address is asked
# on loopback).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "h=${MNIST_HOST:-0.0.0.0}; h=${h#[}; h=${h%]}; case $h in 0.0.0.0) h=127.0.0.1 ;; ::) h=::1 ;; esac; exec 3<>/dev/tcp/$h/${MNIST_PORT:-8080} || exit 1; printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3; head -1 <&3 | grep -q ' 200 '"]
CMD ["/usr/local/bin/mnist-server"]

#!/bin/sh
# deps.sh MODE - make sure the Debian packages MODE needs are installed.
#
#   run    build and serve           (make run)
#   test   run's + test tools        (make test, make asan)
#   bench  test's + the peers the benchmarks compare against (make bench)
#   coverage  lcov/genhtml for the coverage summary (make coverage)
#   fuzz   test's + clang and libFuzzer (make fuzz, make tsan, make soak)
#   glyphs the font packages mnist-glyphs renders (make glyphs)
#
# As root, missing packages are installed with apt-get; otherwise the exact
# command is printed and the script fails, so `make` stops before a
# confusing compiler error. Quiet when nothing is missing.
set -eu

# ---- package lists: the one place to edit --------------------------------
# An entry is a Debian package, optionally followed by "@COMMAND": then the
# package also counts as present when COMMAND is on the PATH. That matters
# for node and npm, which are often installed from outside Debian (the
# upstream nodejs build bundles npm, and Debian's npm package conflicts
# with it), and for tools a user built by hand.
#
# gcc + libc6-dev + make rather than build-essential: we install without
# recommends, and build-essential would also pull in g++ and dpkg-dev.
# ca-certificates: curl and npm need it to speak HTTPS.
# dataset-fashion-mnist: test_image checks img_prep_fit on real images; the
# model-card check and the integration tests score its items as not digits.
# kubernetes-client: kubectl, whose embedded kustomize renders deploy/ (any
# kubectl will do). prometheus: promtool lints /metrics. haproxy and wrk:
# the rolling-update test (make rolling).
# chromium: the browser tests drive it (tests/browser), never a downloaded one.
# clang-format: make format-check (Debian 12's, version 14).
# libfreetype-dev: mnist-glyphs rasterises font outlines with FreeType, the
# standard rasteriser (anti-aliasing, TrueType, OpenType/CFF and Type 1).
DEPS_RUN="gcc@gcc libc6-dev make@make pkg-config@pkg-config
  libmicrohttpd-dev libcjson-dev libpng-dev zlib1g-dev libfreetype-dev
  ca-certificates curl@curl"
DEPS_TEST="libcmocka-dev nodejs@node npm@npm python3@python3 python3-yaml bats@bats
  dataset-fashion-mnist kubernetes-client@kubectl prometheus@promtool
  haproxy@haproxy wrk@wrk chromium clang-format@clang-format"
DEPS_COVERAGE="lcov@genhtml"
# The fonts of tools/glyph-fonts.txt (serif, sans, mono, handwriting-like);
# the tests render a few of them, so test installs them too.
DEPS_GLYPHS="fonts-dejavu-core fonts-liberation2 fonts-urw-base35 fonts-linuxlibertine
  fonts-inconsolata fonts-comic-neue fonts-humor-sans fonts-crosextra-caladea
  fonts-crosextra-carlito fonts-go fonts-sil-andika fonts-courier-prime
  fonts-dancingscript fonts-femkeklaver fonts-breip"
# libclang-rt-14-dev holds libFuzzer and clang's sanitizer runtimes (only a
# recommendation of clang, and we install without recommends).
DEPS_FUZZ="clang@clang libclang-rt-14-dev"
# linux-perf: make profile samples the server under load (bench/profile.sh).
DEPS_BENCH="python3-torch python3-flask python3-pil gunicorn@gunicorn
  libopenblas0-openmp linux-perf@perf"
# --------------------------------------------------------------------------

usage() { echo "usage: $0 run|test|bench|coverage|fuzz|glyphs" >&2; exit 2; }
[ $# -eq 1 ] || usage
case $1 in
    run)   WANT=$DEPS_RUN ;;
    test)  WANT="$DEPS_RUN $DEPS_TEST $DEPS_GLYPHS" ;;
    bench) WANT="$DEPS_RUN $DEPS_TEST $DEPS_GLYPHS $DEPS_BENCH" ;;
    coverage) WANT="$DEPS_COVERAGE" ;;
    fuzz)  WANT="$DEPS_RUN $DEPS_TEST $DEPS_GLYPHS $DEPS_FUZZ" ;;
    glyphs) WANT="$DEPS_RUN $DEPS_GLYPHS" ;;
    *)     usage ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    # Not Debian: we cannot check, and guessing another distribution's
    # package names would be worse than saying so.
    echo "deps: not a Debian system; make sure these are installed:" >&2
    echo "deps:   $(echo "$WANT" | sed 's/@[^ ]*//g' | tr -s ' \n' '  ')" >&2
    exit 0
fi

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

MISSING=
for entry in $WANT; do
    pkg=${entry%%@*}
    if [ "$pkg" != "$entry" ]; then
        cmd=${entry#*@}
        command -v "$cmd" >/dev/null 2>&1 && continue
    fi
    installed "$pkg" && continue
    MISSING="$MISSING $pkg"
done
MISSING=${MISSING# }

if [ -z "$MISSING" ]; then
    echo "deps: all present"
    exit 0
fi

INSTALL="apt-get install -y --no-install-recommends $MISSING"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages: $MISSING" >&2
    if command -v sudo >/dev/null 2>&1; then
        echo "deps: install them with:" >&2
        echo "    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive $INSTALL" >&2
    else
        echo "deps: install them as root with:" >&2
        echo "    apt-get update && DEBIAN_FRONTEND=noninteractive $INSTALL" >&2
    fi
    exit 1
fi

echo "deps: installing $MISSING"
export DEBIAN_FRONTEND=noninteractive

# Container images ship with empty package lists; refresh them first in
# that case, otherwise only when an install fails (stale lists).
lists_empty() {
    for f in /var/lib/apt/lists/*_Packages*; do
        [ -e "$f" ] && return 1
    done
    return 0
}
if lists_empty; then
    apt-get update -q || { echo "deps: apt-get update failed" >&2; exit 1; }
fi
# shellcheck disable=SC2086  # $MISSING is a list of words by design
if ! apt-get install -q -y --no-install-recommends $MISSING; then
    echo "deps: install failed; refreshing package lists and retrying" >&2
    apt-get update -q || { echo "deps: apt-get update failed" >&2; exit 1; }
    # shellcheck disable=SC2086
    apt-get install -q -y --no-install-recommends $MISSING ||
        { echo "deps: could not install:$MISSING" >&2; exit 1; }
fi
echo "deps: installed $MISSING"

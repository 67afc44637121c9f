#!/usr/bin/env bash
# Build FerretDB v1.24.2 (SQLite backend) with our _id index fix into .cache/ferretdb/bin, once;
# later calls reuse it. Prints the binary's path.
#
# - The fix (scripts/ferretdb-id-index.patch, which says what and why) makes finds, updates and
#   deletes by _id use the _id index; without it each one scans the whole collection.
# - Not `go install ...@v1.24.2`: that cannot apply the patch, the module proxy reachable here refuses
#   go install's deprecation lookup, and the published module ships an empty build/version/version.txt
#   (a binary built from it panics at start). So: download exactly that module version, apply the
#   patch, write version.txt as FerretDB's own `task gen-version` does, build ./cmd/ferretdb.
# - The build proves the fix (EXPLAIN QUERY PLAN of an _id lookup must use the index) before it is
#   installed, and installs atomically: built to a temporary name, checked, then renamed. An
#   interrupted build never leaves a broken or unpatched binary behind. A lock serialises builds.
set -euo pipefail
VERSION=v1.24.2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/.cache/ferretdb"
BIN="$DEST/bin/ferretdb"
PATCH="$ROOT/scripts/ferretdb-id-index.patch"
STAMP="$BIN.patch-sha256"  # which patch the installed binary was built with
PYTHON=${PYTHON:-python3}
WANT=$(sha256sum "$PATCH" | cut -d' ' -f1)

# (Not `--version | grep -q`: with pipefail, grep -q's early exit can SIGPIPE the writer and fail the check at random.)
reports_version() { local out; out=$("$1" --version 2>/dev/null) && [[ $out == *"version: $VERSION"* ]]; }
works() { [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] && reports_version "$BIN"; }
works && { echo "$BIN"; exit 0; }
command -v go >/dev/null || { echo "build-ferretdb: Go is needed to build FerretDB" >&2; exit 1; }
if ! command -v patch >/dev/null || ! command -v flock >/dev/null; then
  echo "build-ferretdb: installing Debian's patch and util-linux" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends patch util-linux >&2
fi
mkdir -p "$DEST/bin"
exec 9>"$DEST/build.lock"
flock 9
works && { echo "$BIN"; exit 0; }  # another build finished while we waited

echo "build-ferretdb: building FerretDB $VERSION with the _id index fix (about a minute, once)" >&2
module_dir=$(go mod download -json "github.com/FerretDB/FerretDB@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$module_dir" ] || { echo "build-ferretdb: could not download FerretDB $VERSION" >&2; exit 1; }
SRC=$(mktemp -d "$DEST/src.XXXXXX")
trap 'rm -rf "$SRC" "$BIN.partial"' EXIT
cp -r "$module_dir/." "$SRC" && chmod -R u+w "$SRC"
patch -d "$SRC" -p1 --forward --batch --quiet < "$PATCH" || { echo "build-ferretdb: $PATCH does not apply" >&2; exit 1; }
echo "$VERSION" > "$SRC/build/version/version.txt"
(cd "$SRC" && go build -trimpath -o "$BIN.partial" ./cmd/ferretdb) >"$DEST/build.log" 2>&1 || { cat "$DEST/build.log" >&2; exit 1; }
reports_version "$BIN.partial" || { echo "build-ferretdb: built binary does not report $VERSION" >&2; exit 1; }
"$PYTHON" "$ROOT/scripts/ferretdb-index-check.py" "$BIN.partial" || { echo "build-ferretdb: the _id index fix is not in effect" >&2; exit 1; }
mv -f "$BIN.partial" "$BIN"
echo "$WANT" > "$STAMP.partial" && mv -f "$STAMP.partial" "$STAMP"
echo "$BIN"

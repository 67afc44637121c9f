#!/usr/bin/env bash
# Build FerretDB v1.24.2 (SQLite backend) into .cache/ferretdb/bin, once; later calls reuse it.
#
# Why not plain `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`: we try it
# first, but (1) the module proxy reachable here refuses the @v/list lookup that go install
# makes for its deprecation check, and (2) the published module ships an empty
# build/version/version.txt, so a binary built from it panics at start ("Invalid
# build/version/version.txt"). So the fallback downloads that exact module version, writes
# version.txt as FerretDB's own `task gen-version` would, and builds ./cmd/ferretdb.
set -euo pipefail
VERSION=v1.24.2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/.cache/ferretdb"
BIN="$DEST/bin/ferretdb"

works() { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "version: $VERSION"; }
works && { echo "$BIN"; exit 0; }
command -v go >/dev/null || { echo "build-ferretdb: Go is needed to build FerretDB" >&2; exit 1; }
mkdir -p "$DEST/bin"

if GOBIN="$DEST/bin" go install "github.com/FerretDB/FerretDB/cmd/ferretdb@$VERSION" >"$DEST/install.log" 2>&1 && works; then
  echo "$BIN"; exit 0
fi

echo "build-ferretdb: go install did not give a working binary (see $DEST/install.log); building the $VERSION module source" >&2
module_dir=$(go mod download -json "github.com/FerretDB/FerretDB@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$module_dir" ] || { echo "build-ferretdb: could not download FerretDB $VERSION" >&2; exit 1; }
rm -rf "$DEST/src" && cp -r "$module_dir" "$DEST/src" && chmod -R u+w "$DEST/src"
echo "$VERSION" > "$DEST/src/build/version/version.txt"
(cd "$DEST/src" && go build -trimpath -o "$BIN" ./cmd/ferretdb) >"$DEST/build.log" 2>&1 || { cat "$DEST/build.log" >&2; exit 1; }
rm -rf "$DEST/src"
works || { echo "build-ferretdb: built binary does not report $VERSION" >&2; exit 1; }
echo "$BIN"

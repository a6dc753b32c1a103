#!/bin/sh
# Builds (once per source hash) a tarball of daolinet's wheel and the wheels of its
# pinned dependencies, on the control node.  Prints "changed <hash> <tarball>" when
# it built one and "ok <hash> <tarball>" when the cache already had it.
# Usage: wheelhouse.sh SOURCE_DIR CACHE_DIR PYTHON
set -eu
src=$1 cache=$2 python=$3
cd "$src"
files=$(find pyproject.toml README.md controller hostnet -type f \
  ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
hash=$(for f in $files; do sha256sum "$f"; done | sha256sum | cut -c1-16)
out=$cache/$hash/daolinet-wheelhouse.tar
if [ -f "$out" ]; then
  echo "ok $hash $out"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/wheels"
# Build from a copy: an in-tree build would leave build/ in the repository.
tar -cf - $files | tar -xf - -C "$work/src"
"$python" -m pip wheel -q --wheel-dir "$work/wheels" "$work/src" >&2
mkdir -p "$cache/$hash"
# Deterministic tarball: the same wheels give the same checksum on every run.
tar -C "$work/wheels" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "changed $hash $out"

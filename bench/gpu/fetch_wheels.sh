#!/usr/bin/env bash
# Downloads bench/gpu/wheels.txt as cp312 manylinux (or pure) wheels into .whl/ (git ignores it), each without its
# dependencies, reports the bundle's size against the 64 MiB a device call may carry, then checks that the bundle
# installs into a clean Python 3.12 target folder (no index: only what is in .whl/).
set -euo pipefail
cd "$(dirname "$0")/../.."
LIMIT=$((64 * 1024 * 1024))
PY312=${PY312:-$(command -v python3.12 || true)}
mkdir -p .whl
for requirement in $(grep -v '^#' bench/gpu/wheels.txt | grep .); do
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
        -d .whl "$requirement" 2>/dev/null \
    || python3 -m pip wheel --quiet --no-deps -w .whl "$requirement" 2>/dev/null  # pure-Python sdist only (antlr4 4.9.3)
done
size=$(du -cb .whl/*.whl | tail -1 | cut -f1)
ls -l .whl/*.whl | awk '{printf "  %10d  %s\n", $5, $9}'
echo "bundle: $(ls .whl/*.whl | wc -l) wheels, $size bytes ($(( size / 1024 / 1024 )) MiB) of $LIMIT allowed"
[ "$size" -le "$LIMIT" ] || { echo "error: the bundle is over 64 MiB"; exit 1; }
if [ -n "$PY312" ]; then
    target=$(mktemp -d)
    "$PY312" -m pip install --quiet --no-index --no-deps --target "$target" .whl/*.whl
    echo "installed into a clean Python 3.12 target ($("$PY312" --version)): $(ls "$target" | wc -l) entries, $(du -sb "$target" | cut -f1) bytes"
    rm -rf "$target"
else
    echo "no python3.12 here: install not checked"
fi

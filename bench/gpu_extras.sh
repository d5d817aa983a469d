#!/usr/bin/env bash
# The Python packages the GPU machine lacks besides DALI, for CPython 3.12: PyAV (the video
# check's reference decoder and its test-video encoder), matplotlib (a run's curves.png) and
# pillow. Writes .gpu/x/extras.tar.xz (about 31 MB, git-ignored), unpacked there with Python's
# own tarfile into /tmp/site, next to DALI:
#
#   bash bench/gpu_extras.sh        # here, once (about 5 minutes on 2 cores: xz -9)
#   # on the GPU machine, in the run that brings .gpu/x:
#   python3 -c "import tarfile; tarfile.open('.gpu/x/extras.tar.xz').extractall('/tmp/site')"
set -euo pipefail
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -qxF '/.gpu/' "$root/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >> "$root/.git/info/exclude"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64)
# numpy is on the machine already; the versions follow pyproject.toml's bounds.
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
    -d "$work/whl" "av>=12,<20" "matplotlib>=3.7,<4" "pillow>=10,<13"
rm -f "$work"/whl/numpy-* "$work"/whl/tzdata-*
mkdir -p "$work/site"
# Wheels are zip files; unpacking them is all an install into a path on PYTHONPATH needs.
for w in "$work"/whl/*.whl; do python3 -m zipfile -e "$w" "$work/site/"; done
find "$work/site" -name '*.so*' -type f -exec strip --strip-unneeded {} + 2>/dev/null || true
mkdir -p "$root/.gpu/x"
tar -cf - -C "$work/site" . | xz -9 -T0 > "$root/.gpu/x/extras.tar.xz"
du -sh "$root/.gpu/x/extras.tar.xz"

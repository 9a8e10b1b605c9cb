#!/usr/bin/env bash
# Build one tarball for installing BlastScope on a Raspberry Pi with no internet.
# Run on a workstation with internet (any OS pip runs on); it collects the wheels of
# blastscope[device] at the versions pinned in deploy/constraints-bookworm.txt for linux
# aarch64 (Raspberry Pi OS Bookworm 64-bit; --arch x86_64 for a Debian 12 PC) and CPython
# 3.11, the model bundle, the deploy scripts and a SHA256SUMS over everything, and signs the
# tarball (its sha256, Ed25519, in FILE.tar.gz.sig beside it) with the release key. On the Pi:
#   sudo deploy/install.sh --offline blastscope-offline-VERSION-ARCH.tar.gz   (the .sig beside it)
#
#   deploy/make-offline-bundle.sh --sign-key PEM [--out DIR] [--python PYTHON] [--arch aarch64|x86_64]
set -euo pipefail

SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$SOURCE/dist"
PYTHON="${PYTHON:-python3}"
PY_VERSION=3.11
ARCH=aarch64
SIGN_KEY=""

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
    --arch) ARCH="${2:?--arch needs aarch64 or x86_64}"; shift 2 ;;
    --sign-key) SIGN_KEY="${2:?--sign-key needs the Ed25519 private key (PEM)}"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "make-offline-bundle.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

if [ -z "$SIGN_KEY" ] || [ ! -f "$SIGN_KEY" ]; then
  echo "make-offline-bundle.sh: --sign-key PEM is required (a device installs only a tarball signed by a key it trusts)" >&2
  exit 2
fi

case "$ARCH" in
  aarch64|x86_64) ;;
  *) echo "make-offline-bundle.sh: --arch must be aarch64 or x86_64, not $ARCH" >&2; exit 2 ;;
esac
# Every manylinux tag Bookworm's glibc 2.36 accepts.
PLATFORMS=("manylinux2014_$ARCH")
for minor in 17 24 27 28 31 34 35 36; do PLATFORMS+=("manylinux_2_${minor}_$ARCH"); done

VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SOURCE/edge/__init__.py")"  # the one version (edge/__init__.py)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
BUNDLE="$WORK/blastscope-offline"
mkdir -p "$BUNDLE/wheels" "$OUT"

"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$BUNDLE/wheels" "$SOURCE"
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
"$PYTHON" -m pip download --quiet --only-binary=:all: --implementation cp --python-version "$PY_VERSION" \
  "${platform_args[@]}" --constraint "$SOURCE/deploy/constraints-bookworm.txt" \
  --find-links "$BUNDLE/wheels" --dest "$BUNDLE/wheels" "blastscope[device]==$VERSION"

mkdir -p "$BUNDLE/models" "$BUNDLE/deploy"
cp -R "$SOURCE/models/default" "$BUNDLE/models/default"
cp -R "$SOURCE"/deploy/* "$BUNDLE/deploy/"  # the district server's configuration (deploy/district/) too
cp "$SOURCE/README.md" "$BUNDLE/README.md"
(cd "$BUNDLE" && find . -type f -print0 | sort -z | xargs -0 sha256sum > "$WORK/SHA256SUMS")
mv "$WORK/SHA256SUMS" "$BUNDLE/SHA256SUMS"

TARBALL="$OUT/blastscope-offline-$VERSION-$ARCH.tar.gz"
tar -C "$WORK" -czf "$TARBALL" blastscope-offline
# The signature covers the tarball's sha256 (hex, no newline): install.sh checks it with the
# pinned public keys before it extracts anything.
sha256sum "$TARBALL" | cut -d' ' -f1 | tr -d '\n' > "$WORK/digest"
openssl pkeyutl -sign -inkey "$SIGN_KEY" -rawin -in "$WORK/digest" -out "$WORK/sig"
base64 -w0 "$WORK/sig" > "$TARBALL.sig"
echo "$TARBALL ($(du -h "$TARBALL" | cut -f1), $(find "$BUNDLE/wheels" -name '*.whl' | wc -l) wheels)"

#!/usr/bin/env bash
# Install or upgrade BlastScope on Raspberry Pi OS (Bookworm, 64-bit) or Debian 12. Idempotent.
#
#   sudo deploy/install.sh                       # online, from this source tree
#   sudo deploy/install.sh --offline FILE.tar.gz # no network: wheels, model and scripts from the tarball,
#                                                # after FILE.tar.gz.sig is verified with a release key
#   deploy/install.sh --dry-run                  # print every step, change nothing (extract nothing)
#   --trusted-key ed25519:BASE64                 # also accept tarballs signed by this key (your own builds)
#   --allow-downgrade                            # install a release older than the installed one, on purpose
#   --revoked-key ed25519:BASE64                 # refuse tarballs signed by this key (a key known lost)
#   deploy/install.sh --root /tmp/stage          # write the files under a staging root; print the
#                                                # steps that would change the host (apt, users, venv, systemd)
# Each install is a new folder /opt/blastscope/releases/VERSION-TIME (its own venv, model, scripts),
# switched in by one symlink (/opt/blastscope/current); the one before stays (previous) for
# /opt/blastscope/current/deploy/rollback.sh.
set -euo pipefail

APP=blastscope
ROOT=""
DRY_RUN=0
ALLOW_DOWNGRADE=0
OFFLINE=""
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The system interpreter: its numpy (1.24 on Bookworm) is the one picamera2 is built against.
SYSTEM_PYTHON="${SYSTEM_PYTHON:-/usr/bin/python3}"
# The BlastScope release keys (edge/model/signing.py RELEASE_KEYS; a test checks they agree).
# An offline tarball is used only when one of them (or a --trusted-key) signed it.
RELEASE_KEYS=(
  "ed25519:wLXqvPeObnuehlBsziM8wcO7Cvg04NwQC1Otns/Ikq8="
)
# Revoked: their private halves were lost (edge/model/signing.py REVOKED_KEYS; a test checks
# they agree). A tarball they signed is refused, even with --trusted-key.
REVOKED_KEYS=(
  "ed25519:0mvBUHKOFefV1Gi7as8eoh7PpWUBU7GI47eDnzcJkkc="
  "ed25519:CQwpClPq2PqeWSzD1g951r82d3mBZk4ZuhsikIEGmAw="
  "ed25519:JqhKLMI7b/1mbX7GL4jnheZ9Qgz1t01ZPfKRqYTxtnc="
  "ed25519:up/zgk5drL39cQmvhDPBcYFwE34t51s8Bmeoz4Tr4bI="
  "ed25519:LQIvzsLJdH6YvfwI0pEw2xsiFsMBsW5d4i3zRb5zou0="
  "ed25519:spqZVJtp+NtBItj5KHBcKDdezEREJFaJN0jI+NBaB5E="
)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --root) ROOT="${2:?--root needs a folder}"; shift 2 ;;
    --offline) OFFLINE="${2:?--offline needs a tarball}"; shift 2 ;;
    --trusted-key) RELEASE_KEYS+=("${2:?--trusted-key needs ed25519:BASE64}"); shift 2 ;;
    --allow-downgrade) ALLOW_DOWNGRADE=1; shift ;;
    --revoked-key) REVOKED_KEYS+=("${2:?--revoked-key needs ed25519:BASE64}"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

ROOT="${ROOT%/}"
OPT="$ROOT/opt/$APP"
ETC="$ROOT/etc/$APP"
STATE="$ROOT/var/lib/$APP"
UNIT="$ROOT/etc/systemd/system/$APP.service"

say() { printf '%s\n' "$*"; }

# A step that changes the host itself: skipped (printed) under --dry-run or --root.
host() {
  if [ "$DRY_RUN" = 1 ] || [ -n "$ROOT" ]; then
    say "would run: $*"
  else
    say "run: $*"
    "$@"
  fi
}

# A step that writes files under $ROOT: skipped (printed) under --dry-run only.
files() {
  if [ "$DRY_RUN" = 1 ]; then
    say "would run: $*"
  else
    "$@"
  fi
}

install_file() { # MODE SOURCE DEST
  files install -D -m "$1" "$2" "$3"
  say "installed $3"
}

if [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo), or use --dry-run / --root DIR" >&2
  exit 1
fi

# 1. Offline tarball: its signature first, before anything is extracted; then no links, no file
#    SHA256SUMS does not list, and every checksum.
signed_by() { # TARBALL SIGFILE: print the trusted key that signed the tarball's sha256, or fail
  local tmp key
  tmp="$(mktemp -d)"
  sha256sum "$1" | cut -d' ' -f1 | tr -d '\n' > "$tmp/digest"
  base64 -d "$2" > "$tmp/sig" 2>/dev/null || { rm -rf "$tmp"; return 1; }
  for key in "${RELEASE_KEYS[@]}"; do
    if printf '%s\n' "${REVOKED_KEYS[@]}" | grep -qxF -- "$key"; then continue; fi  # revoked: never trusted
    # an Ed25519 public key as SubjectPublicKeyInfo: a fixed 12-byte prefix, then the 32 bytes
    printf -- '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA%s\n-----END PUBLIC KEY-----\n' "${key#ed25519:}" > "$tmp/key.pem"
    if openssl pkeyutl -verify -pubin -inkey "$tmp/key.pem" -rawin -in "$tmp/digest" -sigfile "$tmp/sig" >/dev/null 2>&1; then
      rm -rf "$tmp"
      printf '%s\n' "$key"
      return 0
    fi
  done
  rm -rf "$tmp"
  return 1
}

if [ -n "$OFFLINE" ]; then
  [ -f "$OFFLINE" ] || { echo "install.sh: $OFFLINE: no such file" >&2; exit 2; }
  [ -f "$OFFLINE.sig" ] || { echo "install.sh: $OFFLINE.sig: no signature beside the tarball, nothing installed" >&2; exit 2; }
  command -v openssl >/dev/null || { echo "install.sh: openssl is needed to check the tarball's signature" >&2; exit 2; }
  # Check, then use, the same bytes (issue 36: swapping the file between the signature check and
  # the unpacking installed an unsigned unit in 6 of 30 tries): the tarball and its signature are
  # copied into a private directory only root can write, and both the check and the unpacking
  # read that copy, never the given path again.
  PRIVATE="$(mktemp -d)"
  chmod 700 "$PRIVATE"
  UNPACK="$PRIVATE/unpack"
  mkdir "$UNPACK"
  trap 'rm -rf "$PRIVATE"' EXIT
  cp -- "$OFFLINE" "$PRIVATE/offline.tar.gz"
  cp -- "$OFFLINE.sig" "$PRIVATE/offline.tar.gz.sig"
  if ! signer="$(signed_by "$PRIVATE/offline.tar.gz" "$PRIVATE/offline.tar.gz.sig")"; then
    echo "install.sh: $OFFLINE: not signed by a trusted key (or changed since it was signed), nothing installed" >&2
    exit 2
  fi
  say "signature of $OFFLINE verified (key $signer)"
  if [ "$DRY_RUN" = 1 ]; then
    say "would extract $OFFLINE and check its SHA256SUMS"
    SOURCE="$UNPACK/$APP-offline"
  else
    tar --no-same-owner --no-same-permissions -xzf "$PRIVATE/offline.tar.gz" -C "$UNPACK"
    SOURCE="$UNPACK/$APP-offline"
    [ -f "$SOURCE/SHA256SUMS" ] || { echo "install.sh: $OFFLINE: no SHA256SUMS inside, nothing installed" >&2; exit 2; }
    if [ -n "$(find "$UNPACK" -type l -o ! -type f ! -type d)" ]; then
      echo "install.sh: $OFFLINE: holds links or special files, nothing installed" >&2
      exit 2
    fi
    unlisted="$(cd "$SOURCE" && comm -23 <(find . -type f ! -path ./SHA256SUMS | LC_ALL=C sort) \
                                        <(sed 's/^[0-9a-f]*  //' SHA256SUMS | LC_ALL=C sort))"
    if [ -n "$unlisted" ]; then
      echo "install.sh: $OFFLINE: files SHA256SUMS does not list, nothing installed: $unlisted" >&2
      exit 2
    fi
    if ! (cd "$SOURCE" && sha256sum --quiet --strict -c SHA256SUMS); then
      echo "install.sh: $OFFLINE: checksum mismatch, nothing installed" >&2
      exit 2
    fi
    say "verified $OFFLINE"
  fi
  PIP_ARGS=(--no-index --find-links "$SOURCE/wheels")
else
  PIP_ARGS=()
fi
# 1b. No silent downgrade (issue 36: an older, validly signed tarball installed over a newer one):
#     the release's version against the one installed ($OPT/VERSION), refused when older unless
#     --allow-downgrade (going back on purpose: the record's schema may be newer; see docs/deploy.md).
if [ -n "$OFFLINE" ]; then
  wheel="$(find "$SOURCE/wheels" -maxdepth 1 -name "$APP-*.whl" 2>/dev/null | head -n 1 || true)"  # none under --dry-run
  wheel="${wheel##*/}"
  wheel="${wheel#"$APP"-}"
  NEW_VERSION="${wheel%%-*}"
else
  NEW_VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$SOURCE/edge/__init__.py" 2>/dev/null || true)"
fi
# the running release's; $OPT/VERSION is where releases before the versioned folders wrote it
INSTALLED_VERSION="$(cat "$OPT/current/VERSION" 2>/dev/null || cat "$OPT/VERSION" 2>/dev/null || true)"
if [ -z "$INSTALLED_VERSION" ] && [ -d "$OPT/venv" ]; then  # releases up to 0.3.0 wrote no VERSION: ask pip's record
  info="$(find "$OPT/venv" -maxdepth 4 -type d -name "$APP-*.dist-info" 2>/dev/null | head -n 1 || true)"
  info="${info##*/"$APP"-}"
  INSTALLED_VERSION="${info%.dist-info}"
fi
if [ -n "$NEW_VERSION" ] && [ -n "$INSTALLED_VERSION" ] && [ "$NEW_VERSION" != "$INSTALLED_VERSION" ] &&
   [ "$(printf '%s\n%s\n' "$NEW_VERSION" "$INSTALLED_VERSION" | sort -V | head -n 1)" = "$NEW_VERSION" ]; then
  if [ "$ALLOW_DOWNGRADE" != 1 ]; then
    echo "install.sh: release $NEW_VERSION is older than the installed $INSTALLED_VERSION, nothing installed" \
         "(--allow-downgrade to go back on purpose)" >&2
    exit 2
  fi
  say "going back from $INSTALLED_VERSION to $NEW_VERSION (--allow-downgrade)"
fi
[ -n "$NEW_VERSION" ] && say "release ${NEW_VERSION}${INSTALLED_VERSION:+ (installed: $INSTALLED_VERSION)}"

# 1c. This release's own folder (issue 36: the venv was upgraded in place and nothing could go
#     back): everything of the release goes in, the running one is not touched until the switch.
RELEASES="$OPT/releases"
RELEASE_NAME="${NEW_VERSION:-unversioned}-$(date -u +%Y%m%dT%H%M%SZ)"
RELEASE="$RELEASES/$RELEASE_NAME"
VENV="$RELEASE/venv"
# A device installed before the versioned folders has its software in $OPT/venv: adopted as a
# release (links to where it is; a venv cannot move), so a rollback can go back to it.
if [ -d "$OPT/venv" ] && [ ! -L "$OPT/venv" ] && [ ! -L "$OPT/current" ]; then
  legacy="$RELEASES/${INSTALLED_VERSION:-0.0.0}-legacy"
  files mkdir -p "$legacy"
  files ln -sfn ../../venv "$legacy/venv"
  files ln -sfn ../../models "$legacy/models"
  if [ "$DRY_RUN" = 1 ]; then say "would write $legacy/VERSION"; else printf '%s\n' "${INSTALLED_VERSION:-0.0.0}" > "$legacy/VERSION"; fi
  files ln -sfn "releases/${legacy##*/}" "$OPT/current"
  say "adopted the release installed in $OPT/venv as ${legacy##*/}"
fi
if [ -e "$RELEASE" ]; then RELEASE_NAME="$RELEASE_NAME-$$"; RELEASE="$RELEASES/$RELEASE_NAME"; VENV="$RELEASE/venv"; fi
files mkdir -p "$RELEASE"

CONSTRAINTS="$SOURCE/deploy/constraints-bookworm.txt"
# The device extra under the tested pins: numpy stays the system's (see the constraints file).
PIP_ARGS+=(--constraint "$CONSTRAINTS")
if [ -n "$OFFLINE" ]; then PIP_ARGS+=("${APP}[device]"); else PIP_ARGS+=("${SOURCE}[device]"); fi

# 2. System packages. picamera2 and systemd come from Raspberry Pi OS (picamera2 only there:
#    on plain Debian 12 the camera is then opencv:N or replay:PATH); the Edge TPU runtime,
#    libedgetpu1-std, from Coral's apt repository when it is configured. pycoral is never
#    asked for: Coral packages it only for Python < 3.10, and the runtime's own delegate
#    drives the Edge TPU without it. A package that is not available is reported, never fatal.
# polkitd: lets the daemon's user, and only it, set the clock through timedated (an admin sets a
# Pi's clock to their phone's time from the page; deploy/50-blastscope-clock.rules)
APT_PACKAGES=(python3-venv python3-numpy python3-picamera2 python3-systemd python3-gpiozero avahi-daemon polkitd)
if ls "$ROOT"/etc/apt/sources.list.d/coral-edgetpu*.list >/dev/null 2>&1; then
  APT_PACKAGES+=(libedgetpu1-std)
else
  say "note: Coral's apt repository is not configured; the Edge TPU runtime is not installed (CPU only)"
fi
available=()
for pkg in "${APT_PACKAGES[@]}"; do
  if [ -n "$OFFLINE" ]; then  # nothing can be fetched: use what the image already has
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ]; then
      available+=("$pkg")
    else
      say "note: $pkg is not installed and cannot be fetched offline; going on without it"
    fi
  elif [[ "$(apt-cache policy "$pkg" 2>/dev/null || true)" =~ Candidate:\ [^\(] ]]; then
    available+=("$pkg")
  else
    say "note: $pkg is not available from this system's apt sources; going on without it"
  fi
done
if [ -z "$OFFLINE" ] && [ ${#available[@]} -gt 0 ]; then
  host apt-get install -y "${available[@]}"
fi

# 3. The service user, allowed to use cameras (video) and the Coral USB (plugdev).
if id -u "$APP" >/dev/null 2>&1 && [ -z "$ROOT" ]; then
  host usermod -a -G video,plugdev "$APP"
else
  host useradd --system --home-dir "/var/lib/$APP" --shell /usr/sbin/nologin --groups video,plugdev "$APP"
fi

# 4. The application: a virtual environment that also sees the system picamera2 and systemd,
#    in this release's folder.
host "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
host "$VENV/bin/pip" install --upgrade "${PIP_ARGS[@]}"
# The project itself once more, whatever its version says: pip keeps an installed package of the
# same version ("already satisfied") even when its code changed, so an upgrade kept the old code.
if [ -n "$OFFLINE" ]; then
  SELF=("$SOURCE"/wheels/"$APP"-*.whl)
  host "$VENV/bin/pip" install --force-reinstall --no-deps --no-index "${SELF[0]}"
else
  host "$VENV/bin/pip" install --force-reinstall --no-deps "$SOURCE"
fi

# 5. The shipped model bundle, the configuration (kept on upgrade), the service files.
files mkdir -p "$RELEASE/models"
files cp -R "$SOURCE/models/default" "$RELEASE/models/default"
files install -m 0644 "$SOURCE/README.md" "$RELEASE/README.md"
files install -D -m 0755 "$SOURCE/deploy/rollback.sh" "$RELEASE/deploy/rollback.sh"
# readable by the service user, whatever the source's modes; find never follows a link (not even
# a link planted as the folder itself), where chmod -R follows one named on its command line
files find "$RELEASE/models" \( -type d -exec chmod 0755 {} + \) -o \( -type f -exec chmod 0644 {} + \)
say "installed $RELEASE/models/default"
if [ "$DRY_RUN" = 1 ]; then
  say "would write $RELEASE/VERSION (${NEW_VERSION:-unversioned})"
else
  printf '%s\n' "${NEW_VERSION:-unversioned}" > "$RELEASE/VERSION"
fi
if [ -f "$ETC/config.toml" ]; then
  say "kept $ETC/config.toml"
else
  files install -D -m 0640 "$SOURCE/deploy/config.example.toml" "$ETC/config.toml"
  files sed -i "s|^state_dir = \"\"|state_dir = \"/var/lib/$APP\"|" "$ETC/config.toml"
  say "installed $ETC/config.toml"
fi
install_file 0644 "$SOURCE/deploy/blastscope.service" "$UNIT"
install_file 0644 "$SOURCE/deploy/99-coral-edgetpu.rules" "$ROOT/etc/udev/rules.d/99-coral-edgetpu.rules"
install_file 0644 "$SOURCE/deploy/blastscope.avahi.service" "$ROOT/etc/avahi/services/$APP.service"
install_file 0644 "$SOURCE/deploy/50-blastscope-clock.rules" "$ROOT/etc/polkit-1/rules.d/50-blastscope-clock.rules"
# announce the port the daemon listens on: the config's [server] port (8080 unless changed)
PORT=""
if [ -f "$ETC/config.toml" ]; then  # not under --dry-run of a first install: nothing was written
  PORT="$(sed -n '/^\[server\]/,/^\[/s/^port *= *\([0-9][0-9]*\).*/\1/p' "$ETC/config.toml" | head -n 1)"
fi
files sed -i "s|<port>[0-9]*</port>|<port>${PORT:-8080}</port>|" "$ROOT/etc/avahi/services/$APP.service"
files mkdir -p "$STATE"
host chown -R "$APP:$APP" "/var/lib/$APP"
host chgrp "$APP" "/etc/$APP/config.toml"

# 5b. The switch: the release's files on disk (fsync) before one rename makes it the running one;
#     the release it replaces is kept as "previous" (deploy/rollback.sh goes back to it), older
#     ones are removed. INSTALLED marks the time: a record copied before a migration after it
#     belongs to this release (rollback.sh restores only such a copy).
files touch "$RELEASE/INSTALLED"
files sync
old_current="$(readlink "$OPT/current" 2>/dev/null || true)"
if [ -n "$old_current" ] && [ "$old_current" != "releases/$RELEASE_NAME" ]; then
  files ln -sfn "$old_current" "$OPT/.previous.new"
  files mv -T "$OPT/.previous.new" "$OPT/previous"
fi
files ln -sfn "releases/$RELEASE_NAME" "$OPT/.current.new"
files mv -T "$OPT/.current.new" "$OPT/current"
files sync
say "switched $OPT/current to releases/$RELEASE_NAME${old_current:+ (previous: ${old_current#releases/})}"
if [ "$DRY_RUN" = 0 ] && [ -d "$RELEASES" ]; then
  keep_previous="$(readlink "$OPT/previous" 2>/dev/null || true)"
  for dir in "$RELEASES"/*/; do
    dir="${dir%/}"
    case "releases/${dir##*/}" in "releases/$RELEASE_NAME"|"$keep_previous") continue ;; esac
    rm -rf -- "$dir"
    say "removed the release before the previous one: ${dir##*/}"
    if [ "${dir##*-}" = legacy ]; then rm -rf -- "$OPT/venv" "$OPT/models" "$OPT/VERSION" "$OPT/README.md"; fi
  done
fi

# 6. First model: the shipped bundle, unless a model was installed before (upgrades keep it).
if [ -e "$STATE/models/current" ]; then
  # an upgrade takes the release's model when it is newer (model install refuses an older one and
  # keeps what runs): an upgraded device must not keep an old model without saying so
  model_before="$(readlink "$STATE/models/current" 2>/dev/null || true)"
  if host runuser -u "$APP" -- "$VENV/bin/blastscope-edge" model install "$RELEASE/models/default" \
       --config "/etc/$APP/config.toml"; then
    # when the model changed, rollback.sh takes it back too: the older release may not read it
    if [ "$(readlink "$STATE/models/current" 2>/dev/null || true)" != "$model_before" ]; then
      files touch "$RELEASE/MODEL_INSTALLED"
    fi
  else
    say "kept the installed model ($STATE/models/current): the release's model is not newer"
  fi
else
  host runuser -u "$APP" -- "$VENV/bin/blastscope-edge" model install "$RELEASE/models/default" --config "/etc/$APP/config.toml"
fi

# 7. Start (or restart) everything, where systemd runs (not in a chroot or a container).
if [ -n "$ROOT" ] || [ "$DRY_RUN" = 1 ] || [ -d /run/systemd/system ]; then
  host udevadm control --reload-rules
  host udevadm trigger --subsystem-match=usb
  host systemctl daemon-reload
  host systemctl enable --now avahi-daemon
  host systemctl enable "$APP.service"
  host systemctl restart "$APP.service"
else
  say "note: systemd is not running here; start the daemon with the unit's ExecStart as user $APP"
fi

# 8. What will run: the camera stack and the inference backend this machine can use.
if [ -n "$ROOT" ] || [ "$DRY_RUN" = 1 ]; then
  say "would check: picamera2 and the TFLite runtime import in $VENV, libedgetpu.so.1 is present"
else
  if "$VENV/bin/python" -c "import picamera2" >/dev/null 2>&1; then
    say "camera: picamera2 imports beside numpy $("$VENV/bin/python" -c 'import numpy; print(numpy.__version__)')"
  else
    say "camera: picamera2 does not import here; set camera.source to opencv:N or replay:PATH in /etc/$APP/config.toml"
  fi
  if ldconfig -p 2>/dev/null | grep -q 'libedgetpu\.so\.1'; then
    say "inference: Edge TPU runtime libedgetpu.so.1 present; the CPU is the fallback"
  else
    say "inference: CPU ($("$VENV/bin/python" -c 'from edge.model.runtime import interpreter_module; print(interpreter_module()[1])')); no libedgetpu.so.1 for the Edge TPU"
  fi
fi
say "done. The PIN and API token are created at the first start; show them with: sudo /opt/$APP/current/venv/bin/blastscope-edge credentials --config /etc/$APP/config.toml"

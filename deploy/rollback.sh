#!/usr/bin/env bash
# Go back to the release installed before the running one (issue 36), with the record as it was
# before the running release migrated it. Run as root, on the device:
#
#   sudo /opt/blastscope/current/deploy/rollback.sh            # stop, go back, start
#   /opt/blastscope/current/deploy/rollback.sh --dry-run       # print every step, change nothing
#   --root DIR                                                 # a staging or chroot root (no systemd)
#
# What it does, in order: stops the service; when the running release copied the record before
# migrating it, puts that copy back (the migrated record, with the fields read since, is set
# aside beside it, never deleted: `blastscope-edge record rollback`); switches
# /opt/blastscope/current to the previous release by one rename (the release it leaves becomes
# "previous"); when the running release had installed its model, takes the model back too
# (`model rollback`, by the older release: it may not read the newer model); starts the service.
# Upgrading again is install.sh again.
set -euo pipefail

APP=blastscope
ROOT=""
DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --root) ROOT="${2:?--root needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "rollback.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT="${ROOT%/}"
OPT="$ROOT/opt/$APP"
STATE="$ROOT/var/lib/$APP"
CONFIG="/etc/$APP/config.toml"

say() { printf '%s\n' "$*"; }
run() {
  if [ "$DRY_RUN" = 1 ]; then say "would run: $*"; else say "run: $*"; "$@"; fi
}
# as the service user, inside ROOT when one is given (a chroot holds the release's venv)
as_app() {
  if [ -n "$ROOT" ]; then run chroot "$ROOT" runuser -u "$APP" -- "$@"; else run runuser -u "$APP" -- "$@"; fi
}

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "rollback.sh: run as root (sudo), or use --dry-run" >&2
  exit 1
fi
current="$(readlink "$OPT/current" 2>/dev/null || true)"
previous="$(readlink "$OPT/previous" 2>/dev/null || true)"
if [ -z "$current" ] || [ -z "$previous" ] || [ ! -d "$OPT/$previous" ]; then
  echo "rollback.sh: no previous release is kept in $OPT (current: ${current:-none}, previous: ${previous:-none});" \
       "nothing changed" >&2
  exit 2
fi
from_version="$(cat "$OPT/$current/VERSION" 2>/dev/null || echo unknown)"
to_version="$(cat "$OPT/$previous/VERSION" 2>/dev/null || echo unknown)"
say "going back from $from_version (${current#releases/}) to $to_version (${previous#releases/})"

systemd_here=0
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then systemd_here=1; fi
if [ "$systemd_here" = 1 ]; then run systemctl stop "$APP.service"; fi

# the record: only a copy made after this release was switched in belongs to its migration
edge="/opt/$APP/$current/venv/bin/blastscope-edge"
if [ -f "$OPT/$current/INSTALLED" ] &&
   [ -n "$(find "$STATE" -maxdepth 1 -name 'results.db.before-schema-*' ! -name '*-wal' ! -name '*-shm' \
           -newer "$OPT/$current/INSTALLED" 2>/dev/null | head -n 1)" ]; then
  as_app "$edge" record rollback --config "$CONFIG"
else
  say "the record was not migrated by ${current#releases/}: kept as it is"
fi
# one rename switches the software; the release left becomes "previous"
run sync
run ln -sfn "$previous" "$OPT/.current.new"
run mv -T "$OPT/.current.new" "$OPT/current"
run ln -sfn "$current" "$OPT/.previous.new"
run mv -T "$OPT/.previous.new" "$OPT/previous"
run sync
say "switched $OPT/current to ${previous#releases/} ($to_version)"
# the model after the switch, by the release going back into service: its own trust list checks
# the model it ran before, and the audit row lands in the record it reads from now on
if [ -f "$OPT/$current/MODEL_INSTALLED" ]; then
  as_app "/opt/$APP/current/venv/bin/blastscope-edge" model rollback --config "$CONFIG"
fi

if [ "$systemd_here" = 1 ]; then
  run systemctl start "$APP.service"
else
  say "note: systemd is not running here; start the daemon with the unit's ExecStart as user $APP"
fi

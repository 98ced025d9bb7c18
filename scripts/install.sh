#!/usr/bin/env bash
# Installs voice-edge as a systemd service on this machine. Idempotent: a
# second run changes nothing that is already in place, and an existing
# /etc/voice-edge/voice-edge.toml is never overwritten.
#
#   scripts/install.sh [--dry-run] [--binary FILE] [--config FILE]
#                      [--models default|test|all|none] [--root DIR]
#
#   --dry-run   print every action instead of doing it (changes nothing)
#   --binary    the voice-edge binary (default: the release build of
#               scripts/setup.sh, $CARGO_TARGET_DIR/release/voice-edge)
#   --config    config to install when none exists (default: configs/voice-edge.toml)
#   --models    model set to fetch into the cache directory (default: default)
#   --root      install under DIR instead of / (building an image); the
#               user, model fetch and systemctl steps are then only printed
#
# What it does: binary -> /usr/local/bin, unit -> /etc/systemd/system,
# config -> /etc/voice-edge (if absent), docs -> /usr/local/share/doc,
# the voice-edge system user (the unit runs as User=voice-edge), models ->
# /var/cache/voice-edge/models (the unit's CacheDirectory=), then
# `systemctl daemon-reload`. It does not enable or start the service.
set -euo pipefail

dry_run=0
binary=""
config_src="configs/voice-edge.toml"
models_set="default"
root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --binary) binary="$2"; shift 2 ;;
    --config) config_src="$2"; shift 2 ;;
    --models) models_set="$2"; shift 2 ;;
    --root) root="${2%/}"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$models_set" in default|test|all|none) ;; *) echo "install.sh: --models must be default, test, all or none" >&2; exit 2 ;; esac
# Paths given relative to the caller's directory, before moving to the repo.
abs() { case "$1" in /*|"") printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
binary="$(abs "$binary")"
root="$(abs "$root")"
[ "$config_src" = "configs/voice-edge.toml" ] || config_src="$(abs "$config_src")"
cd "$(dirname "$0")/.."

unit_src="systemd/voice-edge.service"
bin_dst="$root/usr/local/bin/voice-edge"
unit_dst="$root/etc/systemd/system/voice-edge.service"
config_dir="$root/etc/voice-edge"
config_dst="$config_dir/voice-edge.toml"
doc_dir="$root/usr/local/share/doc/voice-edge"
cache_dir="$root/var/cache/voice-edge"
models_dir="$cache_dir/models"
service_user="$(sed -n 's/^User=//p' "$unit_src" | head -1)"
dynamic_user="$(sed -n 's/^DynamicUser=//p' "$unit_src" | head -1)"

say() { printf '==> %s\n' "$*" >&2; }
# Runs a command, or prints it in --dry-run.
run() {
  if [ "$dry_run" = 1 ]; then
    printf 'would run:'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
# Installs $2 at $3 with mode $1 unless an identical file is already there.
install_file() {
  local mode="$1" src="$2" dst="$3"
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    say "unchanged: $dst"
  else
    say "installing $dst"
    run install -D -m "$mode" "$src" "$dst"
  fi
}

if [ -z "$binary" ]; then
  binary="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-edge/target}/release/voice-edge"
fi
[ -x "$binary" ] || { echo "install.sh: no voice-edge binary at $binary: build it (scripts/setup.sh) or pass --binary" >&2; exit 1; }
[ -f "$config_src" ] || { echo "install.sh: config $config_src does not exist" >&2; exit 1; }
if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or with --dry-run to see what it would do)" >&2; exit 1
fi
[ "$dry_run" = 1 ] && say "dry run: nothing is changed"

install_file 0755 "$binary" "$bin_dst"
install_file 0644 "$unit_src" "$unit_dst"
install_file 0644 docs/OPERATIONS.md "$doc_dir/OPERATIONS.md"
install_file 0644 systemd/README.md "$doc_dir/systemd.md"

# The service user, unless the unit asks systemd for a dynamic one.
user_owner="root"
if [ -n "$service_user" ] && [ "$dynamic_user" != "yes" ]; then
  user_owner="$service_user"
  if [ -n "$root" ]; then
    say "--root: create the system user $service_user in the image yourself"
  elif getent passwd "$service_user" >/dev/null; then
    say "unchanged: user $service_user"
  else
    say "creating system user $service_user"
    run useradd --system --user-group --home-dir /var/lib/voice-edge --no-create-home \
      --shell /usr/sbin/nologin --comment "voice-edge service" "$service_user"
  fi
fi

# The config: installed once, then the operator's.
if [ -e "$config_dst" ]; then
  say "keeping existing $config_dst"
else
  say "installing $config_dst from $config_src"
  run install -D -m 0640 "$config_src" "$config_dst"
  if [ -z "$root" ]; then run chgrp "$user_owner" "$config_dst"; fi
fi

# Models into the cache directory the unit gives the service.
if [ "$models_set" = none ]; then
  say "models: skipped (--models none)"
elif [ -n "$root" ]; then
  say "--root: fetch models later with: voice-edge models fetch --set $models_set --dir /var/cache/voice-edge/models"
else
  say "models: set '$models_set' into $models_dir"
  run install -d -m 0750 "$cache_dir" "$models_dir"
  run "$bin_dst" models fetch --set "$models_set" --dir "$models_dir" --quiet
  run chown -R "$user_owner:$user_owner" "$cache_dir"
fi

if [ -z "$root" ]; then
  # The config as the service will load it (models resolved in the cache).
  say "checking $config_dst"
  run env VOICE_EDGE_MODELS_DIR="$models_dir" "$bin_dst" check-config "$config_dst" \
    || say "WARNING: check-config failed: fix $config_dst before starting the service"
fi

if [ -n "$root" ]; then
  say "--root: run 'systemctl daemon-reload' on the target"
elif [ -d /run/systemd/system ]; then
  run systemctl daemon-reload
else
  say "systemd is not running here: skipping systemctl daemon-reload"
fi
say "done; start with: systemctl enable --now voice-edge"

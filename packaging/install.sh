#!/usr/bin/env bash
# Installs mountctl on this machine: fuse3 if missing, a release build, and the
# binary in /usr/local/bin (or $PREFIX/bin). Run from anywhere in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}

if ! command -v fusermount3 >/dev/null 2>&1; then
  echo "install: fuse3 is missing; installing it"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq fuse3 >/dev/null
fi
if [ ! -c /dev/fuse ]; then
  echo "install: /dev/fuse is missing; FUSE mounts are impossible here (try: modprobe fuse)" >&2
  exit 1
fi

cargo build --release -p mountctl
install -D -m 0755 target/release/mountctl "$prefix/bin/mountctl"
echo "install: $prefix/bin/mountctl"
# The man page, shell completion and the systemd user unit, generated from
# and matching this build.
"$prefix/bin/mountctl" man > /tmp/mountctl.1 && install -D -m 0644 /tmp/mountctl.1 "$prefix/share/man/man1/mountctl.1" && rm -f /tmp/mountctl.1
"$prefix/bin/mountctl" completions bash > /tmp/mountctl.bash && install -D -m 0644 /tmp/mountctl.bash "$prefix/share/bash-completion/completions/mountctl" && rm -f /tmp/mountctl.bash
sed "s#/usr/local/bin/mountctl#$prefix/bin/mountctl#g" packaging/lattice@.service > /tmp/lattice@.service
install -D -m 0644 /tmp/lattice@.service "$prefix/lib/systemd/user/lattice@.service" && rm -f /tmp/lattice@.service
echo "install: man page, bash completion and the user unit lattice@.service under $prefix"

#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: a release build, then the man
# page, bash completion and systemd user unit generated from it (so they
# match the binary), then `cargo deb --no-build`. Prints the .deb's path.
#   bash packaging/deb.sh        (installs cargo-deb first if it is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb >&2
cargo build --release -p mountctl >&2
target=${CARGO_TARGET_DIR:-target}
assets=packaging/deb
mkdir -p "$assets"
"$target/release/mountctl" man > "$assets/mountctl.1"
"$target/release/mountctl" completions bash > "$assets/mountctl.bash"
sed "s#/usr/local/bin/mountctl#/usr/bin/mountctl#g" packaging/lattice@.service > "$assets/lattice@.service"
cargo deb -p mountctl --no-build --no-strip 2>&1 | tail -1

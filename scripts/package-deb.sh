#!/usr/bin/env bash
# Build the renkei Debian package (cargo-deb): the binaries, their completions
# and man pages generated from the binaries themselves, the systemd units of
# packaging/systemd and the sample configurations as /etc/renkei/*.toml.
# Prints the path of the .deb. Install with `dpkg -i`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
    echo "installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi
cargo build --release --locked --bins

gen=target/release/doc-gen
rm -rf "$gen"
mkdir -p "$gen"/man1 "$gen"/man8 "$gen"/bash "$gen"/zsh "$gen"/fish
for b in renkei renkei-meta renkei-server vpe; do
    "target/release/$b" man "$gen/man1" >/dev/null
    "target/release/$b" completions bash >"$gen/bash/$b"
    "target/release/$b" completions zsh >"$gen/zsh/_$b"
    "target/release/$b" completions fish >"$gen/fish/$b.fish"
done
mv "$gen"/man1/*.8 "$gen/man8/"
gzip -9n "$gen"/man1/* "$gen"/man8/*

cargo deb -p fs-client --no-build --locked --strip

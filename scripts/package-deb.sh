#!/usr/bin/env bash
# Builds the Debian package target/debian/claimfab_VERSION-1_ARCH.deb: the release binary,
# its man pages (claimfab man) and shell completions (claimfab completions), the example
# station file under /usr/share/doc/claimfab/examples. cargo-deb (pinned) is installed into
# .tools/ (git-ignored) the first time. Install the result with `sudo apt install ./FILE.deb`.
# Not part of CI (a release build takes minutes); scripts/deb/test-deb.sh builds, installs
# and checks it.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
# The package's assets are named under ./target (Cargo.toml's [package.metadata.deb]).
unset CARGO_TARGET_DIR

CARGO_DEB_VERSION=3.8.0
tools="$PWD/.tools"
if ! "$tools/bin/cargo-deb" --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "package-deb: installing cargo-deb $CARGO_DEB_VERSION into .tools/" >&2
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" --root "$tools"
fi

cargo build --release --locked
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man"
target/release/claimfab man --out "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1
target/release/claimfab completions bash >"$assets/claimfab.bash"
target/release/claimfab completions zsh >"$assets/_claimfab"
target/release/claimfab completions fish >"$assets/claimfab.fish"

PATH="$tools/bin:$PATH" cargo deb --no-build --locked

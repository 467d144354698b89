#!/usr/bin/env bash
# Builds the Debian package (scripts/package-deb.sh), installs it with dpkg as a user would,
# and checks what it installed: the binary runs from /usr/bin, man finds its pages, bash
# completes with the installed script, the example station file is the repository's, dpkg's
# own audit is clean; then removes it. Outside CI: it needs root and a release build (see
# the README for how long it takes): `sudo bash scripts/deb/test-deb.sh` builds as the user
# who ran sudo (so target/ and .tools/ stay theirs), then installs as root.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then fail "run as root (it installs the package)"; fi
if dpkg -s claimfab >/dev/null 2>&1; then fail "claimfab is already installed; remove it first"; fi

started=$(date +%s)
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    # A login shell of that user: their cargo on PATH, their files.
    sudo -u "$SUDO_USER" -i bash -c "cd '$PWD' && bash scripts/package-deb.sh"
else
    bash scripts/package-deb.sh
fi
deb=$(ls -t target/debian/claimfab_*.deb | head -1)
echo "test-deb: built $deb in $(( $(date +%s) - started )) s"
trap 'dpkg -r claimfab >/dev/null 2>&1 || true' EXIT

dpkg-deb --info "$deb" | grep -q "Depends: .*libc6" || fail "no libc6 dependency in the control file"
dpkg -i "$deb" >/dev/null
[ "$(command -v claimfab)" = /usr/bin/claimfab ] || fail "claimfab is not /usr/bin/claimfab"
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
[ "$(claimfab --version)" = "claimfab $version" ] || fail "claimfab --version: $(claimfab --version)"
for page in claimfab claimfab-take claimfab-batch; do
    man -w "$page" >/dev/null 2>&1 || fail "man does not find $page"
done
man -P cat claimfab-take 2>/dev/null | grep -q -- "--station-config" || fail "claimfab-take(1) lacks --station-config"
completed=$(bash --norc --noprofile -c '
    source /usr/share/bash-completion/completions/claimfab
    COMP_WORDS=(claimfab ro); COMP_CWORD=1
    _claimfab claimfab ro claimfab; printf "%s\n" "${COMPREPLY[@]}"')
[ "$completed" = rotate ] || fail "bash completes 'claimfab ro' as '$completed'"
[ -s /usr/share/zsh/vendor-completions/_claimfab ] || fail "no zsh completion"
[ -s /usr/share/fish/vendor_completions.d/claimfab.fish ] || fail "no fish completion"
# The unit tests parse station-config/example.toml; the package must ship it unchanged.
cmp -s /usr/share/doc/claimfab/examples/station.toml station-config/example.toml \
    || fail "the example station file differs from station-config/example.toml"
dpkg --audit claimfab | grep . && fail "dpkg --audit reports problems"
dpkg -r claimfab >/dev/null
[ ! -e /usr/bin/claimfab ] || fail "dpkg -r left /usr/bin/claimfab"
echo "test-deb: ok ($(( $(date +%s) - started )) s in all)"

#!/usr/bin/env bash
# Makes the local AWS IoT data plane ready (scripts/local-aws/local_endpoint.py --data-plane):
#   * installs Debian's mosquitto (the broker, 2.0.11 on bookworm), mosquitto-dev and
#     libmosquitto-dev (plugin headers) and libssl-dev when any is missing (apt-get, as root);
#   * builds the broker plugin scripts/local-aws/dataplane/claimfab_auth.c with gcc into
#     <repo>/.venv/dataplane/claimfab_auth.so (git-ignored with .venv), only when the
#     source, this script or the mosquitto version changed (stamp: claimfab_auth.so.sha256).
# Prints the plugin's path on stdout when asked with --print-path; otherwise silent on
# stdout, one line on stderr when it installs or builds, the reason and a non-zero exit on
# failure. Concurrent callers are serialized with flock on this file.
set -euo pipefail

repo="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../../.." && pwd -P)"
src="$repo/scripts/local-aws/dataplane/claimfab_auth.c"
out_dir="$repo/.venv/dataplane"
out="$out_dir/claimfab_auth.so"
stamp="$out.sha256"

die() {
    printf 'ensure-dataplane: %s\n' "$*" >&2
    exit 1
}

if command -v flock >/dev/null 2>&1; then
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
fi

missing=()
command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
[[ -f /usr/include/mosquitto_broker.h && -f /usr/include/mosquitto_plugin.h ]] || missing+=(mosquitto-dev)
[[ -f /usr/include/mosquitto.h ]] || missing+=(libmosquitto-dev)
[[ -f /usr/include/openssl/x509.h ]] || missing+=(libssl-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    log="$(mktemp)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        tail -n 20 "$log" | cut -c1-400 >&2
        rm -f "$log"
        die "apt-get install ${missing[*]} failed (output above; run as root)"
    fi
    rm -f "$log"
    printf 'ensure-dataplane: installed %s\n' "${missing[*]}" >&2
fi

mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
version="$(dpkg-query -W -f='${Version}' mosquitto 2>/dev/null || "$mosquitto_bin" -h 2>&1 | head -n1)"
want="$(cat "$src" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1) $version"

if [[ ! -f "$out" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    mkdir -p "$out_dir"
    rm -f "$stamp"
    if ! gcc -std=gnu11 -O2 -Wall -Wextra -Werror -fPIC -shared -fvisibility=default \
        -o "$out.tmp" "$src" -lcrypto 2>"$out_dir/build.log"; then
        cat "$out_dir/build.log" >&2
        die "gcc could not build $src"
    fi
    mv -f "$out.tmp" "$out"
    printf '%s\n' "$want" >"$stamp.tmp"
    mv -f "$stamp.tmp" "$stamp"
    printf 'ensure-dataplane: built %s\n' "$out" >&2
fi

if [[ "${1:-}" == "--print-path" ]]; then
    printf '%s\n' "$out"
fi

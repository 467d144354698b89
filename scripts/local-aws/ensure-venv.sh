#!/usr/bin/env bash
# Makes <repo>/.venv ready for the local AWS (scripts/local-aws/: the endpoint, its data plane's
# service and the test device; requirements.txt beside this script), or, with arguments
# `VENV REQUIREMENTS` (relative to the repo), another environment (the benchmark's:
# .venv-bench scripts/bench/requirements.txt).
#
# Idempotent: creates the venv with `python3 -m venv` when it is missing or broken, and
# pip-installs the requirements only when that file's sha256 differs from the stamp left by
# the last successful install (VENV/.requirements.sha256).
# Needs only python3 (with venv and pip) and access to PyPI for an install.
# Silent on stdout; on an install, one line on stderr; on failure, the reason on stderr and a
# non-zero exit.
set -euo pipefail

repo="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
venv="$repo/${1:-.venv}"
req="$repo/${2:-scripts/local-aws/requirements.txt}"
stamp="$venv/.requirements.sha256"
python=python3

die() {
    printf 'ensure-venv: %s\n' "$*" >&2
    exit 1
}

[[ -f "$req" ]] || die "missing $req"

# Serialize concurrent callers (parallel tests) on this script's own file; no lock file needed.
if command -v flock >/dev/null 2>&1; then
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
fi

want="$(sha256sum "$req" | cut -d' ' -f1)"

# A venv whose interpreter no longer runs (python3 upgraded or moved) is rebuilt from scratch.
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        exit 0
    fi
else
    command -v "$python" >/dev/null 2>&1 || die "$python not found; install Python 3.11 with venv and pip"
    log="$(mktemp)"
    if ! "$python" -m venv --clear "$venv" >"$log" 2>&1; then
        tail -n 20 "$log" | cut -c1-400 >&2
        rm -f "$log"
        die "could not create $venv with '$python -m venv' (on Debian: apt-get install python3-venv)"
    fi
    rm -f "$log"
fi

rm -f "$stamp"
log="$(mktemp)"
if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    "$venv/bin/python" -m pip install --quiet --only-binary=:all: --requirement "$req" >"$log" 2>&1; then
    tail -n 30 "$log" | cut -c1-400 >&2
    rm -f "$log"
    die "pip install -r $req into $venv failed (output above)"
fi
rm -f "$log"

printf '%s\n' "$want" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
printf 'ensure-venv: installed %s into %s\n' "$req" "$venv" >&2

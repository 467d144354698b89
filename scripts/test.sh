#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs openssl, groff and chromium if missing, the
# local AWS (scripts/local-aws/: Python venv in .venv, and its data plane: Debian's mosquitto
# and headers, the broker plugin built into .venv/dataplane/), checks formatting and lints,
# runs the Python unit tests (the local AWS's: the data plane's policy and template
# evaluation, the test device's config reading; and the claim-binding hook's), then the Rust
# unit and end-to-end tests (which start their own local endpoints on 127.0.0.1).
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

# The end-to-end tests check certificates with openssl, independently of claimfab, the man
# pages with groff (as man renders them) and the floor report in Debian's Chromium.
need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v groff >/dev/null 2>&1 || need_apt+=(groff-base)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if ((${#need_apt[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
bash scripts/local-aws/ensure-venv.sh
bash scripts/local-aws/dataplane/ensure-dataplane.sh

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
.venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
.venv/bin/python -m unittest discover -s src/hooks -p 'test_*.py'
cargo test --all-targets --locked

#!/usr/bin/env bash
# The benchmark: claimfab against the manual way (openssl + AWS CLI per device), a fair peer
# (boto3 with a thread pool) and the physical limits (criterion per-device costs against
# `openssl speed`, AWS's 15/s quotas enforced by the local endpoint), peak RSS up to 1,000,000 devices
# and AWS requests per device. Prints a table and writes BENCHMARKS.md; raw figures and logs go
# to bench-out/ (git-ignored). Takes about an hour and a half with the default sizes; see
# scripts/bench/bench.py for the BENCH_* variables that shrink them, BENCH_ONLY=take for the take
# benchmark alone (a couple of minutes), BENCH_ONLY=hook for the claim-binding hook's cold
# start alone (under a minute), BENCH_ONLY=shared_quota for two and three processes sharing one
# account's quota (about four minutes) and BENCH_ONLY=revoke for a 10,000-claim revoke at the
# UpdateCertificate quota (about twenty minutes); BENCH_ONLY=cpu for CPU per device against
# the boto3 peer (and claimfab's pipeline without the SDK, on disk and on tmpfs);
# BENCH_ONLY=memory for peak RSS at 10,000, 100,000 and 1,000,000 devices (about half an hour);
# BENCH_ONLY=profiles for the release-profile comparison (about forty minutes);
# BENCH_ONLY=air_gap for the air-gapped prepare and package of 100,000 devices (a few minutes);
# BENCH_ONLY=local for the local-work rows again over the last full run (a few minutes).
#
# Installs what it needs: the local endpoint (.venv), the AWS CLI and boto3 (.venv-bench),
# GNU time (apt) for peak RSS, and a release build of claimfab.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

need_apt=()
[[ -x /usr/bin/time ]] || need_apt+=(time)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v zip >/dev/null 2>&1 || need_apt+=(zip)
if ((${#need_apt[@]})); then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
bash scripts/local-aws/ensure-venv.sh
if [[ -z "${BENCH_ONLY:-}" || "${BENCH_ONLY}" == cpu || "${BENCH_ONLY}" == local ]]; then
    # The AWS CLI and boto3, for the peers (the take and hook benchmarks need neither).
    bash scripts/local-aws/ensure-venv.sh .venv-bench scripts/bench/requirements.txt
fi
cargo build --release --locked --quiet

exec .venv/bin/python scripts/bench/bench.py "$@"

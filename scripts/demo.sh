#!/usr/bin/env bash
# The main job on the embedded default: installs and starts the local AWS endpoint (moto on
# 127.0.0.1) with its data plane (mosquitto + the fleet-provisioning service), runs
# `claimfab setup` there (the account's fleet-provisioning resources), then a 100-device
# `claimfab batch` with the example station config, shows where the bundles and the manifest
# are, and lets three test devices (AWS's IoT device SDK, reading the bundles as the Java
# nucleus would) provision with their bundles. The endpoint lives only as long as this script,
# so each run starts from an empty account and a fresh demo-out/batch.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
repo="$(pwd -P)"
count="${1:-100}"

bash scripts/local-aws/ensure-venv.sh
bash scripts/local-aws/dataplane/ensure-dataplane.sh
cargo build --locked --quiet
claimfab="$repo/target/debug/claimfab"

rm -rf demo-out
mkdir -p demo-out
.venv/bin/python scripts/local-aws/local_endpoint.py --state-dir demo-out/endpoint --exit-with-parent --data-plane \
    > demo-out/endpoint.log 2>&1 &
endpoint_pid=$!
trap 'kill "$endpoint_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    grep -q '^ready ' demo-out/endpoint.log 2>/dev/null && break
    kill -0 "$endpoint_pid" 2>/dev/null || { cat demo-out/endpoint.log >&2; exit 1; }
    sleep 0.2
done
url="$(sed -n 's/^ready //p' demo-out/endpoint.log)"
[[ -n "$url" ]] || { echo "demo: the local endpoint did not start" >&2; exit 1; }

# The standard AWS variables point claimfab (and any AWS tool) at the local endpoint.
export AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
unset AWS_PROFILE AWS_SESSION_TOKEN
echo "local AWS endpoint: $url (test CA: demo-out/endpoint/test-ca.pem)"

# The one-time account setup (roles, role alias, policies, thing group, provisioning template,
# claim policy), then the batch: nothing else is needed.
# A copy of the example station: setup records ARNs and endpoints beside it, and those of this
# throwaway local account must not end up next to the real example.
station=demo-out/station.toml
cp station-config/example.toml "$station"
"$claimfab" setup --station "$station" --plan
"$claimfab" setup --station "$station"
echo
"$claimfab" batch --station "$station" --out demo-out/batch --count "$count"

echo
echo "manifest (first rows): demo-out/batch/manifest.csv"
head -3 demo-out/batch/manifest.csv | cut -c1-160
first_bundle="$(ls demo-out/batch/bundles | head -1)"
echo
echo "one bundle: demo-out/batch/bundles/$first_bundle"
.venv/bin/python -m zipfile -l "demo-out/batch/bundles/$first_bundle"
echo
echo "its certificate, checked by openssl against the local endpoint's CA:"
# Only the certificate leaves the zip, through a pipe: the key stays inside its bundle.
.venv/bin/python -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("greengrass/v2/claim-certs/claim.pem.crt"))' \
    "demo-out/batch/bundles/$first_bundle" | openssl verify -CAfile demo-out/endpoint/test-ca.pem /dev/stdin

echo
broker="$(.venv/bin/python -c 'import json, sys; d = json.load(open(sys.argv[1]))["data_plane"]; print("%s:%s" % (d["host"], d["port"]))' demo-out/endpoint/endpoint.json)"
echo "three devices provision with their bundles on the local data plane (MQTT broker $broker):"
mapfile -t bundles < <(ls demo-out/batch/bundles/*.zip | head -3)
.venv/bin/python scripts/local-aws/device.py --nucleus java --connect-to "$broker" \
    --root-ca demo-out/endpoint/test-ca.pem "${bundles[@]/#/--bundle=}"
echo
echo "their things in the account:"
.venv/bin/python -c 'import boto3; print(*sorted(t["thingName"] for t in boto3.client("iot", region_name="us-east-1").list_things()["things"]), sep="\n")'

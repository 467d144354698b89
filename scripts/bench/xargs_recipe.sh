#!/usr/bin/env bash
# The AWS IoT API reference's batch recipe for CreateCertificateFromCsr, measured by
# scripts/bench.sh against the endpoint throttling at AWS's 15/s quota. The reference says:
#
#   ls my-csr-directory/ | xargs -P 10 -I {} aws iot create-certificate-from-csr
#     --certificate-signing-request file://my-csr-directory/{}
#
# This runs exactly that (AWS CLI defaults, retries included), each call's output kept in a
# file so the CSRs that ended without a certificate can be counted: those devices are lost.
#
# Usage: xargs_recipe.sh ENDPOINT_URL COUNT OUT_DIR   (the AWS CLI on PATH, AWS_* set)
# Prints `xargs devices=N certified=K lost=L seconds=S` last.
set -euo pipefail

endpoint="$1" count="$2" out="$3"
rm -rf "$out"
mkdir -p "$out/my-csr-directory" "$out/results"
for i in $(seq 1 "$count"); do
    serial=$(printf 'SN%06d' "$i")
    openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null >"$out/$serial.key"
    openssl req -new -key "$out/$serial.key" -subj "/CN=$serial" -out "$out/my-csr-directory/$serial.csr"
    rm -f "$out/$serial.key"
done

export AWS_ENDPOINT_URL="$endpoint"
cd "$out"
started=$(date +%s.%N)
# shellcheck disable=SC2016 # $1 is expanded by the inner shell
ls my-csr-directory/ | xargs -P 10 -I {} sh -c \
    'aws iot create-certificate-from-csr --certificate-signing-request "file://my-csr-directory/$1" >"results/$1.json" 2>"results/$1.err" || true' _ {}
ended=$(date +%s.%N)
certified=$(grep -l '"certificateId"' results/*.json 2>/dev/null | wc -l)
awk -v n="$count" -v k="$certified" -v s="$started" -v e="$ended" \
    'BEGIN { printf "xargs devices=%d certified=%d lost=%d seconds=%.2f\n", n, k, n - k, e - s }'

#!/usr/bin/env bash
# The benchmark's "manual way" (scripts/bench.sh): AWS's Greengrass fleet-provisioning guide
# done by hand for each device, with the key kept local as claimfab does: openssl makes the
# P-256 key and the CSR, the AWS CLI registers it (`aws iot create-certificate-from-csr
# --set-as-active`) and attaches the claim policy (`aws iot attach-policy`, as in the guide),
# then the config is written and the four files zipped. Run on a sample; bench.py extrapolates.
#
# Usage: manual.sh ENDPOINT_URL COUNT OUT_DIR   (the AWS CLI on PATH, AWS_* set)
# Prints `manual devices=N ok=K seconds=S per_device=X` last.
set -euo pipefail

endpoint="$1" count="$2" out="$3"
policy="${CLAIM_POLICY:-GreengrassProvisioningClaimPolicy}"
root_ca="$(cd "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)/src/core/AmazonRootCA1.pem"
rm -rf "$out"
mkdir -p "$out"

started=$(date +%s.%N)
ok=0
for i in $(seq 1 "$count"); do
    serial=$(printf 'SN%06d' "$i")
    dir="$out/$serial/greengrass/v2"
    mkdir -p "$dir/claim-certs" "$dir/init-config"
    (
        umask 077
        openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null |
            openssl pkcs8 -topk8 -nocrypt -out "$dir/claim-certs/claim.private.pem.key"
    )
    openssl req -new -key "$dir/claim-certs/claim.private.pem.key" -subj "/CN=$serial" \
        -out "$out/$serial.csr"
    # One call answers both: the ARN (for attach-policy), a tab, then the certificate PEM.
    created=$(aws --endpoint-url "$endpoint" iot create-certificate-from-csr --set-as-active \
        --certificate-signing-request "file://$out/$serial.csr" \
        --query '[certificateArn, certificatePem]' --output text)
    arn="${created%%$'\t'*}"
    printf '%s\n' "${created#*$'\t'}" >"$dir/claim-certs/claim.pem.crt"
    aws --endpoint-url "$endpoint" iot attach-policy --policy-name "$policy" --target "$arn"
    cp "$root_ca" "$dir/AmazonRootCA1.pem"
    cat >"$dir/init-config/config.yaml" <<EOF
services:
  aws.greengrass.FleetProvisioningByClaim:
    configuration:
      rootPath: /greengrass/v2
      awsRegion: us-east-1
      iotDataEndpoint: local-ats.iot.us-east-1.amazonaws.com
      iotCredentialEndpoint: local.credentials.iot.us-east-1.amazonaws.com
      iotRoleAlias: GreengrassCoreTokenExchangeRoleAlias
      provisioningTemplate: GreengrassFleetProvisioningTemplate
      claimCertificatePath: /greengrass/v2/claim-certs/claim.pem.crt
      claimCertificatePrivateKeyPath: /greengrass/v2/claim-certs/claim.private.pem.key
      rootCaPath: /greengrass/v2/AmazonRootCA1.pem
      templateParameters:
        ThingName: $serial
EOF
    (cd "$out/$serial" && zip -qr "../$serial.zip" greengrass)
    rm -rf "${out:?}/$serial"
    ok=$((ok + 1))
done
ended=$(date +%s.%N)
awk -v n="$count" -v ok="$ok" -v s="$started" -v e="$ended" \
    'BEGIN { printf "manual devices=%d ok=%d seconds=%.2f per_device=%.3f\n", n, ok, e - s, (e - s) / n }'

"""The benchmark's fair peer (scripts/bench.sh): what a competent engineer would write instead of
claimfab in Python. For each device, in a thread pool: a P-256 key and a CSR (CN = thing name)
with `cryptography`, CreateCertificateFromCsr (setAsActive) and AttachPolicy with boto3 (its
default retry configuration), and a zip with the same four entries as a claimfab bundle (claim
certificate, PKCS#8 key with mode 0600, Amazon Root CA 1, the Greengrass Java-nucleus config of
AWS's fleet-provisioning guide); then a manifest.csv. No journal, no resume: a peer, not a copy.

Usage: peer_boto3.py --endpoint-url URL --region R --count N --out DIR
           --claim-policy NAME --data-endpoint HOST --credential-endpoint HOST [--threads 16]
Prints `peer devices=N ok=K failed=F seconds=S` last. Never prints key material.
"""

import argparse
import concurrent.futures
import csv
import hashlib
import time
import zipfile
from pathlib import Path

import boto3
import botocore.config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT_CA = (Path(__file__).resolve().parents[2] / "src/core/AmazonRootCA1.pem").read_bytes()
CONFIG = """services:
  aws.greengrass.FleetProvisioningByClaim:
    configuration:
      rootPath: /greengrass/v2
      awsRegion: {region}
      iotDataEndpoint: {data}
      iotCredentialEndpoint: {cred}
      iotRoleAlias: GreengrassCoreTokenExchangeRoleAlias
      provisioningTemplate: GreengrassFleetProvisioningTemplate
      claimCertificatePath: /greengrass/v2/claim-certs/claim.pem.crt
      claimCertificatePrivateKeyPath: /greengrass/v2/claim-certs/claim.private.pem.key
      rootCaPath: /greengrass/v2/AmazonRootCA1.pem
      templateParameters:
        ThingName: {thing}
"""


def bundle_entries(created: dict, key_pem: bytes, config: str):
    """The four entries of a claimfab bundle: (name, data, mode)."""
    return (
        ("greengrass/v2/claim-certs/claim.pem.crt", created["certificatePem"].encode(), 0o644),
        ("greengrass/v2/claim-certs/claim.private.pem.key", key_pem, 0o600),
        ("greengrass/v2/AmazonRootCA1.pem", ROOT_CA, 0o644),
        ("greengrass/v2/init-config/config.yaml", config.encode(), 0o644),
    )


def one(serial: str, client, args, out: Path) -> list:
    """One device: key and CSR, CreateCertificateFromCsr, AttachPolicy, the bundle; its
    manifest row."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
           .sign(key, hashes.SHA256()))
    created = client.create_certificate_from_csr(
        certificateSigningRequest=csr.public_bytes(serialization.Encoding.PEM).decode(),
        setAsActive=True)
    client.attach_policy(policyName=args.claim_policy, target=created["certificateArn"])
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    config = CONFIG.format(region=args.region, data=args.data_endpoint,
                           cred=args.credential_endpoint, thing=serial)
    bundle = out / "bundles" / f"{serial}.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, mode in bundle_entries(created, key_pem, config):
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_STORED if mode == 0o600 else zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    bundle.chmod(0o600)
    return [serial, serial, created["certificateId"], created["certificateArn"],
            f"bundles/{serial}.zip", hashlib.sha256(bundle.read_bytes()).hexdigest(), "ready"]


def write_manifest(out: Path, rows: list) -> None:
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["serial", "thing_name", "certificate_id", "certificate_arn", "bundle",
                         "bundle_sha256", "status"])
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--endpoint-url", "--region", "--out", "--claim-policy", "--data-endpoint",
                 "--credential-endpoint"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    out = Path(args.out)
    (out / "bundles").mkdir(parents=True, exist_ok=True)
    # Low-level boto3 clients are thread-safe: one, shared, with a pool as large as the threads.
    client = boto3.session.Session().client(
        "iot", region_name=args.region, endpoint_url=args.endpoint_url,
        config=botocore.config.Config(max_pool_connections=args.threads))
    serials = [f"SN{i:06d}" for i in range(1, args.count + 1)]
    started = time.monotonic()
    rows, failed = [], 0
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        for serial, future in zip(serials, [pool.submit(one, s, client, args, out) for s in serials]):
            try:
                rows.append(future.result())
            except Exception as error:  # noqa: BLE001 - a peer reports and goes on
                failed += 1
                rows.append([serial, serial, "", "", "", "", f"failed: {type(error).__name__}"])
    write_manifest(out, rows)
    seconds = time.monotonic() - started
    print(f"peer devices={args.count} ok={args.count - failed} failed={failed} seconds={seconds:.2f}")


if __name__ == "__main__":
    main()

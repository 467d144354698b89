//! Criterion benchmarks of claimfab's local work per device, run by scripts/bench.sh and
//! compared there with `openssl speed ecdsap256`: a P-256 key and its CSR, building the bundle
//! zip in memory, encrypting it to a station (age X25519, `batch --encrypt-to`), and writing
//! it atomically (temp file, fsync, rename, directory fsync) the way a batch does.

use criterion::{criterion_group, criterion_main, Criterion};

use claimfab::batch_dir::BatchDir;
use claimfab::core::bundle::{build_bundle, AMAZON_ROOT_CA_1};
use claimfab::core::devices::Device;
use claimfab::core::greengrass::ProvisioningTarget;
use claimfab::core::keys::prepare_device;
use claimfab::core::sealed::{new_station_key, Recipients};
use claimfab::core::station_config::{GreengrassSection, KeyAlgorithm};

fn device() -> Device {
    Device {
        serial: "SN000001".into(),
        thing_name: "SN000001".into(),
    }
}

fn target() -> ProvisioningTarget {
    ProvisioningTarget {
        region: "us-east-1".into(),
        iot_data_endpoint: "abcdefghijklmn-ats.iot.us-east-1.amazonaws.com".into(),
        iot_credential_endpoint: "abcdefghijklmn.credentials.iot.us-east-1.amazonaws.com".into(),
        role_alias: "GreengrassCoreTokenExchangeRoleAlias".into(),
        template: "GreengrassFleetProvisioningTemplate".into(),
        thing_group: None,
        greengrass: GreengrassSection::default(),
    }
}

fn per_device(c: &mut Criterion) {
    c.bench_function("key_and_csr_p256", |b| {
        b.iter(|| prepare_device(device(), KeyAlgorithm::P256))
    });

    let prepared = prepare_device(device(), KeyAlgorithm::P256);
    let key_pem = prepared.key.pkcs8_pem();
    // A certificate-sized PEM: building the zip does not parse it.
    let certificate_pem = AMAZON_ROOT_CA_1;
    let target = target();
    c.bench_function("bundle_build", |b| {
        b.iter(|| build_bundle(&target, "SN000001", certificate_pem, &key_pem))
    });

    let zip = build_bundle(&target, "SN000001", certificate_pem, &key_pem);
    let station = new_station_key(time::OffsetDateTime::now_utc());
    let recipients = Recipients::parse([station.recipient.as_str()]).expect("recipient");
    c.bench_function("bundle_seal_one_station", |b| {
        b.iter(|| recipients.seal(&zip))
    });

    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = BatchDir::open(scratch.path()).expect("batch dir");
    dir.make_bundles_dir().expect("bundles/");
    let bundle = BatchDir::bundle_name("SN000001", false);
    c.bench_function("bundle_write_atomic", |b| {
        b.iter(|| dir.write_atomic(&bundle, &zip, 0o600).expect("write"))
    });
}

criterion_group!(benches, per_device);
criterion_main!(benches);

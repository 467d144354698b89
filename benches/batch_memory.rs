//! The batch pipeline at scale without AWS: `claimfab batch`'s stages (keys, journal,
//! bundles, manifest, hand-out queue) over N devices against an in-process issuer (the
//! tests' fake AWS IoT, made to forget each certificate once issued so that only claimfab's
//! own memory grows), then claimfab's peak RSS and CPU per device. Run by
//! `scripts/bench.sh` (`BENCH_ONLY=memory`) for 10,000, 100,000 and 1,000,000 devices: the
//! local endpoint serves about a hundred devices a second, too slow for a million.
//!
//! `cargo bench --bench batch_memory -- DEVICES OUT_DIR` (without arguments: 200 devices in a
//! temporary directory, which is what `cargo test --all-targets` runs).

#[path = "../tests/fake_iot/mod.rs"]
mod fake_iot;
#[path = "support/rusage.rs"]
mod rusage;

use std::sync::Arc;
use std::time::Instant;

use claimfab::batch_dir::journal::JournalFiles;
use claimfab::batch_dir::spec::BatchSpec;
use claimfab::cloud::{AwsError, CertificateSummary, Claims, NewCertificate, OutOfService};
use claimfab::core::devices::{ClaimScope, DeviceList, ThingNamePattern};
use claimfab::core::greengrass::ProvisioningTarget;
use claimfab::core::station_config::{GreengrassSection, KeyAlgorithm, LimitsSection, Nucleus};
use claimfab::pipeline::execution::{BatchResult, Execution};
use fake_iot::{Crash, FakeIot};

/// The fake AWS IoT, forgetting what it issued: AttachPolicy always succeeds.
struct Issuer(FakeIot);

impl Claims for Issuer {
    async fn create_certificate_from_csr(&self, csr_pem: &str) -> Result<NewCertificate, AwsError> {
        let issued = self.0.create_certificate_from_csr(csr_pem).await?;
        self.0.certificates.lock().unwrap().clear();
        Ok(issued)
    }

    async fn attach_policy(&self, _policy: &str, _arn: &str) -> Result<(), AwsError> {
        Ok(())
    }

    async fn set_certificate_status(&self, id: &str, status: OutOfService) -> Result<(), AwsError> {
        self.0.set_certificate_status(id, status).await
    }

    async fn detach_policy(&self, policy: &str, arn: &str) -> Result<(), AwsError> {
        self.0.detach_policy(policy, arn).await
    }

    async fn delete_certificate(&self, id: &str) -> Result<(), AwsError> {
        self.0.delete_certificate(id).await
    }

    async fn describe_certificate(
        &self,
        id: &str,
    ) -> Result<claimfab::cloud::CertificateDescription, AwsError> {
        self.0.describe_certificate(id).await
    }

    async fn certificates_created_since(
        &self,
        since: time::OffsetDateTime,
    ) -> Result<Vec<CertificateSummary>, AwsError> {
        self.0.certificates_created_since(since).await
    }

    fn call_counts(&self) -> Vec<(&'static str, u64)> {
        self.0.call_counts()
    }
}

fn spec(devices: usize) -> BatchSpec {
    BatchSpec {
        format: 1,
        device_count: devices,
        devices_sha256: "bench".into(),
        claim_policy: "ClaimPolicy".into(),
        key_algorithm: KeyAlgorithm::P256,
        target: ProvisioningTarget {
            region: "us-east-1".into(),
            iot_data_endpoint: "bench-ats.iot.us-east-1.amazonaws.com".into(),
            iot_credential_endpoint: "bench.credentials.iot.us-east-1.amazonaws.com".into(),
            role_alias: "RoleAlias".into(),
            template: "Template".into(),
            thing_group: None,
            greengrass: GreengrassSection::defaults_for(Nucleus::Java),
        },
        claim_scope: ClaimScope::Device,
        encrypt_to: Vec::new(),
        signed_by: None,
        batch_id: None,
    }
}

/// This process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    // `cargo test --all-targets` runs this with no arguments: a small batch, as a smoke test.
    let smoke = tempfile::tempdir().expect("a temporary directory");
    let count = args.first().map_or(Some(200), |n| n.parse::<usize>().ok());
    let out = args
        .get(1)
        .map_or(smoke.path().join("batch"), std::path::PathBuf::from);
    let Some(count) = count.filter(|n| *n > 0) else {
        eprintln!("usage: batch_memory DEVICES OUT_DIR");
        std::process::exit(2);
    };
    let out = out.as_path();
    // As `batch --count N --first-serial SN0000001` makes them.
    let pattern = ThingNamePattern::parse("gg-{serial}").expect("a valid pattern");
    let devices = DeviceList::counted("SN0000001", count as u64, &pattern).expect("valid serials");
    claimfab::output::silence();
    let spec = spec(count);
    let limits = LimitsSection::default();
    let run = Execution {
        out,
        spec: &spec,
        resuming: out.join("batch.json").exists(),
        limits: &limits,
        journals: &JournalFiles,
        signer: None,
    };
    let api = Arc::new(Issuer(FakeIot::new(Arc::new(Crash::default()))));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let result = runtime.block_on(run.execute(devices, api));
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(BatchResult::Done) => {}
        other => {
            eprintln!(
                "batch did not finish: {:?}",
                other.map_err(|e| format!("{e:#}"))
            );
            std::process::exit(1);
        }
    }
    let cpu = rusage::cpu_seconds(libc::RUSAGE_SELF);
    println!(
        "{{\"devices\": {count}, \"seconds\": {elapsed:.1}, \"cpu_ms_per_device\": {:.3}, \"peak_rss_kib\": {}}}",
        cpu * 1000.0 / count as f64,
        peak_rss_kib()
    );
}

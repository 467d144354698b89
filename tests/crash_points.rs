//! Crash recovery at every journal point, against the in-memory AWS IoT (tests/fake_iot):
//! for each scenario, a run is stopped at each journal write in turn (the write lost, or the
//! write made and the process dead just after), then resumed, and the invariants are checked
//! through the fake's own table and by parsing the bundles: every device ready with one
//! ACTIVE claim that carries the key in its bundle and has the claim policy; no device with
//! two ACTIVE claims; no ACTIVE certificate the manifest does not name. A batch whose bundles
//! are encrypted to a station is checked the same way (decrypted with the station's
//! identity), and no file of its directory may hold a private key in the clear. The same is
//! done to `revoke` and to `rotate`. The Python endpoint's end-to-end tests cover the wire.

mod fake_iot;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use anyhow::{bail, Result};
use claimfab::batch_dir::journal::{EventLog, JournalFiles, JournalStore};
use claimfab::batch_dir::spec::BatchSpec;
use claimfab::cloud::OutOfService;
use claimfab::core::devices::{ClaimScope, Device};
use claimfab::core::greengrass::ProvisioningTarget;
use claimfab::core::keys::public_key_fingerprint;
use claimfab::core::ledger::{Event, Replay};
use claimfab::core::station_config::{GreengrassSection, KeyAlgorithm, LimitsSection, Nucleus};
use claimfab::pipeline::execution::{BatchResult, Execution};
use claimfab::retirement::revoke::Retirement;
use claimfab::rotation::{Rotate, RotateRequest};
use fake_iot::{Crash, FakeCertificate, FakeIot, Fault};

const CLAIM_POLICY: &str = "ClaimPolicy";
const TEMPLATE: &str = "Template";
const DEVICES: usize = 4;

/// Where a run dies: before journal write `at` reaches the disk, or just after it did.
#[derive(Debug, Clone, Copy)]
enum CrashPoint {
    None,
    Before(usize),
    After(usize),
}

/// Journals that count writes across every journal a command opens and die on cue.
struct CrashingJournals {
    point: CrashPoint,
    writes: Arc<AtomicUsize>,
    crash: Arc<Crash>,
}

struct CrashingJournal {
    inner: Box<dyn EventLog>,
    point: CrashPoint,
    writes: Arc<AtomicUsize>,
    crash: Arc<Crash>,
}

impl EventLog for CrashingJournal {
    fn record(&self, event: &Event) -> Result<()> {
        if self.crash.is_dead() {
            bail!("the process is dead");
        }
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        match self.point {
            CrashPoint::Before(at) if at == n => {
                self.crash.happen();
                bail!("crashed before journal write {n}");
            }
            CrashPoint::After(at) if at == n => {
                self.inner.record(event)?;
                self.crash.happen();
                Ok(())
            }
            _ => self.inner.record(event),
        }
    }
}

impl JournalStore for CrashingJournals {
    fn open(&self, path: &Path) -> Result<(Box<dyn EventLog>, Replay)> {
        if self.crash.is_dead() {
            bail!("the process is dead");
        }
        let (inner, replay) = JournalFiles.open(path)?;
        let journal = CrashingJournal {
            inner,
            point: self.point,
            writes: self.writes.clone(),
            crash: self.crash.clone(),
        };
        Ok((Box::new(journal), replay))
    }
}

impl CrashingJournals {
    fn new(point: CrashPoint, crash: Arc<Crash>) -> Self {
        Self {
            point,
            writes: Arc::new(AtomicUsize::new(0)),
            crash,
        }
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

/// The runtime a run is driven on. Runs print no summary: the test's output is its failures.
fn runtime() -> tokio::runtime::Runtime {
    claimfab::output::silence();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn devices() -> Vec<Device> {
    (1..=DEVICES)
        .map(|i| Device {
            serial: format!("SN{i}"),
            thing_name: format!("gg-SN{i}"),
        })
        .collect()
}

/// The station encrypted batches are sealed for.
static STATION: LazyLock<age::x25519::Identity> = LazyLock::new(age::x25519::Identity::generate);

fn spec(scenario: &Scenario) -> BatchSpec {
    let encrypt_to = match scenario.sealed {
        true => vec![STATION.to_public().to_string()],
        false => Vec::new(),
    };
    BatchSpec {
        format: 1,
        device_count: DEVICES,
        devices_sha256: "test".into(),
        claim_policy: CLAIM_POLICY.into(),
        key_algorithm: KeyAlgorithm::P256,
        target: ProvisioningTarget {
            region: "us-east-1".into(),
            iot_data_endpoint: "fake-ats.iot.us-east-1.amazonaws.com".into(),
            iot_credential_endpoint: "fake.credentials.iot.us-east-1.amazonaws.com".into(),
            role_alias: "RoleAlias".into(),
            template: TEMPLATE.into(),
            thing_group: None,
            greengrass: GreengrassSection::defaults_for(Nucleus::Java),
        },
        claim_scope: scenario.scope,
        encrypt_to,
        signed_by: None,
        batch_id: None,
    }
}

fn limits() -> LimitsSection {
    LimitsSection {
        // One device at a time: crash point n is the same journal write in every run, so a
        // failure names its event and reproduces.
        concurrency: 1,
        reconcile_after_seconds: 0,
        ..LimitsSection::default()
    }
}

/// Runs (or resumes) a batch into `out`; `Err` when the run died.
fn run_batch(
    out: &Path,
    scenario: &Scenario,
    api: &Arc<FakeIot>,
    journals: &dyn JournalStore,
) -> Result<BatchResult> {
    let spec = spec(scenario);
    let run = Execution {
        out,
        spec: &spec,
        resuming: out.join("batch.json").exists(),
        limits: &limits(),
        journals,
        signer: None,
    };
    runtime().block_on(run.execute(devices(), api.clone()))
}

/// Resumes until the batch is done (lost answers may take a round each).
fn finish_batch(out: &Path, scenario: &Scenario, api: &Arc<FakeIot>) {
    api.crash.revive();
    for _ in 0..3 {
        if run_batch(out, scenario, api, &JournalFiles).unwrap() == BatchResult::Done {
            return;
        }
    }
    panic!(
        "the batch in {} did not finish after a crash",
        out.display()
    );
}

struct Row {
    serial: String,
    thing_name: String,
    certificate_id: String,
    bundle: String,
    status: String,
}

fn manifest(dir: &Path) -> Vec<Row> {
    let mut reader = csv::Reader::from_path(dir.join("manifest.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (s, t, c, b, st) = (
        column("serial"),
        column("thing_name"),
        column("certificate_id"),
        column("bundle"),
        column("status"),
    );
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            Row {
                serial: r[s].to_string(),
                thing_name: r[t].to_string(),
                certificate_id: r[c].to_string(),
                bundle: r[b].to_string(),
                status: r[st].to_string(),
            }
        })
        .collect()
}

/// The certificate and key a bundle holds, read with the zip and x509 crates (decrypted
/// with the age crate and the station's identity when `sealed`).
fn bundle_contents(path: &Path, sealed: bool) -> (String, String) {
    let greengrass = GreengrassSection::defaults_for(Nucleus::Java);
    let mut bytes = std::fs::read(path).unwrap();
    if sealed {
        bytes = age::decrypt(&*STATION, &bytes).unwrap();
    }
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut entry = |device_path: &str| {
        let mut text = String::new();
        archive
            .by_name(device_path.trim_start_matches('/'))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let cert = entry(&greengrass.claim_certificate_path);
    let key = entry(&greengrass.claim_private_key_path);
    (cert, key)
}

fn certificate_facts(pem: &str) -> (String, String) {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    (
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&pem.contents)),
        public_key_fingerprint(cert.public_key().raw),
    )
}

/// The fingerprint of a PKCS#8 key's public half, read with the p256 crate.
fn key_fingerprint(pkcs8_pem: &str) -> String {
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let key = p256::SecretKey::from_pkcs8_pem(pkcs8_pem).unwrap();
    public_key_fingerprint(key.public_key().to_public_key_der().unwrap().as_bytes())
}

/// The batch invariants, for `what` (the scenario and crash point, for messages).
fn check_batch(out: &Path, scenario: &Scenario, api: &FakeIot, what: &str) {
    let rows = manifest(out);
    if scenario.sealed {
        no_key_in_the_clear(out, what);
    }
    assert_eq!(rows.len(), DEVICES, "{what}: a device is missing");
    let active = api.with_status("ACTIVE");
    let named: BTreeSet<&str> = rows.iter().map(|r| r.certificate_id.as_str()).collect();
    for id in active.keys() {
        assert!(
            named.contains(id.as_str()),
            "{what}: ACTIVE certificate {id} is in no manifest row"
        );
    }
    for row in &rows {
        assert_eq!(
            row.status, "ready",
            "{what}: {} is {}",
            row.serial, row.status
        );
        let cert = active
            .get(&row.certificate_id)
            .unwrap_or_else(|| panic!("{what}: {}'s certificate is not ACTIVE", row.serial));
        assert!(
            cert.policies.contains(CLAIM_POLICY),
            "{what}: {} has no claim policy",
            row.serial
        );
        let suffix = if scenario.sealed { ".zip.age" } else { ".zip" };
        assert!(row.bundle.ends_with(suffix), "{what}: {}", row.bundle);
        let (cert_pem, key_pem) = bundle_contents(&out.join(&row.bundle), scenario.sealed);
        let (sha256, public_key) = certificate_facts(&cert_pem);
        assert_eq!(
            sha256, row.certificate_id,
            "{what}: {}'s bundle holds another certificate",
            row.serial
        );
        assert_eq!(
            key_fingerprint(&key_pem),
            public_key,
            "{what}: {}'s key does not match",
            row.serial
        );
        assert_eq!(cert.public_key_sha256, public_key);
    }
    let holders: Vec<&str> = match scenario.scope {
        ClaimScope::Device => rows.iter().map(|r| r.thing_name.as_str()).collect(),
        ClaimScope::Batch => vec!["Template claim"],
    };
    for holder in holders {
        let claims = active.values().filter(|c| c.common_name == holder).count();
        assert_eq!(claims, 1, "{what}: {holder} has {claims} ACTIVE claims");
    }
}

/// Every file under `dir`, searched byte by byte for a PEM private key header.
fn no_key_in_the_clear(dir: &Path, what: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            no_key_in_the_clear(&path, what);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
            "{what}: {} holds a private key in the clear",
            path.display()
        );
    }
}

struct Scenario {
    name: &'static str,
    scope: ClaimScope,
    /// CreateCertificateFromCsr calls whose answer is lost (the certificate is made).
    lost_answers: &'static [usize],
    /// Bundles encrypted to [`STATION`] (`batch --encrypt-to`).
    sealed: bool,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "device claims",
        scope: ClaimScope::Device,
        lost_answers: &[],
        sealed: false,
    },
    Scenario {
        name: "device claims, two create answers lost",
        scope: ClaimScope::Device,
        lost_answers: &[2, 3],
        sealed: false,
    },
    Scenario {
        name: "one claim for the batch",
        scope: ClaimScope::Batch,
        lost_answers: &[],
        sealed: false,
    },
    Scenario {
        name: "device claims encrypted to a station, one create answer lost",
        scope: ClaimScope::Device,
        lost_answers: &[2],
        sealed: true,
    },
];

/// Every crash point of a command that makes `writes` journal writes when it runs through.
fn crash_points(writes: usize) -> impl Iterator<Item = CrashPoint> {
    (1..=writes).flat_map(|n| [CrashPoint::Before(n), CrashPoint::After(n)])
}

fn fresh(scenario: &Scenario) -> (tempfile::TempDir, Arc<FakeIot>) {
    let api = Arc::new(FakeIot::new(Arc::new(Crash::default())));
    api.lose_create_answers(scenario.lost_answers);
    (tempfile::tempdir().unwrap(), api)
}

#[test]
fn a_batch_resumed_after_a_crash_at_any_journal_point_keeps_every_invariant() {
    for scenario in &SCENARIOS {
        let (dir, api) = fresh(scenario);
        let out = dir.path().join("batch");
        let counting = CrashingJournals::new(CrashPoint::None, api.crash.clone());
        let first = run_batch(&out, scenario, &api, &counting).unwrap();
        let writes = counting.writes();
        assert!(
            writes >= DEVICES,
            "{}: only {writes} journal writes",
            scenario.name
        );
        if first != BatchResult::Done {
            finish_batch(&out, scenario, &api);
        }
        check_batch(&out, scenario, &api, scenario.name);
        eprintln!(
            "{}: {writes} journal writes, {} crash points",
            scenario.name,
            2 * writes
        );

        for point in crash_points(writes) {
            let what = format!("{}, crash {point:?}", scenario.name);
            let (dir, api) = fresh(scenario);
            let out = dir.path().join("batch");
            let crashing = CrashingJournals::new(point, api.crash.clone());
            let _ = run_batch(&out, scenario, &api, &crashing);
            assert!(
                api.crash.is_dead(),
                "{what}: the crash point was not reached"
            );
            finish_batch(&out, scenario, &api);
            check_batch(&out, scenario, &api, &what);
        }
    }
}

/// A finished batch of device claims in a fresh directory.
fn finished_batch() -> (tempfile::TempDir, Arc<FakeIot>) {
    let (dir, api) = fresh(&SCENARIOS[0]);
    finish_batch(&dir.path().join("batch"), &SCENARIOS[0], &api);
    (dir, api)
}

fn revoke(out: &Path, api: &FakeIot, journals: &dyn JournalStore) -> Result<bool> {
    let request = Retirement {
        dir: out,
        devices: claimfab::retirement::revoke::Selection::All,
        status: OutOfService::Revoked,
        detach: true,
        delete: true,
    };
    runtime().block_on(request.check()?.carry_out(api, journals))
}

#[test]
fn a_revoke_resumed_after_a_crash_at_any_journal_point_deletes_every_claim() {
    let (dir, api) = finished_batch();
    let out = dir.path().join("batch");
    let counting = CrashingJournals::new(CrashPoint::None, api.crash.clone());
    assert!(revoke(&out, &api, &counting).unwrap());
    let writes = counting.writes();
    assert_eq!(
        writes,
        DEVICES * 4,
        "status requested, changed, detached, deleted"
    );

    for point in crash_points(writes) {
        let what = format!("revoke, crash {point:?}");
        let (dir, api) = finished_batch();
        let out = dir.path().join("batch");
        let before: BTreeMap<String, FakeCertificate> = api.with_status("ACTIVE");
        let crashing = CrashingJournals::new(point, api.crash.clone());
        let _ = revoke(&out, &api, &crashing);
        assert!(
            api.crash.is_dead(),
            "{what}: the crash point was not reached"
        );
        api.crash.revive();
        assert!(
            revoke(&out, &api, &JournalFiles).unwrap(),
            "{what}: the re-run failed"
        );
        check_deleted(&out, &api, &before, &what);
    }
}

/// After a revoke with delete: every claim that was ACTIVE is gone from AWS, and the
/// manifest says so.
fn check_deleted(
    out: &Path,
    api: &FakeIot,
    before: &BTreeMap<String, FakeCertificate>,
    what: &str,
) {
    let left = api.certificates.lock().unwrap().clone();
    for id in before.keys() {
        assert!(
            !left.contains_key(id),
            "{what}: certificate {id} was not deleted"
        );
    }
    for row in manifest(out) {
        assert_eq!(
            row.status, "deleted",
            "{what}: {} is {}",
            row.serial, row.status
        );
    }
}

/// The calls a batch and a revoke make that change something in AWS, each given in turn a
/// throttling refusal and a lost answer at every call number a 4-device run makes.
const FAULTS: [Fault; 2] = [Fault::Throttled, Fault::AnswerLost];

#[test]
fn a_batch_meets_throttling_and_lost_answers_on_every_call_and_a_rerun_finishes_it() {
    for api_name in ["CreateCertificateFromCsr", "AttachPolicy"] {
        for fault in FAULTS {
            for call in 1..=DEVICES as u64 {
                let what = format!("batch, {api_name} call {call} {fault:?}");
                let (dir, api) = fresh(&SCENARIOS[0]);
                api.fault(api_name, call, fault);
                finish_batch(&dir.path().join("batch"), &SCENARIOS[0], &api);
                assert_eq!(api.faults_met(), 1, "{what}: the fault was not met");
                check_batch(&dir.path().join("batch"), &SCENARIOS[0], &api, &what);
            }
        }
    }
}

#[test]
fn a_revoke_meets_throttling_and_lost_answers_on_every_call_and_a_rerun_finishes_it() {
    for api_name in ["UpdateCertificate", "DetachPolicy", "DeleteCertificate"] {
        for fault in FAULTS {
            for call in 1..=DEVICES as u64 {
                let what = format!("revoke, {api_name} call {call} {fault:?}");
                let (dir, api) = finished_batch();
                let out = dir.path().join("batch");
                let before = api.with_status("ACTIVE");
                api.fault(api_name, call, fault);
                let done = (0..3).any(|_| revoke(&out, &api, &JournalFiles).unwrap());
                assert!(done, "{what}: three runs did not finish the revoke");
                assert_eq!(api.faults_met(), 1, "{what}: the fault was not met");
                check_deleted(&out, &api, &before, &what);
            }
        }
    }
}

fn rotate(old: &Path, new: &Path, api: &Arc<FakeIot>, journals: &dyn JournalStore) -> Result<bool> {
    let request = RotateRequest {
        old_dir: old.to_path_buf(),
        new_dir: new.to_path_buf(),
        retire_old: true,
        retire_after: None,
        limits: limits(),
        sign_with: None,
    };
    let rotation = Rotate::check(&request)?;
    runtime().block_on(rotation.carry_out(api.clone(), journals))
}

/// After a rotation: each device has exactly one ACTIVE claim, the new batch's; the old
/// ones are INACTIVE; the report ties each old certificate to a different new one.
fn check_rotation(old: &Path, new: &Path, api: &FakeIot, what: &str) {
    check_batch(new, &SCENARIOS[0], api, what);
    for row in manifest(old) {
        let status = api.certificates.lock().unwrap()[&row.certificate_id]
            .status
            .clone();
        assert_eq!(
            status, "INACTIVE",
            "{what}: old claim of {} is {status}",
            row.serial
        );
    }
    let mut report = csv::Reader::from_path(new.join("rotation.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = report.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), DEVICES, "{what}");
    for row in rows {
        assert_ne!(
            row[2].to_string(),
            row[3].to_string(),
            "{what}: a certificate rotated to itself"
        );
    }
}

#[test]
fn a_rotation_resumed_after_a_crash_at_any_journal_point_leaves_one_claim_per_device() {
    let (dir, api) = finished_batch();
    let (old, new) = (dir.path().join("batch"), dir.path().join("rotated"));
    let counting = CrashingJournals::new(CrashPoint::None, api.crash.clone());
    assert!(rotate(&old, &new, &api, &counting).unwrap());
    let writes = counting.writes();
    check_rotation(&old, &new, &api, "rotate");
    eprintln!(
        "rotate: {writes} journal writes, {} crash points",
        2 * writes
    );

    for point in crash_points(writes) {
        let what = format!("rotate, crash {point:?}");
        let (dir, api) = finished_batch();
        let (old, new) = (dir.path().join("batch"), dir.path().join("rotated"));
        let crashing = CrashingJournals::new(point, api.crash.clone());
        let _ = rotate(&old, &new, &api, &crashing);
        assert!(
            api.crash.is_dead(),
            "{what}: the crash point was not reached"
        );
        api.crash.revive();
        assert!(
            rotate(&old, &new, &api, &JournalFiles).unwrap(),
            "{what}: the re-run failed"
        );
        check_rotation(&old, &new, &api, &what);
    }
}

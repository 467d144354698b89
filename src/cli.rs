//! Command-line syntax only (clap derive), and the conversions of its enums into the
//! domain's. Values are checked and resolved elsewhere.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Bulk AWS IoT fleet-provisioning claim certificates for Greengrass device factories.
#[derive(Debug, Parser)]
#[command(name = "claimfab", version, about, long_about = None)]
pub struct Cli {
    /// Who reads standard output: text for people, or json for programs (one object per
    /// line, schemas in the README; the text then goes to standard error).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: crate::output::OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make claim-certificate bundles for a batch of devices (resumable: re-run the same
    /// command on the same --out to finish an interrupted batch).
    Batch(BatchArgs),
    /// Air-gapped, on the offline machine: keys (encrypted at rest in keys.age) and CSRs
    /// for a batch; carry csrs.jsonl to the online machine for `register`.
    Prepare(PrepareArgs),
    /// Air-gapped, on the online machine: register a carried CSR file's devices with AWS IoT
    /// (resumable: re-run the same command); carry certificates.jsonl back for `package`.
    Register(RegisterArgs),
    /// Air-gapped, back on the offline machine: check the carried certificates against the
    /// batch's keys and write the bundles and the manifest, as `batch` does.
    Package(PackageArgs),
    /// Create the AWS account's fleet-provisioning resources (roles, role alias, policies,
    /// thing group, provisioning template, claim policy). Idempotent; --plan only reads.
    Setup(SetupArgs),
    /// Check batch directories and bundle zips offline: fingerprints against the manifest
    /// (both ways), key matches certificate, certificate valid, config points at files
    /// present, root CA is Amazon Root CA 1. Exit 1 on any finding.
    Verify(VerifyArgs),
    /// Reconcile batch manifests with AWS: certificate status, claim policy attached,
    /// certificates attached out of band, and which devices have provisioned. Exit 1 on drift.
    Audit(AuditArgs),
    /// Take a batch's claim certificates out of service (journaled, resumable; the manifest's
    /// status column follows).
    Revoke(RevokeArgs),
    /// New claim certificates and bundles for a batch's devices in a new directory, with a
    /// report tying old to new; the old certificates are retired only when confirmed.
    Rotate(RotateArgs),
    /// A batch is done: retire (REVOKED, claim policy detached) every claim never flashed
    /// and every spoiled one. Without --yes, only prints what it would do.
    Close(CloseArgs),
    /// Retire the claims of devices that have provisioned (their thing exists with a device
    /// certificate): a claim that has done its job is a liability. Safe to run nightly.
    RetireProvisioned(RetireProvisionedArgs),
    /// Make a station's key pair for bundles encrypted at rest: writes the age X25519
    /// identity to --out (mode 0600) and prints its public key (the recipient for
    /// `batch --encrypt-to`).
    StationKey(StationKeyArgs),
    /// Make the batch-signing key pair: writes the Ed25519 private key to --out (mode 0600,
    /// for `batch --sign-with` or `[signing] key_file`) and prints its public key (for the
    /// stations' `[station] batch_keys` or `take --batch-key`).
    BatchKey(BatchKeyArgs),
    /// Hand one bundle of a batch to a flashing station, exactly once across every station
    /// sharing the batch directory: the next one, or --serial's. Exit 3: nothing left.
    Take(TakeArgs),
    /// Record what a station did with a bundle it took: flashed, or --spoiled.
    Flashed(FlashedArgs),
    /// Write a self-contained HTML floor report for a shift supervisor: per batch the status
    /// funnel, flashed and provisioned per hour, per-station spoil rates, and the boards
    /// flashed over --provision-within ago that have not provisioned.
    Report(ReportArgs),
    /// Print the shell completion script for SHELL (e.g. `claimfab completions bash >
    /// /etc/bash_completion.d/claimfab`).
    Completions(CompletionsArgs),
    /// Print the man page claimfab(1), or with --out write it and one page per subcommand
    /// (claimfab-batch(1), ...) into a directory.
    Man(ManArgs),
}

/// `claimfab report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Batch directories (each with batch.json and manifest.csv).
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,

    /// Where to write the HTML page (replaced if it exists).
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,

    /// A board flashed longer ago than this and not provisioned is listed (e.g. 24h, 3d).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub provision_within: String,

    /// Ask AWS nothing: from the batch directories alone, provisioning marked unknown.
    #[arg(long)]
    pub offline: bool,

    #[command(flatten)]
    pub limits: LimitsArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `claimfab completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `claimfab man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write claimfab.1 and a page per subcommand into this directory (made if missing)
    /// instead of printing claimfab.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `claimfab close`.
#[derive(Debug, Args)]
pub struct CloseArgs {
    /// The batch directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Retire the claims (without it, nothing changes).
    #[arg(long)]
    pub yes: bool,

    #[command(flatten)]
    pub limits: LimitsArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `claimfab retire-provisioned`.
#[derive(Debug, Args)]
pub struct RetireProvisionedArgs {
    /// Batch directories.
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,

    #[command(flatten)]
    pub limits: LimitsArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `claimfab station-key`.
#[derive(Debug, Args)]
pub struct StationKeyArgs {
    /// Where to write the identity (the secret key); must not exist. Keep it on the station.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `claimfab batch-key`.
#[derive(Debug, Args)]
pub struct BatchKeyArgs {
    /// Where to write the private key; must not exist. Keep it on the machine that makes
    /// batches, never on the shared drive.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// The station a floor command acts for: its id, or a station file naming it.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct StationArgs {
    /// The station's id (1 to 32 letters, digits, '-' or '_'), unique on the floor.
    #[arg(long, value_name = "ID")]
    pub station: Option<String>,

    /// A station file whose [station] section names the station (its id).
    #[arg(long, value_name = "FILE")]
    pub station_config: Option<PathBuf>,
}

/// `claimfab take`.
#[derive(Debug, Args)]
pub struct TakeArgs {
    /// The batch directory (made by `claimfab batch --out`), local or on a network drive.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub station: StationArgs,

    /// Take this serial's bundle (from the board's label) instead of the next one.
    #[arg(long, value_name = "S")]
    pub serial: Option<String>,

    /// Extract the bundle under PATH (the device image's root), or `-` to write the zip to
    /// standard output.
    #[arg(long, value_name = "PATH")]
    pub to: PathBuf,

    /// The station's key (from `claimfab station-key` or age-keygen), for a batch made with
    /// `--encrypt-to`: the bundle is decrypted in memory and its key written only under --to.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// A batch-signing public key this station trusts (`claimfab-ed25519:...`), besides the
    /// station file's `batch_keys`; repeat for several. With any, only bundles of a batch
    /// one of them signed are handed out.
    #[arg(long = "batch-key", value_name = "KEY")]
    pub batch_keys: Vec<String>,

    /// Hand back a bundle this station id holds even though its pending take was made on
    /// another machine (the same station id on two hosts).
    #[arg(long)]
    pub accept_other_host: bool,
}

/// `claimfab flashed`.
#[derive(Debug, Args)]
pub struct FlashedArgs {
    /// The batch directory the bundle was taken from.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub station: StationArgs,

    /// The serial of the board.
    #[arg(value_name = "SERIAL")]
    pub serial: String,

    /// The board failed: record it spoiled (its claim must then be retired).
    #[arg(long)]
    pub spoiled: bool,
}

/// `claimfab rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The batch to rotate.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The new batch directory (resumable like any batch).
    #[arg(long, value_name = "NEWDIR")]
    pub out: PathBuf,

    /// Retire (set INACTIVE) the old certificates once the new batch is complete.
    #[arg(long, conflicts_with = "retire_after")]
    pub retire_old: bool,

    /// Retire the old certificates when the command is run again after this long (7d, 12h).
    #[arg(long, value_name = "DURATION")]
    pub retire_after: Option<String>,

    #[command(flatten)]
    pub limits: LimitsArgs,

    /// The batch-signing key, when the batch is signed (the new batch is signed with it).
    #[arg(long, value_name = "FILE")]
    pub sign_with: Option<PathBuf>,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `batch --claim-scope`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ClaimScopeArg {
    /// One claim certificate and key per device: one device can be revoked alone.
    Device,
    /// One claim certificate and key for the whole batch (AWS's samples' pattern).
    Batch,
}

/// The status `revoke` sets.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RevokeStatus {
    /// Reversible: UpdateCertificate can make it ACTIVE again.
    Inactive,
    /// Final: AWS never lets a REVOKED certificate be used again.
    Revoked,
}

/// `claimfab revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The batch directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Serials to revoke, comma-separated.
    #[arg(
        long,
        value_name = "S,...",
        conflicts_with = "all",
        required_unless_present = "all"
    )]
    pub devices: Option<String>,

    /// Every device of the batch.
    #[arg(long)]
    pub all: bool,

    /// The status to set.
    #[arg(long, value_enum, ignore_case = true, default_value = "revoked")]
    pub status: RevokeStatus,

    /// Also detach the claim policy.
    #[arg(long)]
    pub detach: bool,

    /// Also delete the certificates from AWS (detaches the claim policy first).
    #[arg(long)]
    pub delete: bool,

    #[command(flatten)]
    pub limits: LimitsArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Report formats of `audit`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

/// `claimfab audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Batch directories (each with batch.json and manifest.csv).
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,

    /// Output: a human table, or json/csv for tooling.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,

    /// A device flashed longer ago than this and not provisioned is named (e.g. 24h, 3d).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub provision_within: String,

    /// Also read each provisioned device's thing principals and the things each of its
    /// device certificates is attached to (two paced calls per provisioned device), and name
    /// a device certificate attached to more than one thing.
    #[arg(long)]
    pub check_things: bool,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `claimfab verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Batch directories (with manifest.csv) and/or bundle zips.
    #[arg(value_name = "DIR|ZIP", required = true)]
    pub paths: Vec<PathBuf>,

    /// A station's age identity file: encrypted bundles are decrypted and checked in full
    /// (without it, only their SHA-256 against the manifest).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

/// `claimfab setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Station config (TOML); names come from its [provisioning] and [setup] sections.
    #[arg(long, value_name = "FILE")]
    pub station: PathBuf,

    /// Print what would be created, updated or left as is; change nothing.
    #[arg(long)]
    pub plan: bool,

    /// Update resources whose documents differ from the desired ones (otherwise reported).
    #[arg(long)]
    pub update_drifted: bool,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `claimfab batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Station config (TOML); see station-config/example.toml.
    #[arg(long, value_name = "FILE")]
    pub station: PathBuf,

    /// Batch directory: receives manifest.csv, bundles/, journal.jsonl.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    #[command(flatten)]
    pub devices: DeviceArgs,

    /// Claim policy to attach (overrides the station's provisioning.claim_policy).
    #[arg(long, value_name = "NAME")]
    pub claim_policy: Option<String>,

    /// Provisioning template devices use (overrides provisioning.template).
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,

    /// Who shares a claim certificate: each device has its own (default), or the whole batch
    /// shares one, registered once and put in every bundle.
    #[arg(long, value_enum, default_value = "device")]
    pub claim_scope: ClaimScopeArg,

    /// Encrypt each bundle (age) to this station's public key (age1...); repeat it or
    /// separate keys with commas for several stations. Bundles become bundles/SERIAL.zip.age.
    #[arg(long, value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,

    /// Encrypt each bundle to the recipients listed in FILE (one age1... per line, # comments).
    #[arg(long, value_name = "FILE")]
    pub encrypt_to_file: Vec<PathBuf>,

    /// Sign the batch with this batch-signing key (from `claimfab batch-key`; default: the
    /// station's `[signing] key_file`): stations that pin its public key take only bundles
    /// it signed.
    #[arg(long, value_name = "FILE")]
    pub sign_with: Option<PathBuf>,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Which devices a new batch is for.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Number of devices, with serials counting up from --first-serial.
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "devices",
        required_unless_present = "devices"
    )]
    pub count: Option<u64>,

    /// First serial of a counted batch; its trailing digits count up, width kept.
    #[arg(long, value_name = "S", default_value = "SN000001", requires = "count")]
    pub first_serial: String,

    /// CSV of serials (header row with a `serial` column, one device per row).
    #[arg(long = "devices", id = "devices", value_name = "FILE.csv")]
    pub csv: Option<PathBuf>,
}

/// `claimfab prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Station config (TOML): its [aws] region and endpoints, or the setup record beside it
    /// (STATION.setup.json from `claimfab setup`), say what the bundles will point at.
    #[arg(long, value_name = "FILE", required_unless_present = "rotate")]
    pub station: Option<PathBuf>,

    /// Batch directory on this (offline) machine: receives keys.age (encrypted), csrs.jsonl
    /// (to carry to the online machine), batch.json; later `package` adds the bundles.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Number of devices, with serials counting up from --first-serial.
    #[arg(long, value_name = "N", conflicts_with = "devices", required_unless_present_any = ["devices", "rotate"])]
    pub count: Option<u64>,

    /// First serial of a counted batch; its trailing digits count up, width kept.
    #[arg(long, value_name = "S", default_value = "SN000001", requires = "count")]
    pub first_serial: String,

    /// CSV of serials (header row with a `serial` column, one device per row).
    #[arg(long = "devices", id = "devices", value_name = "FILE.csv")]
    pub csv: Option<PathBuf>,

    /// New keys for the devices of batch DIR, with its configuration (a rotation: register
    /// and package the new batch, then `claimfab rotate DIR --out NEWDIR --retire-old`
    /// online retires the old claims).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["station", "count", "devices", "claim_policy", "template", "region"])]
    pub rotate: Option<PathBuf>,

    /// Claim policy the online machine attaches (overrides provisioning.claim_policy).
    #[arg(long, value_name = "NAME")]
    pub claim_policy: Option<String>,

    /// Provisioning template devices use (overrides provisioning.template).
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,

    /// AWS region the devices will provision in (else the station's aws.region, its setup
    /// record, then AWS_REGION). Nothing is sent to AWS.
    #[arg(long, value_name = "R")]
    pub region: Option<String>,

    /// Encrypt the key store (age) to this public key (age1...); repeat it or separate keys
    /// with commas for several holders.
    #[arg(long, value_name = "RECIPIENT", required_unless_present_any = ["encrypt_to_file", "passphrase", "passphrase_file"])]
    pub encrypt_to: Vec<String>,

    /// Encrypt the key store to the recipients listed in FILE (one age1... per line).
    #[arg(long, value_name = "FILE")]
    pub encrypt_to_file: Vec<PathBuf>,

    /// Encrypt the key store with a passphrase, asked for twice on the terminal.
    #[arg(long, conflicts_with_all = ["encrypt_to", "encrypt_to_file", "passphrase_file"])]
    pub passphrase: bool,

    /// Encrypt the key store with the passphrase in FILE (its first line; for scripts: keep
    /// the file off disk, e.g. `--passphrase-file <(pass show claimfab)`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["encrypt_to", "encrypt_to_file"])]
    pub passphrase_file: Option<PathBuf>,
}

/// `claimfab register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The CSR file carried from the offline machine (csrs.jsonl, from `claimfab prepare`).
    #[arg(value_name = "CSRS")]
    pub csrs: PathBuf,

    /// Batch directory on this (online) machine: receives journal.jsonl, certificates/ and
    /// certificates.jsonl (to carry back for `claimfab package`). Re-run to resume.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    #[command(flatten)]
    pub limits: LimitsArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `claimfab package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The batch directory `claimfab prepare` made on this (offline) machine.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The certificate file carried back from the online machine (certificates.jsonl, from
    /// `claimfab register`).
    #[arg(long, value_name = "FILE")]
    pub certificates: PathBuf,

    /// The age identity file that opens the key store (the secret key of one of prepare's
    /// --encrypt-to recipients).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["passphrase", "passphrase_file"])]
    pub identity: Option<PathBuf>,

    /// Open the key store with its passphrase, asked for on the terminal.
    #[arg(long, conflicts_with_all = ["identity", "passphrase_file"])]
    pub passphrase: bool,

    /// Open the key store with the passphrase on the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "identity")]
    pub passphrase_file: Option<PathBuf>,

    /// Encrypt each bundle (age) to this station's public key (age1...), as `batch
    /// --encrypt-to` does; fixed by the first package run.
    #[arg(long, value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,

    /// Encrypt each bundle to the recipients listed in FILE (one age1... per line).
    #[arg(long, value_name = "FILE")]
    pub encrypt_to_file: Vec<PathBuf>,

    /// Sign the batch with this batch-signing key (from `claimfab batch-key`), as `batch
    /// --sign-with` does; fixed by the first package run.
    #[arg(long, value_name = "FILE")]
    pub sign_with: Option<PathBuf>,
}

/// How fast a command that works on a made batch may go (`revoke`, `close`,
/// `retire-provisioned`, `rotate`): only a station file's `[limits]` are read.
#[derive(Debug, Clone, Default, Args)]
pub struct LimitsArgs {
    /// Station config for the rate limits and concurrency (default: AWS's default quotas,
    /// 16 devices at once).
    #[arg(long, value_name = "FILE")]
    pub station: Option<PathBuf>,
}

/// How to reach AWS. Each falls back to the station's or the batch's setting where there is
/// one, then to the standard AWS variables and credential chain.
#[derive(Debug, Clone, Default, Args)]
pub struct AwsArgs {
    /// AWS region (else the station's aws.region or the batch's, then AWS_REGION, the profile).
    #[arg(long, value_name = "R")]
    pub region: Option<String>,

    /// AWS named profile (else the station's aws.profile, then AWS_PROFILE).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// AWS endpoint URL for IoT, IAM and STS (else AWS_ENDPOINT_URL, else AWS's own).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

// The edge's conversions: the domain takes its own types, never clap's.

impl From<ClaimScopeArg> for crate::core::devices::ClaimScope {
    fn from(scope: ClaimScopeArg) -> Self {
        match scope {
            ClaimScopeArg::Device => Self::Device,
            ClaimScopeArg::Batch => Self::Batch,
        }
    }
}

impl From<RevokeStatus> for crate::cloud::OutOfService {
    fn from(status: RevokeStatus) -> Self {
        match status {
            RevokeStatus::Inactive => Self::Inactive,
            RevokeStatus::Revoked => Self::Revoked,
        }
    }
}

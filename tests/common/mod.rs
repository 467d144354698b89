//! Test harness for end-to-end tests: starts the project's local AWS endpoint (moto behind
//! scripts/local-aws/local_endpoint.py) on 127.0.0.1, runs the claimfab binary against it, and
//! gives tests an independent view: an AWS SDK client, openssl, and x509/zip parsers.
#![allow(dead_code)]

pub mod line;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sha2::{Digest, Sha256};

pub const REGION: &str = "us-east-1";
pub const CLAIM_POLICY: &str = "TestClaimPolicy";
/// The station's default template, which the claim policy above allows.
pub const TEMPLATE: &str = "GreengrassFleetProvisioningTemplate";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Brings up what the local endpoint needs, once per test binary, with the project's own
/// install scripts (idempotent, serialized by their own lock, quick when all is in place):
/// the venv, and for the data plane mosquitto and the broker plugin. So a plain `cargo test`
/// on a fresh clone works as `scripts/test.sh` does.
fn ensure_installed(data_plane: bool) {
    static VENV: std::sync::Once = std::sync::Once::new();
    static DATA_PLANE: std::sync::Once = std::sync::Once::new();
    let install = |script: &str| {
        let status = Command::new("bash")
            .arg(repo().join(script))
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            status.success(),
            "{script} failed (its reason is above); the local endpoint cannot start"
        );
    };
    VENV.call_once(|| install("scripts/local-aws/ensure-venv.sh"));
    if data_plane {
        DATA_PLANE.call_once(|| install("scripts/local-aws/dataplane/ensure-dataplane.sh"));
    }
}

/// A running local endpoint; stopped when dropped.
pub struct Endpoint {
    child: Child,
    pub url: String,
    pub ca_cert: PathBuf,
    _state: tempfile::TempDir,
}

impl Endpoint {
    /// Starts a fresh, empty endpoint.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a fresh endpoint with launcher options (fault injection: `--throttle OP=RPS`,
    /// `--fail OP=FRACTION`, `--lose-response OP=FRACTION`, `--seed N`).
    pub fn start_with(options: &[&str]) -> Self {
        ensure_installed(options.contains(&"--data-plane"));
        let python = repo().join(".venv/bin/python");
        let state = tempfile::tempdir().unwrap();
        let mut child = Command::new(python)
            .arg(repo().join("scripts/local-aws/local_endpoint.py"))
            .arg("--state-dir")
            .arg(state.path())
            .arg("--exit-with-parent")
            .args(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start local endpoint");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("local endpoint did not start: {line:?}"))
            .to_string();
        Self {
            child,
            url,
            ca_cert: state.path().join("test-ca.pem"),
            _state: state,
        }
    }

    /// The launcher's state directory (endpoint.json, test-ca.pem).
    pub fn state_dir(&self) -> &Path {
        self._state.path()
    }

    /// `host:port` of the local data plane's MQTT broker (the endpoint must have been started
    /// with `--data-plane`).
    pub fn data_plane_address(&self) -> String {
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.state_dir().join("endpoint.json")).unwrap(),
        )
        .unwrap();
        let dp = &info["data_plane"];
        assert!(
            dp.is_object(),
            "endpoint started without --data-plane: {info}"
        );
        format!("{}:{}", dp["host"].as_str().unwrap(), dp["port"])
    }

    /// The data plane's broker log (mosquitto's own, every packet it received).
    pub fn broker_log(&self) -> PathBuf {
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.state_dir().join("endpoint.json")).unwrap(),
        )
        .unwrap();
        PathBuf::from(info["data_plane"]["log"].as_str().unwrap())
    }

    /// How many packets of `kind` (SUBSCRIBE, PUBLISH, UNSUBSCRIBE, ...) the data plane's
    /// broker received from the client `client_id`, read from mosquitto's own log ("Received
    /// SUBSCRIBE from CLIENT_ID", one line per packet at its debug level), not from the
    /// project's plugin or service.
    pub fn packets_received(&self, kind: &str, client_id: &str) -> usize {
        let log = std::fs::read_to_string(self.broker_log()).unwrap();
        let wanted = format!(": Received {kind} from {client_id}");
        let with_details = format!("{wanted} (");
        log.lines()
            .filter(|line| line.ends_with(&wanted) || line.contains(&with_details))
            .count()
    }

    /// Provisions one test device per bundle with scripts/local-aws/device.py (AWS's device
    /// SDK, reading the bundle as `nucleus` would) and returns its JSON report per bundle.
    pub fn provision(&self, nucleus: &str, bundles: &[PathBuf]) -> Vec<serde_json::Value> {
        let mut cmd = Command::new(repo().join(".venv/bin/python"));
        cmd.arg(repo().join("scripts/local-aws/device.py"))
            .args(["--nucleus", nucleus, "--json", "--jobs", "4"])
            .arg("--connect-to")
            .arg(self.data_plane_address())
            .arg("--root-ca")
            .arg(&self.ca_cert);
        for bundle in bundles {
            cmd.arg("--bundle").arg(bundle);
        }
        let output = cmd.stdin(Stdio::null()).output().expect("run device.py");
        let stdout = String::from_utf8_lossy(&output.stdout);
        // Reports come as devices finish; put them back in the order of `bundles`.
        let mut by_bundle: HashMap<String, serde_json::Value> = stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|r| (r["bundle"].as_str().unwrap_or_default().to_string(), r))
            .collect();
        bundles
            .iter()
            .map(|b| {
                by_bundle.remove(b.to_str().unwrap()).unwrap_or_else(|| {
                    panic!(
                        "no report for {}; stdout: {stdout}\nstderr: {}",
                        b.display(),
                        String::from_utf8_lossy(&output.stderr)
                    )
                })
            })
            .collect()
    }

    /// SDK config for clients of any AWS service on this endpoint, independent of claimfab's.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_iot::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await
    }

    /// An AWS IoT client on this endpoint, independent of claimfab's own.
    pub async fn client(&self) -> aws_sdk_iot::Client {
        aws_sdk_iot::Client::new(&self.sdk_config().await)
    }

    /// Creates the claim policy (the correct one, with create-from-csr and topicfilter).
    pub async fn create_claim_policy(&self, name: &str) {
        let arn =
            |kind: &str, rest: &str| format!("arn:aws:iot:{REGION}:123456789012:{kind}/{rest}");
        let topics = |kind: &str| {
            vec![
                arn(kind, "$aws/certificates/create/*"),
                arn(kind, "$aws/certificates/create-from-csr/*"),
                arn(
                    kind,
                    "$aws/provisioning-templates/GreengrassFleetProvisioningTemplate/provision/*",
                ),
            ]
        };
        let document = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
                {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": topics("topic")},
                {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": topics("topicfilter")},
            ]
        });
        self.client()
            .await
            .create_policy()
            .policy_name(name)
            .policy_document(document.to_string())
            .send()
            .await
            .expect("create claim policy");
    }

    /// Creates an enabled provisioning template shaped as claimfab's (a ThingName parameter;
    /// thing, in `group` when given, named core policy, certificate), as `claimfab batch`
    /// checks before it creates anything.
    pub async fn create_provisioning_template(&self, name: &str, group: Option<&str>) {
        let parameters = serde_json::json!({
            "ThingName": {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"}
        });
        let mut thing = serde_json::json!({"ThingName": {"Ref": "ThingName"}});
        if let Some(group) = group {
            thing["ThingGroups"] = serde_json::json!([group]);
        }
        let body = serde_json::json!({
            "Parameters": parameters,
            "Resources": {
                "MyThing": {"Type": "AWS::IoT::Thing", "Properties": thing},
                "MyPolicy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "GreengrassV2IoTThingPolicy"}},
                "MyCertificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}}
            }
        });
        self.client()
            .await
            .create_provisioning_template()
            .template_name(name)
            .template_body(body.to_string())
            .provisioning_role_arn("arn:aws:iam::123456789012:role/GreengrassFleetProvisioningRole")
            .enabled(true)
            .send()
            .await
            .expect("create provisioning template");
    }

    /// A claimfab command aimed at this endpoint through the standard AWS variables, with no
    /// profile or config file of the machine's leaking in.
    pub fn claimfab(&self) -> Command {
        let mut cmd = claimfab_without_endpoint();
        cmd.env("AWS_ENDPOINT_URL", &self.url);
        cmd
    }

    /// Every certificate in the account: id -> (status, PEM).
    pub async fn all_certificates(&self) -> HashMap<String, (String, String)> {
        let client = self.client().await;
        let mut all = HashMap::new();
        let mut marker = None;
        loop {
            let page = client
                .list_certificates()
                .page_size(250)
                .set_marker(marker)
                .send()
                .await
                .unwrap();
            for cert in page.certificates() {
                let id = cert.certificate_id().unwrap().to_string();
                let description = client
                    .describe_certificate()
                    .certificate_id(&id)
                    .send()
                    .await
                    .unwrap()
                    .certificate_description
                    .unwrap();
                all.insert(
                    id,
                    (
                        description.status().unwrap().as_str().to_string(),
                        description.certificate_pem().unwrap().to_string(),
                    ),
                );
            }
            marker = page.next_marker().map(String::from);
            if marker.is_none() {
                return all;
            }
        }
    }

    /// ARNs of every target the policy is attached to.
    pub async fn policy_targets(&self, policy: &str) -> Vec<String> {
        let client = self.client().await;
        let mut targets = Vec::new();
        let mut marker = None;
        loop {
            let page = client
                .list_targets_for_policy()
                .policy_name(policy)
                .page_size(250)
                .set_marker(marker)
                .send()
                .await
                .unwrap();
            targets.extend(page.targets().iter().cloned());
            marker = page.next_marker().map(String::from);
            if marker.is_none() {
                return targets;
            }
        }
    }
}

impl Endpoint {
    /// A plain HTTP request to the launcher's own control paths; returns the body.
    pub fn control(&self, method: &str, path: &str) -> String {
        use std::io::Write;
        let host = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
            "{response}"
        );
        response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    /// The endpoint's per-operation counter, e.g. ("CreateCertificateFromCsr", "throttled").
    pub fn stat(&self, operation: &str, counter: &str) -> u64 {
        let stats: serde_json::Value =
            serde_json::from_str(&self.control("GET", "/_claimfab/stats")).unwrap();
        stats["operations"][operation][counter]
            .as_u64()
            .unwrap_or(0)
    }

    /// Clears every injected fault, as when AWS recovers.
    pub fn clear_faults(&self) {
        self.control("DELETE", "/_claimfab/faults");
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // SIGTERM lets the launcher stop cleanly; it also exits if we die first.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The claimfab binary under test: cargo's, or `CLAIMFAB_BIN` when set (a copy, for a
/// target directory that other checkouts build into meanwhile).
pub fn claimfab_bin() -> PathBuf {
    std::env::var_os("CLAIMFAB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_claimfab")))
}

/// The claimfab binary with a clean AWS environment (dummy credentials, test region).
pub fn claimfab_without_endpoint() -> Command {
    let mut cmd = Command::new(claimfab_bin());
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_IOT",
        "AWS_DEFAULT_REGION",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent/claimfab-test-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/claimfab-test-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    cmd
}

/// Writes a station file into `dir` with fast test limits plus `extra` TOML.
pub fn station(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("station.toml");
    let text = format!(
        "[provisioning]\nclaim_policy = \"{CLAIM_POLICY}\"\nthing_name_pattern = \"gg-{{serial}}\"\nthing_group = \"LineOne\"\n\
         {extra}\n"
    );
    let text = if extra.contains("[limits]") {
        text
    } else {
        format!(
            "{text}[limits]\ncreate_certificate_from_csr_per_second = 200\nattach_policy_per_second = 200\nconcurrency = 16\nreconcile_after_seconds = 1\n"
        )
    };
    std::fs::write(&path, text).unwrap();
    path
}

/// Every file under `dir`, with its bytes.
pub fn files(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut all = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(files(&path));
        } else {
            all.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    all
}

/// Runs a command and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let output = cmd.output().expect("run claimfab");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One manifest row, parsed with the csv crate by column name.
pub type Row = HashMap<String, String>;

pub fn read_manifest(dir: &Path) -> Vec<Row> {
    let mut reader = csv::Reader::from_path(dir.join("manifest.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "serial",
            "thing_name",
            "certificate_id",
            "certificate_arn",
            "certificate_sha256",
            "not_after",
            "bundle",
            "bundle_sha256",
            "status",
            "created_at",
            "station",
            "station_at"
        ]
    );
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .map(String::from)
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

/// The files of a bundle zip: path -> (bytes, unix mode).
pub fn unzip(path: &Path) -> HashMap<String, (Vec<u8>, u32)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut files = HashMap::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(
            entry.name().unwrap().to_string(),
            (bytes, entry.unix_mode().unwrap_or(0)),
        );
    }
    files
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of a certificate's or key's public key, computed by openssl (independent of
/// claimfab's own parsing).
pub fn openssl_public_key(kind: &str, pem_file: &Path) -> Vec<u8> {
    let mut cmd = Command::new("openssl");
    match kind {
        "cert" => cmd.args(["x509", "-noout", "-pubkey", "-in"]),
        "key" => cmd.args(["pkey", "-pubout", "-in"]),
        _ => unreachable!(),
    };
    let output = cmd.arg(pem_file).output().expect("openssl installed");
    assert!(
        output.status.success(),
        "openssl {kind}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Writes a certificate and a key as NAME.crt and NAME.key in `dir`, checks with openssl
/// that the key is the certificate's, and returns the certificate file.
pub fn assert_key_matches_certificate(
    dir: &Path,
    name: &str,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> PathBuf {
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, cert_pem).unwrap();
    std::fs::write(&key_file, key_pem).unwrap();
    assert_eq!(
        openssl_public_key("cert", &cert_file),
        openssl_public_key("key", &key_file),
        "key matches certificate for {name}"
    );
    cert_file
}

/// `openssl verify` of many certificate files against one CA; returns its stdout.
pub fn openssl_verify(ca: &Path, certs: &[PathBuf]) -> String {
    let output = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca)
        .args(certs)
        .output()
        .expect("openssl installed");
    assert!(
        output.status.success(),
        "openssl verify failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Public-key SHA-256 of a PEM certificate, with x509-parser.
pub fn cert_public_key_sha256(pem: &[u8]) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    sha256_hex(cert.public_key().raw)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Checks every invariant of a finished batch in `out` of `serials`, independently of
/// claimfab's own state: zips, keys, certificates (openssl, x509-parser), configs (YAML
/// parser), and AWS (certificate status, policy attachment, no unnamed active certificate).
pub async fn verify_batch(endpoint: &Endpoint, out: &Path, serials: &[String]) {
    verify_batch_scoped(endpoint, out, serials, false).await
}

/// [`verify_batch`] for a batch made with `--claim-scope batch` when `shared`: every bundle
/// holds the same certificate and key instead of one per device.
pub async fn verify_batch_scoped(
    endpoint: &Endpoint,
    out: &Path,
    serials: &[String],
    shared: bool,
) {
    let rows = read_manifest(out);
    assert_eq!(
        rows.iter().map(|r| r["serial"].clone()).collect::<Vec<_>>(),
        serials
    );
    let manifest_text = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
    assert!(!manifest_text.contains("PRIVATE KEY"));
    let journal_text = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    assert!(!journal_text.contains("PRIVATE KEY"));
    let amazon_root = std::fs::read("/usr/share/ca-certificates/mozilla/Amazon_Root_CA_1.crt").ok();

    let scratch = tempfile::tempdir().unwrap();
    let mut cert_files = Vec::new();
    let mut manifest_ids = std::collections::HashSet::new();
    for row in &rows {
        assert_eq!(row["status"], "ready", "{row:?}");
        assert_eq!(row["thing_name"], format!("gg-{}", row["serial"]));
        assert!(
            manifest_ids.insert(row["certificate_id"].clone()) || shared,
            "certificate reused: {row:?}"
        );
        assert!(row["certificate_arn"].ends_with(&format!("cert/{}", row["certificate_id"])));
        time::OffsetDateTime::parse(
            &row["created_at"],
            &time::format_description::well_known::Rfc3339,
        )
        .expect("created_at is RFC 3339");
        assert!(
            row["created_at"].ends_with('Z'),
            "UTC: {}",
            row["created_at"]
        );
        assert!(row["not_after"].ends_with('Z'));

        let zip_path = out.join(&row["bundle"]);
        let zip_bytes = std::fs::read(&zip_path).unwrap();
        assert_eq!(
            sha256_hex(&zip_bytes),
            row["bundle_sha256"],
            "bundle hash of {}",
            row["serial"]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&zip_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "bundle file mode");

        let files = unzip(&zip_path);
        let mut names: Vec<&str> = files.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "greengrass/v2/AmazonRootCA1.pem",
                "greengrass/v2/claim-certs/claim.pem.crt",
                "greengrass/v2/claim-certs/claim.private.pem.key",
                "greengrass/v2/init-config/config.yaml",
            ]
        );
        let (cert_pem, _) = &files["greengrass/v2/claim-certs/claim.pem.crt"];
        let (key_pem, key_mode) = &files["greengrass/v2/claim-certs/claim.private.pem.key"];
        assert_eq!(key_mode & 0o777, 0o600, "key entry mode");
        assert!(
            key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----"),
            "PKCS#8 PEM"
        );
        if let Some(root) = &amazon_root {
            assert_eq!(&files["greengrass/v2/AmazonRootCA1.pem"].0, root);
        }

        let (_, cert_der) = x509_parser::pem::parse_x509_pem(cert_pem).unwrap();
        assert_eq!(sha256_hex(&cert_der.contents), row["certificate_sha256"]);
        assert_eq!(
            row["certificate_sha256"], row["certificate_id"],
            "AWS ids are sha256(DER)"
        );
        let cert = cert_der.parse_x509().unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        if shared {
            assert_eq!(cn, "GreengrassFleetProvisioningTemplate claim");
        } else {
            assert_eq!(cn, row["thing_name"]);
        }

        cert_files.push(assert_key_matches_certificate(
            scratch.path(),
            &row["serial"],
            cert_pem,
            key_pem,
        ));

        let (config, _) = &files["greengrass/v2/init-config/config.yaml"];
        let config: serde_yaml_ng::Value = serde_yaml_ng::from_slice(config).unwrap();
        let plugin =
            &config["services"]["aws.greengrass.FleetProvisioningByClaim"]["configuration"];
        assert_eq!(
            plugin["templateParameters"]["ThingName"].as_str(),
            Some(row["thing_name"].as_str())
        );
        assert!(
            plugin["templateParameters"].get("ThingGroupName").is_none(),
            "the thing group is the template's, never the device's to send"
        );
        for key in [
            "claimCertificatePath",
            "claimCertificatePrivateKeyPath",
            "rootCaPath",
        ] {
            let path = plugin[key].as_str().unwrap();
            assert!(
                files.contains_key(path.trim_start_matches('/')),
                "{key} {path} is in the bundle"
            );
        }
        let data = plugin["iotDataEndpoint"].as_str().unwrap();
        assert!(data.ends_with("-ats.iot.us-east-1.amazonaws.com"), "{data}");
    }
    for chunk in cert_files.chunks(100) {
        let verified = openssl_verify(&endpoint.ca_cert, chunk);
        assert_eq!(
            verified.lines().filter(|l| l.ends_with(": OK")).count(),
            chunk.len()
        );
    }

    // Through the AWS API.
    let all = endpoint.all_certificates().await;
    let active: std::collections::HashSet<&String> = all
        .iter()
        .filter(|(_, (status, _))| status == "ACTIVE")
        .map(|(id, _)| id)
        .collect();
    for id in &manifest_ids {
        assert_eq!(all[id].0, "ACTIVE", "manifest certificate {id} is ACTIVE");
    }
    let unnamed: Vec<_> = active
        .iter()
        .filter(|id| !manifest_ids.contains(**id))
        .collect();
    assert!(
        unnamed.is_empty(),
        "ACTIVE certificates the manifest does not name: {unnamed:?}"
    );
    let targets: std::collections::HashSet<String> = endpoint
        .policy_targets(CLAIM_POLICY)
        .await
        .into_iter()
        .collect();
    for row in &rows {
        assert!(
            targets.contains(&row["certificate_arn"]),
            "claim policy attached to {}",
            row["serial"]
        );
    }
    // One ACTIVE certificate per device key: map every active cert's key back to a device.
    let manifest_keys: HashMap<String, String> = rows
        .iter()
        .map(|r| {
            let pem = &all[&r["certificate_id"]].1;
            (cert_public_key_sha256(pem.as_bytes()), r["serial"].clone())
        })
        .collect();
    if shared {
        assert_eq!(manifest_ids.len(), 1, "one certificate for the batch");
        assert_eq!(manifest_keys.len(), 1, "one key for the batch");
    } else {
        assert_eq!(
            manifest_keys.len(),
            rows.len(),
            "every device has its own key"
        );
    }
}

/// Serials SN000001.. as claimfab counts them by default.
pub fn counted(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("SN{i:06}")).collect()
}

/// One end-to-end scenario: a fresh endpoint (with the claim policy unless told otherwise),
/// a scratch directory with a station file, and the batch directory path.
pub struct Fixture {
    pub endpoint: Endpoint,
    pub rt: tokio::runtime::Runtime,
    pub work: tempfile::TempDir,
    pub station: PathBuf,
    pub out: PathBuf,
}

impl Fixture {
    /// A fixture whose station adds `station_extra` TOML to the test defaults.
    pub fn new(station_extra: &str) -> Self {
        Self::build(true, station_extra, &[])
    }

    /// A fixture whose endpoint has no claim policy.
    pub fn without_claim_policy() -> Self {
        Self::build(false, "", &[])
    }

    /// A fixture whose endpoint injects faults (launcher options).
    pub fn with_faults(station_extra: &str, endpoint_options: &[&str]) -> Self {
        Self::build(true, station_extra, endpoint_options)
    }

    fn build(with_policy: bool, station_extra: &str, endpoint_options: &[&str]) -> Self {
        let endpoint = Endpoint::start_with(endpoint_options);
        let rt = runtime();
        if with_policy {
            rt.block_on(endpoint.create_claim_policy(CLAIM_POLICY));
            rt.block_on(endpoint.create_provisioning_template(TEMPLATE, Some("LineOne")));
        }
        let work = tempfile::tempdir().unwrap();
        let station = station(work.path(), station_extra);
        let out = work.path().join("batch");
        Self {
            endpoint,
            rt,
            work,
            station,
            out,
        }
    }

    /// `claimfab batch --count N --out OUT --station STATION`.
    pub fn batch(&self, count: usize) -> Command {
        let mut cmd = self.endpoint.claimfab();
        cmd.args(["batch", "--count", &count.to_string(), "--out"])
            .arg(&self.out)
            .arg("--station")
            .arg(&self.station);
        cmd
    }

    /// Every invariant of a finished batch of `count` counted devices.
    pub fn verify(&self, count: usize) {
        self.rt
            .block_on(verify_batch(&self.endpoint, &self.out, &counted(count)));
    }

    /// How many journal events of this kind the batch has recorded.
    pub fn journal_events(&self, event: &str) -> usize {
        std::fs::read_to_string(self.out.join("journal.jsonl"))
            .map(|t| t.matches(&format!("\"event\":\"{event}\"")).count())
            .unwrap_or(0)
    }

    /// Waits until the journal holds `at_least` events of this kind.
    pub fn wait_for_events(&self, event: &str, at_least: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while self.journal_events(event) < at_least {
            assert!(
                std::time::Instant::now() < deadline,
                "batch made no progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

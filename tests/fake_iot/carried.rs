//! The online stage of the air-gapped flow, in process: every CSR of a carried CSR file
//! issued by the fake AWS IoT into the carried certificate file `claimfab register` would
//! write. For tests and benchmarks of `package` that do not need the real endpoint.

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use claimfab::cloud::Claims;
use claimfab::core::carried::{
    CarriedReader, CarriedWriter, CertificateLine, CertificatesHeader, CsrLine, CsrsHeader, Kind,
    FORMAT_VERSION,
};

use super::{Crash, FakeIot};

/// Issues every CSR of `csrs` (a csrs.jsonl) into `certificates`, policy attached.
pub fn issue_all(csrs: &Path, certificates: &Path) {
    let text = std::fs::read_to_string(csrs).expect("read csrs.jsonl");
    let end: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("an end line")).expect("JSON");
    let file = BufReader::new(std::fs::File::open(csrs).expect("open csrs.jsonl"));
    let (mut reader, header): (_, CsrsHeader<serde_json::Value>) =
        CarriedReader::open(file, Kind::Csrs).expect("a CSR file");
    let out = BufWriter::new(std::fs::File::create(certificates).expect("create"));
    let answer = CertificatesHeader {
        claimfab: "certificates".into(),
        version: FORMAT_VERSION,
        batch_id: header.batch_id,
        csrs_sha256: end["sha256"].as_str().expect("a checksum").to_string(),
    };
    let mut writer = CarriedWriter::new(out, Kind::Certificates, &answer).expect("write");
    let iot = FakeIot::new(Arc::new(Crash::default()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    while let Some(line) = reader.next_line::<CsrLine>().expect("a CSR line") {
        let issued = runtime
            .block_on(iot.create_certificate_from_csr(&line.csr))
            .expect("issued");
        // Only the answer is needed: the table would grow with the batch.
        iot.certificates.lock().unwrap().clear();
        writer
            .line(&CertificateLine {
                serial: line.serial,
                thing_name: line.thing_name,
                certificate_id: issued.certificate_id,
                certificate_arn: issued.certificate_arn,
                certificate_pem: issued.certificate_pem,
                policy_attached: true,
            })
            .expect("write");
    }
    writer.finish().expect("write").0.flush().expect("write");
}

//! A real RFC 3161 timestamp authority: Sigstore's `timestamp-server` (built by setup.sh from
//! `github.com/sigstore/timestamp-authority/v2`), on loopback with its in-memory signer, which
//! makes a throwaway root, intermediate and time-stamping leaf when it starts. cosign v3 asks it
//! for timestamps through a signing config; a trusted root names its chain
//! ([`TimestampServer::trust_in`]).

use std::{fs, path::Path, process::Command, time::Duration};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::{
    process::{free_local_port, Daemon, StartError},
    sigstore::{b64, rfc3339, CA_EPOCH},
    tools,
};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const BIND_ATTEMPTS: usize = 3;

/// A running timestamp-server.
#[derive(Debug)]
pub struct TimestampServer {
    daemon: Daemon,
    url: String,
    /// Its certificate chain, DER, leaf first.
    chain: Vec<Vec<u8>>,
}

// === impl TimestampServer ===

impl TimestampServer {
    /// Starts a timestamp-server with a fresh in-memory key in `dir`; panics with its log when it
    /// does not come up.
    pub async fn start_in(dir: &Path) -> TimestampServer {
        Self::try_start_in(dir)
            .await
            .unwrap_or_else(|e| panic!("timestamp-server did not start: {e}"))
    }

    pub async fn try_start_in(dir: &Path) -> Result<TimestampServer, StartError> {
        fs::create_dir_all(dir).expect("create the timestamp-server dir");
        let log = dir.join("timestamp-server.log");
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = free_local_port().expect("find a free port");
            let _ = fs::remove_file(&log);
            let mut daemon = Daemon::spawn("timestamp-server", command(port), &log)
                .unwrap_or_else(|e| panic!("spawn timestamp-server: {e}"));
            let addr = format!("127.0.0.1:{port}").parse().expect("a socket address");
            let mut chain_pem = String::new();
            let ready = daemon
                .wait_ready("GET /api/v1/timestamp/certchain answered", READY_TIMEOUT, async || {
                    match crate::pullgate::http_get(addr, "/api/v1/timestamp/certchain").await {
                        Ok((200, body)) if body.contains("BEGIN CERTIFICATE") => {
                            chain_pem = body;
                            true
                        }
                        _ => false,
                    }
                })
                .await;
            match ready {
                Ok(()) => {
                    return Ok(TimestampServer {
                        daemon,
                        url: format!("http://127.0.0.1:{port}/api/v1/timestamp"),
                        chain: pem_certificates(&chain_pem),
                    })
                }
                Err(e) if e.log_tail.contains("address already in use") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt started the server"))
    }

    /// Where timestamps are requested: `http://127.0.0.1:PORT/api/v1/timestamp`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds the authority to `root`'s `timestampAuthorities`.
    pub fn trust_in(&self, root: &mut Value) {
        let certificates: Vec<Value> = self.chain.iter().map(|der| json!({ "rawBytes": b64(der) })).collect();
        let entry = json!({
            "subject": { "organization": "local", "commonName": "Test TSA Timestamping" },
            "uri": self.url,
            "certChain": { "certificates": certificates },
            "validFor": { "start": rfc3339(CA_EPOCH) },
        });
        root["timestampAuthorities"]
            .as_array_mut()
            .expect("a trusted root lists timestampAuthorities")
            .push(entry);
    }

    /// Adds the authority to a signing config's `tsaUrls`.
    pub fn use_in(&self, signing_config: &mut Value) {
        signing_config["tsaUrls"]
            .as_array_mut()
            .expect("a signing config lists tsaUrls")
            .push(json!({
                "url": self.url,
                "majorApiVersion": 1,
                "validFor": { "start": rfc3339(CA_EPOCH) },
                "operator": "pullgate-tests",
            }));
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

fn command(port: u16) -> Command {
    let binary = tools::dir().join("bin/timestamp-server");
    assert!(
        binary.exists(),
        "{} is missing: run scripts/setup.sh --clients",
        binary.display()
    );
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .args(["--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--timestamp-signer", "memory"])
        // No NTP server is reachable here; the monitor would only log its failures.
        .arg("--disable-ntp-monitoring");
    command
}

/// The DER certificates of a PEM bundle, in order.
fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN") {
            current = Some(String::new());
        } else if line.starts_with("-----END") {
            if let Some(body) = current.take() {
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .expect("timestamp-server's chain is base64"),
                );
            }
        } else if let Some(body) = current.as_mut() {
            body.push_str(line);
        }
    }
    out
}

//! A real Rekor v2 log: rekor-tiles' POSIX server (`rekor-server` built from
//! `github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix` by setup.sh), on loopback, its
//! tiles and checkpoints in a temp dir, signing checkpoints with an Ed25519 key made per test.
//! cosign v3 signs into it through a signing config naming it ([`RekorTiles::signing_config`]);
//! pullgate and cosign trust it through a trusted root entry ([`RekorTiles::trust_in`]).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair as _},
};
use serde_json::{json, Value};

use crate::{
    process::{free_local_port, Daemon, StartError},
    sigstore::{b64, pem, rfc3339, sha256, CA_EPOCH},
    tools,
};

/// The checkpoint origin the log signs with (its `--hostname`), and so the host of the URL the
/// trusted root names it by.
pub const ORIGIN: &str = "rekor.local.test";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const BIND_ATTEMPTS: usize = 3;

/// The DER SubjectPublicKeyInfo of an Ed25519 key, before its 32 bytes (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// A running rekor-tiles server.
#[derive(Debug)]
pub struct RekorTiles {
    daemon: Daemon,
    url: String,
    spki: Vec<u8>,
    log_id: [u8; 32],
}

// === impl RekorTiles ===

impl RekorTiles {
    /// Starts a new, empty log in `dir`; panics with its log when it does not come up.
    pub async fn start_in(dir: &Path) -> RekorTiles {
        Self::try_start_in(dir)
            .await
            .unwrap_or_else(|e| panic!("rekor-tiles did not start: {e}"))
    }

    pub async fn try_start_in(dir: &Path) -> Result<RekorTiles, StartError> {
        fs::create_dir_all(dir.join("storage")).expect("create the rekor-tiles dir");
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate the log key");
        let raw = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .expect("read the log key")
            .public_key()
            .as_ref()
            .to_vec();
        let key_file = dir.join("log-key.pem");
        fs::write(&key_file, pem("PRIVATE KEY", pkcs8.as_ref())).expect("write the log key");
        // The signed-note key ID of an Ed25519 key: SHA-256(origin ‖ "\n" ‖ 0x01 ‖ key).
        let log_id = sha256(&[format!("{ORIGIN}\n").as_bytes(), &[0x01], &raw].concat());
        let spki = [&ED25519_SPKI_PREFIX[..], &raw].concat();

        let log = dir.join("rekor-tiles.log");
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = free_local_port().expect("find a free port");
            let _ = fs::remove_file(&log);
            let mut daemon = Daemon::spawn("rekor-tiles", command(dir, &key_file, port), &log)
                .unwrap_or_else(|e| panic!("spawn rekor-tiles: {e}"));
            let health = format!("127.0.0.1:{port}").parse().expect("a socket address");
            let ready = daemon
                .wait_ready("GET /healthz answered SERVING", READY_TIMEOUT, async || {
                    crate::pullgate::http_get(health, "/healthz")
                        .await
                        .is_ok_and(|(status, body)| status == 200 && body.contains("SERVING"))
                })
                .await;
            match ready {
                Ok(()) => {
                    return Ok(RekorTiles {
                        daemon,
                        url: format!("http://127.0.0.1:{port}"),
                        spki,
                        log_id,
                    })
                }
                Err(e) if e.log_tail.contains("address already in use") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt started the server"))
    }

    /// Where cosign sends entries: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The log's key ID, which is also its log ID in a trusted root.
    pub fn log_id(&self) -> [u8; 32] {
        self.log_id
    }

    /// Adds the log to `root`'s `tlogs`, named by its origin as public Rekor v2 logs are.
    pub fn trust_in(&self, root: &mut Value) {
        let entry = json!({
            "baseUrl": format!("https://{ORIGIN}"),
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": b64(&self.spki),
                "keyDetails": "PKIX_ED25519",
                "validFor": { "start": rfc3339(CA_EPOCH) },
            },
            "logId": { "keyId": b64(&self.log_id) },
        });
        root["tlogs"]
            .as_array_mut()
            .expect("a trusted root lists tlogs")
            .push(entry);
    }

    /// A trusted root naming this log only.
    pub fn trusted_root(&self) -> Value {
        let mut root = json!({
            "mediaType": crate::sigstore::trusted_root::TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [],
            "certificateAuthorities": [],
            "ctlogs": [],
            "timestampAuthorities": [],
        });
        self.trust_in(&mut root);
        root
    }

    /// A Sigstore signing config (v0.2) whose one transparency log is this one, API v2, and
    /// which names no CA and no TSA: what `cosign sign --key … --signing-config` needs.
    pub fn signing_config(&self) -> Value {
        json!({
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [],
            "oidcUrls": [],
            "rekorTlogUrls": [{
                "url": self.url,
                "majorApiVersion": 2,
                "validFor": { "start": rfc3339(CA_EPOCH) },
                "operator": "pullgate-tests",
            }],
            "tsaUrls": [],
            "rekorTlogConfig": { "selector": "ANY" },
            "tsaConfig": { "selector": "ANY" },
        })
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

fn command(dir: &Path, key_file: &Path, http_port: u16) -> Command {
    let binary: PathBuf = tools::dir().join("bin/rekor-tiles");
    assert!(
        binary.exists(),
        "{} is missing: run scripts/setup.sh --clients",
        binary.display()
    );
    let grpc_port = free_local_port().expect("find a free port");
    let metrics_port = free_local_port().expect("find a free port");
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg(format!("--hostname={ORIGIN}"))
        .arg(format!("--storage-dir={}", dir.join("storage").display()))
        .arg(format!("--signer-filepath={}", key_file.display()))
        .args(["--http-address=127.0.0.1", "--grpc-address=127.0.0.1"])
        .arg(format!("--http-port={http_port}"))
        .arg(format!("--grpc-port={grpc_port}"))
        .arg(format!("--http-metrics-port={metrics_port}"))
        // Entries are returned once a checkpoint covers them: publish often.
        .arg("--checkpoint-interval=500ms");
    command
}

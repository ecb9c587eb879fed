//! cosign v3 bundles logged in a Rekor v2 log (hashedrekord 0.0.2, an inclusion proof with a
//! signed-note checkpoint, no SET), judged by the real pullgate in front of a real containerd:
//! the entry counts as a log entry, and the signing time comes only from a trusted timestamp.
//! The log is the test Sigstore's ([`RekorV2`], for keyless signatures, which need a Fulcio
//! that cannot run here) or a real rekor-tiles server that the real cosign v3 signs into.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use pullgate_tests::{
    rekor_tiles::RekorTiles,
    sigstore::{
        attach::attach_v3_bundle,
        bundle::{cosign_sign_statement, make_v3_dsse_bundle_on_rekor_v2, COSIGN_SIGN_PREDICATE},
        unix_now, BundleSigner, RekorV2, SanKind, TestSigstore, Tsa,
    },
    timestamp_server::TimestampServer,
    tools::{cosign3, cosign_key_pair, run},
    Pullgate, TestEnv,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
const SUBJECT_REGEXP: &str = r"^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/v.*$";

struct World {
    env: TestEnv,
    sigstore: TestSigstore,
    log: RekorV2,
    tsa: Tsa,
}

impl World {
    async fn start() -> World {
        World {
            env: TestEnv::start().await,
            sigstore: TestSigstore::new(),
            log: RekorV2::generate(),
            tsa: Tsa::generate(),
        }
    }

    /// Pushes `apps/app:<tag>`, signs it keyless in the v2 log (with a timestamp when `stamped`)
    /// and attaches the bundle.
    async fn signed(&self, tag: &str, stamped: bool) {
        let digest = self.env.push_image("apps/app", tag, &format!("image {tag}")).await;
        let leaf = self.sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
        let statement = cosign_sign_statement(&format!("{}/apps/app", self.env.host()), &digest);
        let mut bundle: Value = serde_json::from_str(&make_v3_dsse_bundle_on_rekor_v2(
            &self.log,
            BundleSigner::Leaf(&leaf),
            &statement,
        ))
        .unwrap();
        if stamped {
            let signature = BASE64
                .decode(bundle["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap())
                .unwrap();
            let token = self.tsa.stamp(&signature, unix_now(), "");
            bundle["verificationMaterial"]["timestampVerificationData"] =
                json!({ "rfc3161Timestamps": [{ "signedTimestamp": BASE64.encode(token) }] });
        }
        attach_v3_bundle(
            &self.env.host(),
            "apps/app",
            &digest,
            &bundle.to_string(),
            Some(COSIGN_SIGN_PREDICATE),
            None,
        )
        .await
        .unwrap();
    }

    /// pullgate with a keyless policy over `apps/**` (log entry required, the keyless default),
    /// trusting the test Sigstore, the v2 log and the TSA.
    async fn pullgate(&self) -> Pullgate {
        let mut root = self.sigstore.trusted_root_value();
        self.log.trust_in(&mut root);
        self.tsa.trust_in(&mut root);
        let path = self.env.dir().join("trusted_root.json");
        std::fs::write(&path, root.to_string()).unwrap();
        let images = format!("{}/apps/**", self.env.host());
        let policy = pullgate_tests::policy::keyless_policy(&path, &images, ISSUER, SUBJECT_REGEXP);
        self.env.start_pullgate(&policy).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_entry_with_a_timestamp_is_admitted_and_one_without_is_denied() {
    let world = World::start().await;
    world.signed("stamped", true).await;
    world.signed("bare", false).await;
    let pg = world.pullgate().await;

    let image = world.env.image_ref("apps/app", "stamped");
    pg.pull(&image, None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow", "{record}");
    assert_eq!(record["signatures"][0]["tlogIndex"], 0, "{record}");
    assert_eq!(record["signatures"][0]["timeSource"], "tsa", "{record}");

    // The v2 entry proves the signature was logged, not when: without a timestamp nothing shows
    // the certificate was valid when it signed.
    let image = world.env.image_ref("apps/app", "bare");
    let status = pg.pull(&image, None).await.unwrap_err();
    assert!(status.message().contains("1 invalid"), "{}", status.message());
    let record = pg.last_record();
    assert_eq!(record["decision"], "deny", "{record}");
    assert!(
        record["rejected"][0].as_str().unwrap().contains("timestamp"),
        "{record}"
    );
    assert_eq!(world.env.containerd.image_id(&image).await, None);
}

/// cosign v3 `sign --key` through a signing config naming a real Rekor v2 log: pullgate checks
/// the entry offline (inclusion proof, checkpoint signed by the log key of the trusted root,
/// body matched to the signature) and records its index, with no signing time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cosign_v3_signature_logged_in_a_real_rekor_v2_meets_a_required_log() {
    let env = TestEnv::start().await;
    let log = RekorTiles::start_in(&env.dir().join("rekor-tiles")).await;
    let home = env.dir().join("ci");
    let (key, public) = cosign_key_pair(cosign3, &home);
    let (root, config) = (home.join("trusted_root.json"), home.join("signing_config.json"));
    std::fs::write(&root, log.trusted_root().to_string()).unwrap();
    std::fs::write(&config, log.signing_config().to_string()).unwrap();
    let mut logged = Vec::new();
    for tag in ["first", "second"] {
        let digest = env.push_image("apps/app", tag, tag).await;
        run(cosign3(&home)
            .args(["sign", "--key"])
            .arg(&key)
            .arg("--signing-config")
            .arg(&config)
            .arg("--trusted-root")
            .arg(&root)
            .arg(env.image_ref("apps/app", &digest)));
        logged.push(tag);
    }
    // The same key without the log.
    let digest = env.push_image("apps/app", "unlogged", "unlogged").await;
    run(cosign3(&home)
        .args(["sign", "--use-signing-config=false", "--tlog-upload=false", "--key"])
        .arg(&key)
        .arg(env.image_ref("apps/app", &digest)));

    let policy = key_policy_with_root(&env, &root, &public);
    let pg = env.start_pullgate(&policy).await;
    for (index, tag) in logged.iter().enumerate() {
        pg.pull(&env.image_ref("apps/app", tag), None)
            .await
            .unwrap_or_else(|s| panic!("{tag}: {}\n{}\n{}", s.message(), pg.log(), log.log()));
        let record = pg.last_record();
        assert_eq!(record["signatures"][0]["tlogIndex"], index, "{record}");
        assert_eq!(record["signatures"][0]["timeSource"], "none", "{record}");
        assert!(record["signatures"][0].get("signedAt").is_none(), "{record}");
    }
    let status = pg.pull(&env.image_ref("apps/app", "unlogged"), None).await.unwrap_err();
    assert!(status.message().contains("release"), "{}", status.message());
    assert_eq!(pg.last_record()["decision"], "deny");
    drop(pg);

    // A node that trusts another Rekor v2 log does not take this log's checkpoints.
    let mut other = log.trusted_root();
    other["tlogs"] = json!([RekorV2::generate().trusted_root_entry()]);
    std::fs::write(&root, other.to_string()).unwrap();
    let pg = env.start_pullgate(&policy).await;
    pg.pull(&env.image_ref("apps/app", "first"), None).await.unwrap_err();
    assert_eq!(pg.last_record()["decision"], "deny");
}

/// A policy over `apps/**` requiring the key `public` and a log entry, checked against `root`.
fn key_policy_with_root(env: &TestEnv, root: &std::path::Path, public: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: logged
spec:
  trustedRoot: {root}
  rules:
    - name: apps
      images: [{images}]
      authorities:
        - name: release
          tlog: required
          key:
            publicKey: |
{pem}",
        root = q(&root.display().to_string()),
        images = q(&format!("{}/apps/**", env.host())),
        pem = pullgate_tests::policy::key_block(public),
    )
}

/// cosign v3 with a signing config naming a real Rekor v2 log and a real TSA: the bundle carries
/// the v2 entry and an RFC 3161 timestamp, and pullgate records the timestamp's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cosign_v3_signature_on_rekor_v2_is_dated_by_a_real_tsa() {
    let env = TestEnv::start().await;
    let log = RekorTiles::start_in(&env.dir().join("rekor-tiles")).await;
    let tsa = TimestampServer::start_in(&env.dir().join("tsa")).await;
    let home = env.dir().join("ci");
    let (key, public) = cosign_key_pair(cosign3, &home);
    let (mut trusted, mut signing) = (log.trusted_root(), log.signing_config());
    tsa.trust_in(&mut trusted);
    tsa.use_in(&mut signing);
    let (root, config) = (home.join("trusted_root.json"), home.join("signing_config.json"));
    std::fs::write(&root, trusted.to_string()).unwrap();
    std::fs::write(&config, signing.to_string()).unwrap();
    let digest = env.push_image("apps/app", "v1", "stamped").await;
    let before = unix_now();
    run(cosign3(&home)
        .args(["sign", "--key"])
        .arg(&key)
        .arg("--signing-config")
        .arg(&config)
        .arg("--trusted-root")
        .arg(&root)
        .arg(env.image_ref("apps/app", &digest)));

    let pg = env.start_pullgate(&key_policy_with_root(&env, &root, &public)).await;
    pg.pull(&env.image_ref("apps/app", "v1"), None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}\n{}", s.message(), pg.log(), tsa.log()));
    let record = pg.last_record();
    let signature = &record["signatures"][0];
    assert_eq!(signature["tlogIndex"], 0, "{record}");
    assert_eq!(signature["timeSource"], "tsa", "{record}");
    let signed_at = signature["signedAt"].as_i64().unwrap_or_else(|| panic!("{record}"));
    assert!(
        (before - 1..=unix_now()).contains(&signed_at),
        "{signed_at} not in [{before}, now]"
    );
}

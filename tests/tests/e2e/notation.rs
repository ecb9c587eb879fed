//! Notary Project (Notation) signatures judged by the real pullgate in front of a real
//! containerd, in a real registry (distribution 2.8: no referrers API, so signatures live under
//! the referrers tag `sha256-<hex>`). The good signatures, JWS and COSE, are made by the real
//! notation CLI (setup.sh's build, `notation cert generate-test` and `notation sign`); what the
//! CLI will not make — expired signatures and certificates, leaves without code signing,
//! swapped payloads — by the kit's signer written from the specifications
//! (`pullgate_tests::notation`).

use std::path::{Path, PathBuf};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use pullgate_tests::{
    distribution::{get_blob, get_manifest},
    notation::{
        self as kit, ExtendedKeyUsagePurpose, Format, KeyKind, LeafRequest, NotationCa, NotationSigner, SignRequest,
        COSE_MEDIA_TYPE, JWS_MEDIA_TYPE, LEAF_IDENTITY,
    },
    policy::key_block,
    sigstore::{attach::Subject, unix_now},
    tools::{cosign3, cosign_key_pair, notation, run},
    Pullgate, TestEnv,
};
use serde_json::{json, Value};

const PREFIX: &str = "SignatureValidationFailed: ";
const REPO: &str = "apps/app";
/// The subject `notation cert generate-test pullgate.test` gives its certificate.
const CLI_IDENTITY: &str = "x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=pullgate.test";

struct Rig {
    env: TestEnv,
}

impl Rig {
    async fn start() -> Rig {
        Rig {
            env: TestEnv::start().await,
        }
    }

    /// Pushes `apps/app:<tag>`; its digest.
    async fn push(&self, tag: &str) -> String {
        self.env.push_image(REPO, tag, &format!("content of {tag}")).await
    }

    fn by_digest(&self, digest: &str) -> String {
        self.env.image_ref(REPO, digest)
    }

    fn image(&self, tag: &str) -> String {
        self.env.image_ref(REPO, tag)
    }

    /// A home of its own for one notation user, with a test key and certificate named
    /// `pullgate.test` made by `notation cert generate-test`; the certificate's path.
    fn notary(&self, name: &str) -> (PathBuf, PathBuf) {
        let home = self.env.dir().join(name);
        std::fs::create_dir_all(&home).unwrap();
        run(notation(&home).args(["cert", "generate-test", "--default", "pullgate.test"]));
        let certificate = home.join(".config/notation/localkeys/pullgate.test.crt");
        assert!(certificate.exists(), "notation wrote no {}", certificate.display());
        (home, certificate)
    }

    /// `notation sign` of `apps/app@digest` in `format` (`jws` or `cose`), over plain HTTP.
    fn cli_sign(&self, home: &Path, digest: &str, format: &str) {
        run(notation(home)
            .args(["sign", "--insecure-registry", "--signature-format", format])
            .arg(self.by_digest(digest)));
    }

    /// The image's manifest descriptor, as the registry serves it.
    async fn subject(&self, digest: &str) -> (String, usize) {
        let (bytes, media_type) = get_manifest(&self.env.host(), REPO, digest, self.env.auth())
            .await
            .unwrap();
        (media_type, bytes.len())
    }

    /// Attaches a kit envelope signing `target` (a descriptor) to the image `digest`.
    async fn attach(&self, digest: &str, envelope: &[u8], format: Format) {
        let (media_type, size) = self.subject(digest).await;
        let subject = Subject {
            digest,
            media_type: &media_type,
            size,
        };
        let envelope_type = match format {
            Format::Jws => JWS_MEDIA_TYPE,
            Format::Cose => COSE_MEDIA_TYPE,
        };
        kit::attach(
            &self.env.host(),
            REPO,
            subject,
            envelope,
            envelope_type,
            self.env.auth(),
        )
        .await
        .unwrap();
    }

    /// The `targetArtifact` of the image `digest`.
    async fn target(&self, digest: &str) -> Value {
        let (media_type, size) = self.subject(digest).await;
        json!({"mediaType": media_type, "digest": digest, "size": size})
    }

    async fn pullgate(&self, authorities: &str) -> Pullgate {
        let images = format!("{}/apps/**", self.env.host());
        let policy = format!(
            "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: test
spec:
  rules:
    - name: signed
      images: [\"{images}\"]
      authorities:
{authorities}"
        );
        self.env.start_pullgate(&policy).await
    }
}

/// A Notation authority item trusting the certificates of `store` (a path) and `identity`.
fn notation_authority(name: &str, store: &Path, identity: &str) -> String {
    format!(
        "        - name: {name}\n          notation:\n            certificates: {}\n            trustedIdentities: [\"{identity}\"]\n",
        store.display()
    )
}

/// Writes DER certificates as one PEM file.
fn pem_file(path: &Path, certificates: &[&[u8]]) -> PathBuf {
    let mut text = String::new();
    for der in certificates {
        let body = BASE64.encode(der);
        text.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            text.push_str(std::str::from_utf8(line).unwrap());
            text.push('\n');
        }
        text.push_str("-----END CERTIFICATE-----\n");
    }
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

async fn admitted(pg: &Pullgate, image: &str) -> Value {
    pg.pull(image, None)
        .await
        .unwrap_or_else(|e| panic!("{image}: {}\n{}", e.message(), pg.log()));
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow", "{record}");
    record
}

async fn denied(pg: &Pullgate, image: &str) -> String {
    let status = pg.pull(image, None).await.expect_err(image);
    let message = status.message().to_string();
    assert!(message.starts_with(PREFIX), "{message}");
    assert_eq!(pg.last_record()["decision"], "deny");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notation_cli_signatures_admit_in_jws_and_cose_and_unsigned_images_are_denied() {
    let rig = Rig::start().await;
    let (home, certificate) = rig.notary("alice");
    let jws = rig.push("jws").await;
    let cose = rig.push("cose").await;
    rig.push("unsigned").await;
    rig.cli_sign(&home, &jws, "jws");
    rig.cli_sign(&home, &cose, "cose");

    let pg = rig
        .pullgate(&notation_authority("notary", &certificate, CLI_IDENTITY))
        .await;
    // One by tag, one pinned as kubelet pulls `image: repo@sha256:…`: a pinned digest's
    // descriptor is resolved too, for the signature's target to be matched against.
    for image in [rig.image("jws"), rig.by_digest(&cose)] {
        let record = admitted(&pg, &image).await;
        let signature = &record["signatures"][0];
        assert_eq!(signature["authority"], "notary", "{record}");
        assert_eq!(signature["kind"], "notation", "{record}");
        assert_eq!(signature["scheme"], "notary.x509", "{record}");
        assert_eq!(signature["timeSource"], "now", "{record}");
        assert_eq!(
            signature["subject"], "C=US, ST=WA, L=Seattle, O=Notary, CN=pullgate.test",
            "{record}"
        );
    }
    let message = denied(&pg, &rig.image("unsigned")).await;
    assert!(
        message.ends_with("no signature from authority \"notary\" (no signatures found)"),
        "{message}"
    );

    // `pullgate verify` shows the same evidence.
    let output = Pullgate::command()
        .args(["verify", "--config"])
        .arg(pg.config_path())
        .arg(rig.image("cose"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("  signed   authority \"notary\" (notation)\n"), "{text}");
    assert!(
        text.contains("  subject  C=US, ST=WA, L=Seattle, O=Notary, CN=pullgate.test\n"),
        "{text}"
    );
    assert!(
        text.contains("  scheme   notary.x509 (chain checked at: now)\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notation_signatures_under_another_ca_or_identity_are_refused() {
    let rig = Rig::start().await;
    let (home, certificate) = rig.notary("alice");
    let (_, other_certificate) = rig.notary("mallory");
    let digest = rig.push("v1").await;
    rig.cli_sign(&home, &digest, "jws");

    let pg = rig
        .pullgate(&notation_authority("notary", &other_certificate, CLI_IDENTITY))
        .await;
    let message = denied(&pg, &rig.image("v1")).await;
    assert!(message.contains("1 notation untrusted chain"), "{message}");
    drop(pg);

    let stranger = "x509.subject: C=US, ST=WA, O=Notary, CN=someone else";
    let pg = rig
        .pullgate(&notation_authority("notary", &certificate, stranger))
        .await;
    let message = denied(&pg, &rig.image("v1")).await;
    assert!(message.contains("1 notation identity mismatch"), "{message}");
    let rejected = pg.last_record()["rejected"][0].as_str().unwrap_or_default().to_string();
    assert!(rejected.contains("CN=pullgate.test"), "{rejected}");
}

/// A signature of one image copied, envelope and all, into another image's referrers (a new
/// manifest whose subject is the other image): its payload names the first image, so it counts
/// for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notation_signature_copied_to_another_images_referrers_signs_another_artifact() {
    let rig = Rig::start().await;
    let (home, certificate) = rig.notary("alice");
    let signed = rig.push("signed").await;
    let other = rig.push("other").await;
    rig.cli_sign(&home, &signed, "cose");

    let (host, auth) = (rig.env.host(), rig.env.auth());
    let index = pullgate_tests::sigstore::attach::read_referrers_tag(&host, REPO, &signed, auth)
        .await
        .unwrap()
        .expect("notation wrote the referrers tag");
    let signature = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let (manifest, _) = get_manifest(&host, REPO, &signature, auth).await.unwrap();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        kit::SIGNATURE_ARTIFACT_TYPE,
        "{manifest}"
    );
    let layer = &manifest["layers"][0];
    let envelope = get_blob(&host, REPO, layer["digest"].as_str().unwrap(), auth)
        .await
        .unwrap();
    rig.attach(&other, &envelope, Format::Cose).await;

    let pg = rig
        .pullgate(&notation_authority("notary", &certificate, CLI_IDENTITY))
        .await;
    admitted(&pg, &rig.image("signed")).await;
    let message = denied(&pg, &rig.image("other")).await;
    assert!(message.contains("1 notation signs another artifact"), "{message}");
}

/// A rule with a cosign key and a Notation trust store: a signature by either admits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_mixing_cosign_and_notation_authorities_is_satisfied_by_either() {
    let rig = Rig::start().await;
    let (home, certificate) = rig.notary("alice");
    let cosign_home = rig.env.dir().join("bob");
    let (key, public) = cosign_key_pair(cosign3, &cosign_home);
    let by_cosign = rig.push("by-cosign").await;
    let by_notation = rig.push("by-notation").await;
    rig.push("unsigned").await;
    run(cosign3(&cosign_home)
        .args(["sign", "--key"])
        .arg(&key)
        // With a key and no log: no signing config from public Sigstore. A v3 bundle referrer.
        .args(["--tlog-upload=false", "--use-signing-config=false"])
        .arg(rig.by_digest(&by_cosign)));
    rig.cli_sign(&home, &by_notation, "jws");

    let authorities = format!(
        "        - name: release-key\n          key:\n            publicKey: |\n{}{}",
        key_block(&public),
        notation_authority("notary", &certificate, CLI_IDENTITY)
    );
    let pg = rig.pullgate(&authorities).await;
    let record = admitted(&pg, &rig.image("by-cosign")).await;
    assert_eq!(record["signatures"][0]["authority"], "release-key", "{record}");
    assert_eq!(record["signatures"][0]["kind"], "key", "{record}");
    let record = admitted(&pg, &rig.image("by-notation")).await;
    assert_eq!(record["signatures"][0]["authority"], "notary", "{record}");
    assert_eq!(record["signatures"][0]["kind"], "notation", "{record}");
    let message = denied(&pg, &rig.image("unsigned")).await;
    assert!(
        message.contains("no signature from authority \"release-key\" or \"notary\""),
        "{message}"
    );
}

/// What the notation CLI will not make, from the kit's signer, each on an image of its own and
/// in both envelopes; a good kit envelope beside them shows the authority can admit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kit_envelopes_the_cli_will_not_make_are_refused_for_what_is_wrong() {
    const DAY: i64 = 86_400;
    let rig = Rig::start().await;
    let ca = NotationCa::generate(KeyKind::EcP256);
    let good = ca.signer(KeyKind::EcP256);
    let expired_leaf = ca.issue(&LeafRequest {
        not_before: unix_now() - 30 * DAY,
        not_after: unix_now() - 10 * DAY,
        ..LeafRequest::new(KeyKind::EcP256)
    });
    let no_code_signing = ca.issue(&LeafRequest {
        extended_key_usages: vec![ExtendedKeyUsagePurpose::ServerAuth],
        ..LeafRequest::new(KeyKind::EcP256)
    });
    type Case = (&'static str, fn(SignRequest) -> SignRequest, &'static str);
    let cases: [(&NotationSigner, Case); 5] = [
        (&good, ("good", |r| r, "")),
        (
            &good,
            (
                "expired",
                |r| SignRequest {
                    expiry: Some(unix_now() - DAY),
                    ..r
                },
                "1 notation expired",
            ),
        ),
        // Signed while the certificate was valid, it says; without a countersignature that claim
        // is worth nothing, and the certificate has expired now.
        (
            &expired_leaf,
            (
                "cert-expired",
                |r| SignRequest {
                    signing_time: unix_now() - 20 * DAY,
                    ..r
                },
                "1 notation certificate not valid",
            ),
        ),
        (
            &no_code_signing,
            ("no-eku", |r| r, "1 notation certificate requirements"),
        ),
        (
            &good,
            (
                "tampered",
                |r| {
                    let mut swapped = r.descriptor.clone();
                    swapped["annotations"] = json!({"added": "after signing"});
                    SignRequest {
                        substitute_payload: Some(serde_json::to_vec(&json!({"targetArtifact": swapped})).unwrap()),
                        ..r
                    }
                },
                "1 notation bad signature",
            ),
        ),
    ];
    for format in [Format::Jws, Format::Cose] {
        for (signer, (tag, make, _)) in &cases {
            let digest = rig.push(&format!("{tag}-{format:?}")).await;
            let request = make(SignRequest::new(rig.target(&digest).await));
            rig.attach(&digest, &signer.sign(format, &request, None), format).await;
        }
    }
    let store = pem_file(&rig.env.dir().join("kit-ca.pem"), &[ca.root_der()]);
    let pg = rig.pullgate(&notation_authority("notary", &store, LEAF_IDENTITY)).await;
    for format in [Format::Jws, Format::Cose] {
        for (_, (tag, _, expected)) in &cases {
            let image = rig.image(&format!("{tag}-{format:?}"));
            if expected.is_empty() {
                admitted(&pg, &image).await;
                continue;
            }
            let message = denied(&pg, &image).await;
            assert!(message.contains(expected), "{tag} {format:?}: {message}");
        }
    }
}

/// A signing certificate that has expired, with a countersignature from inside its validity:
/// admitted by an authority trusting the TSA (the chain checked at the countersignature's
/// time), denied by one that trusts no TSA, and denied when the TSA is another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_timestamp_keeps_a_signature_of_an_expired_certificate_valid() {
    const DAY: i64 = 86_400;
    let rig = Rig::start().await;
    let ca = NotationCa::generate(KeyKind::EcP256);
    let tsa = pullgate_tests::sigstore::Tsa::generate_notary(false);
    let stranger = pullgate_tests::sigstore::Tsa::generate_notary(false);
    let signer = ca.issue(&LeafRequest {
        not_before: unix_now() - 30 * DAY,
        not_after: unix_now() - 3 * DAY,
        ..LeafRequest::new(KeyKind::EcP256)
    });
    let stamped = unix_now() - 5 * DAY;
    for (tag, by) in [("stamped", &tsa), ("stranger", &stranger)] {
        let digest = rig.push(tag).await;
        let mut request = SignRequest::new(rig.target(&digest).await);
        request.signing_time = stamped;
        request.timestamp_at = Some(stamped);
        rig.attach(&digest, &signer.sign(Format::Cose, &request, Some(by)), Format::Cose)
            .await;
    }
    let store = pem_file(&rig.env.dir().join("kit-ca.pem"), &[ca.root_der()]);
    let tsa_store = pem_file(&rig.env.dir().join("tsa.pem"), &[tsa.root_der()]);
    let with_tsa = format!(
        "{}            tsaCertificates: {}\n",
        notation_authority("notary", &store, LEAF_IDENTITY),
        tsa_store.display()
    );

    let pg = rig.pullgate(&with_tsa).await;
    let record = admitted(&pg, &rig.image("stamped")).await;
    assert_eq!(record["signatures"][0]["timeSource"], "tsa", "{record}");
    assert_eq!(record["signatures"][0]["signedAt"], stamped, "{record}");
    let message = denied(&pg, &rig.image("stranger")).await;
    assert!(message.contains("1 notation timestamp"), "{message}");
    drop(pg);

    let pg = rig.pullgate(&notation_authority("notary", &store, LEAF_IDENTITY)).await;
    let message = denied(&pg, &rig.image("stamped")).await;
    assert!(message.contains("1 notation certificate not valid"), "{message}");
}

/// A signature with a signed expiry admits the image until then and no longer: once it has
/// passed, ImageStatus stops showing the pulled image (kubelet pulls again) and the new pull is
/// refused, not served from the verification cache, as for an attestation past its `maxAge`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_lapses_when_the_notation_signature_expires() {
    let rig = Rig::start().await;
    let ca = NotationCa::generate(KeyKind::EcP256);
    let store = pem_file(&rig.env.dir().join("kit-ca.pem"), &[ca.root_der()]);
    let pg = rig.pullgate(&notation_authority("notary", &store, LEAF_IDENTITY)).await;
    let digest = rig.push("expiring").await;
    let mut request = SignRequest::new(rig.target(&digest).await);
    let expiry = unix_now() + 15;
    request.expiry = Some(expiry);
    let signer = ca.signer(KeyKind::EcP256);
    rig.attach(&digest, &signer.sign(Format::Jws, &request, None), Format::Jws)
        .await;
    let image = rig.image("expiring");
    admitted(&pg, &image).await;
    let shown = || async {
        pg.client()
            .image_status(pullgate_tests::cri::image_status_request(&image))
            .await
            .unwrap()
            .into_inner()
            .image
    };
    assert!(shown().await.is_some(), "the verified image is shown");
    let left = u64::try_from(expiry + 1 - unix_now()).unwrap_or(0);
    tokio::time::sleep(std::time::Duration::from_secs(left)).await;
    assert!(
        shown().await.is_none(),
        "an image whose signature expired is no longer shown"
    );
    let message = denied(&pg, &image).await;
    assert!(message.contains("1 notation expired"), "{message}");
}

//! The judge's verdict on what is attached to an image, for a rule that requires no signature
//! (`requireSignature: false`): only its attestations, signed by its authorities and naming the
//! digest, admit the image, and the same attachments never satisfy a rule that requires one.

use std::{collections::BTreeMap, path::Path, time::Instant};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use sigstore_crypto::KeyPair;

use super::judge::{judge_attached, Judgement};
use crate::{
    admission::Admission,
    denial::Cause,
    policy::{Mode, Policy},
    reference::{Digest, Reference},
    verify::attached::{Attached, Payload, SignatureLayer, PREDICATE_TYPE_ANNOTATION},
};

const SLSA_V1: &str = "https://slsa.dev/provenance/v1";

/// One rule over `ghcr.io/org/**` whose authority is `key`; `extra` goes after `images`.
fn policy(key: &KeyPair, extra: &str) -> Policy {
    let pem = key.public_key_der().unwrap().to_pem();
    let pem: String = pem.lines().map(|l| format!("              {l}\n")).collect();
    let text = format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: test
spec:
  rules:
    - name: github
      images: [\"ghcr.io/org/**\"]
{extra}      authorities:
        - name: release
          key:
            publicKey: |
{pem}      attestations:
        - name: provenance
          predicateType: {SLSA_V1}
          conditions:
            - 'predicate.builder == \"github\"'
"
    );
    Policy::from_str(&text, Path::new("/etc/pullgate/policy.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// A legacy `.att` layer: provenance about `subject` built by `builder`, signed by `key`.
fn provenance(key: &KeyPair, subject: &Digest, builder: &str) -> SignatureLayer {
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "ghcr.io/org/app", "digest": {"sha256": subject.hex()}}],
        "predicateType": SLSA_V1,
        "predicate": {"builder": builder},
    })
    .to_string();
    let pae = sigstore_types::pae("application/vnd.in-toto+json", statement.as_bytes());
    let envelope = serde_json::json!({
        "payloadType": "application/vnd.in-toto+json",
        "payload": BASE64.encode(&statement),
        "signatures": [{"keyid": "", "sig": BASE64.encode(key.sign(&pae).unwrap().as_bytes())}],
    });
    SignatureLayer {
        media_type: "application/vnd.dsse.envelope.v1+json".into(),
        annotations: BTreeMap::from([(PREDICATE_TYPE_ANNOTATION.to_string(), SLSA_V1.to_string())]),
        payload: Payload::Fetched(envelope.to_string().into_bytes()),
    }
}

/// The judgement of `attached` under the policy's only rule, as the gate records it.
fn judge(policy: &Policy, attached: &Attached) -> Judgement {
    let digest = Digest::of(b"the image manifest");
    let reference = Reference::parse(&format!("ghcr.io/org/app@{digest}")).unwrap();
    let rule = &policy.rules()[0];
    let verdict = judge_attached(&reference, &digest, attached, rule, policy.trust()).map(Admission::Verified);
    Judgement::new(
        reference.to_string(),
        Some(&reference),
        Some(rule.name().to_string()),
        Mode::Enforce,
        verdict,
        None,
    )
}

fn with(layers: Vec<SignatureLayer>) -> Attached {
    Attached {
        attestations: layers,
        ..Attached::default()
    }
}

#[test]
fn only_attestations_signed_by_the_rule_about_the_digest_admit_without_a_signature() {
    let key = KeyPair::generate_ecdsa_p256().unwrap();
    let stranger = KeyPair::generate_ecdsa_p256().unwrap();
    let unsigned = policy(&key, "      requireSignature: false\n");
    let digest = Digest::of(b"the image manifest");

    let judgement = judge(&unsigned, &with(vec![provenance(&key, &digest, "github")]));
    let Ok(Admission::Verified(verified)) = &judgement.verdict else {
        panic!(
            "admitted: {:?}",
            judgement.verdict.as_ref().err().map(ToString::to_string)
        );
    };
    assert!(verified.evidence().is_empty());
    let record = judgement.record("default", "web-0", Instant::now());
    assert!(record.signatures.is_empty(), "no image signature was proven");
    assert_eq!(record.attestations[0].result, "pass");
    assert_eq!(
        record.attestations[0].signature.as_ref().map(|s| s.authority.as_str()),
        Some("release")
    );
    assert_eq!(
        record.reason,
        "no signature required; proven by attestation \"provenance\" signed by authority \"release\""
    );

    let other = Digest::of(b"another image manifest");
    let refused = [
        (Attached::default(), "no attestation of this predicate type"),
        (with(vec![provenance(&stranger, &digest, "github")]), "key mismatch"),
        (with(vec![provenance(&key, &other, "github")]), "not this image"),
        (with(vec![provenance(&key, &digest, "elsewhere")]), "is false"),
    ];
    for (attached, why) in refused {
        let judgement = judge(&unsigned, &attached);
        let Err(denial) = &judgement.verdict else {
            panic!("{why}: admitted");
        };
        assert!(
            matches!(denial.cause, Cause::Unattested(_)),
            "{why}: {:?}",
            denial.cause
        );
        let message = denial.to_string();
        assert!(
            message.starts_with("SignatureValidationFailed: ghcr.io/org/app@sha256:"),
            "{message}"
        );
        assert!(
            message.contains(
                "rule \"github\": no signature required, but the attestations that must prove the image do not: \
                 attestation \"provenance\" (SLSA provenance v1, https://slsa.dev/provenance/v1): "
            ),
            "{message}"
        );
        assert!(message.contains(why), "{why}: {message}");
        let record = judgement.record("default", "web-0", Instant::now());
        assert_eq!(record.attestations[0].result, "fail", "{why}");
    }
}

#[test]
fn the_same_attestation_does_not_satisfy_a_rule_that_requires_a_signature() {
    let key = KeyPair::generate_ecdsa_p256().unwrap();
    let digest = Digest::of(b"the image manifest");
    for extra in ["", "      requireSignature: true\n"] {
        let signed = policy(&key, extra);
        let judgement = judge(&signed, &with(vec![provenance(&key, &digest, "github")]));
        let Err(denial) = &judgement.verdict else {
            panic!("{extra:?}: admitted without a signature");
        };
        assert!(matches!(denial.cause, Cause::Unverified(..)), "{:?}", denial.cause);
        assert!(
            denial.to_string().contains("no signature from authority \"release\""),
            "{denial}"
        );
    }
}

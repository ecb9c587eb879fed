//! Attestations as the only proof of an image (`requireSignature: false`), in the shape GitHub's
//! `actions/attest` makes them: a bundle v0.3 whose DSSE envelope holds an in-toto Statement v1
//! with SLSA provenance v1 about the image digest, signed with a Fulcio certificate for the
//! workflow, and either logged in Rekor (public repositories) or timestamped by a TSA with no
//! log entry (private repositories). No image signature is attached.

use std::collections::BTreeMap;

use pullgate_tests::sigstore::{
    cosign_sign_statement, in_toto_statement, make_v3_dsse_bundle, unix_now, BundleSigner, Leaf, SanKind, TestSigstore,
    Tsa,
};
use serde_json::{json, Value};

use super::*;
use crate::attached::{AttachedBundle, Referrers};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main";
const SLSA_V1: &str = "https://slsa.dev/provenance/v1";

/// The authority a GitHub user writes: the Actions issuer and the workflow, as a regexp.
fn github_authority(tlog: Tlog) -> Authority {
    let subject = crate::Re2Regex::new(r"^https://github\.com/org/repo/\.github/workflows/release\.yml@").unwrap();
    Authority {
        name: "github".into(),
        kind: AuthorityKind::Keyless(Keyless {
            issuer: IdentityMatch::Exact(ISSUER.into()),
            subject: IdentityMatch::RegExp(subject),
            extensions: BTreeMap::new(),
            trusted_root: None,
        }),
        tlog,
    }
}

fn provenance(repository: &str) -> Value {
    json!({
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {"ref": "refs/heads/main", "repository": repository, "path": ".github/workflows/release.yml"}}
        },
        "runDetails": {"builder": {"id": "https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main"}}
    })
}

fn provenance_requirement(conditions: &[&str]) -> Attestation {
    let texts: Vec<String> = conditions.iter().map(|c| c.to_string()).collect();
    Attestation {
        name: "provenance".into(),
        predicate_type: SLSA_V1.into(),
        max_age: None,
        conditions: Condition::compile_all(&texts).into_iter().map(|c| c.unwrap()).collect(),
    }
}

/// What the registry holds for an image attested by `actions/attest` with push-to-registry:
/// one bundle referrer, announced with its predicate type, and nothing else.
fn referred(bundle: &str, predicate_type: &str) -> Attached {
    Attached {
        referrers: Referrers {
            bundles: vec![AttachedBundle {
                manifest: Digest::of(bundle.as_bytes()),
                predicate_type: Some(predicate_type.into()),
                bytes: bundle.as_bytes().to_vec(),
            }],
            unreadable: Vec::new(),
            notation: Vec::new(),
        },
        ..Attached::default()
    }
}

struct Github {
    sigstore: TestSigstore,
    leaf: Leaf,
    trust: TrustMaterial,
    digest: Digest,
    reference: Reference,
}

impl Github {
    fn new() -> Github {
        let sigstore = TestSigstore::new();
        let leaf = sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER);
        let trust = TrustMaterial::from_json(&sigstore.trusted_root_json()).unwrap();
        let digest = Digest::of(b"an image manifest");
        let reference = Reference::parse(&format!("ghcr.io/org/repo@{digest}")).unwrap();
        Github {
            sigstore,
            leaf,
            trust,
            digest,
            reference,
        }
    }

    /// The public-repository bundle: provenance about `subject`, signed by `leaf`, logged.
    fn bundle(&self, leaf: &Leaf, subject: &Digest, repository: &str) -> String {
        let statement = in_toto_statement("ghcr.io/org/repo", subject.as_str(), SLSA_V1, provenance(repository));
        make_v3_dsse_bundle(&self.sigstore.rekor, BundleSigner::Leaf(leaf), &statement, unix_now())
    }

    fn prove(&self, attached: &Attached, required: &[Attestation], tlog: Tlog) -> Result<Verified, Unattested> {
        self.prove_with(attached, required, tlog, &self.trust)
    }

    fn prove_with(
        &self,
        attached: &Attached,
        required: &[Attestation],
        tlog: Tlog,
        trust: &TrustMaterial,
    ) -> Result<Verified, Unattested> {
        let authorities = [github_authority(tlog)];
        verify_attestations(
            &self.reference,
            &self.digest,
            attached,
            required,
            &authorities,
            Some(trust),
            unix_now(),
        )
    }
}

fn reasons(unattested: &Unattested) -> Vec<String> {
    unattested
        .outcomes
        .iter()
        .map(|o| o.reason.clone().unwrap_or_default())
        .collect()
}

#[test]
fn provenance_signed_by_the_workflow_proves_the_image_without_a_signature() {
    let gh = Github::new();
    let bundle = gh.bundle(&gh.leaf, &gh.digest, "https://github.com/org/repo");
    let attached = referred(&bundle, SLSA_V1);
    let condition =
        r#"predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/org/repo""#;
    let verified = gh
        .prove(&attached, &[provenance_requirement(&[condition])], Tlog::Required)
        .unwrap_or_else(|e| panic!("{:?}", reasons(&e)));
    assert_eq!(verified.digest(), &gh.digest);
    assert!(verified.evidence().is_empty(), "no image signature was checked");
    let [outcome] = verified.attestations() else {
        panic!("one attestation outcome");
    };
    assert_eq!(outcome.result, AttestationResult::Pass);
    let signature = outcome
        .signature
        .as_ref()
        .expect("the attestation's signature is the evidence");
    assert_eq!(signature.authority, "github");
    assert_eq!(signature.subject.as_deref(), Some(WORKFLOW));
    assert!(signature.tlog_index.is_some());

    // The same referrer is no image signature: a rule that requires one refuses the image.
    let unverified = verify_image(
        &gh.reference,
        &gh.digest,
        &attached,
        &[github_authority(Tlog::Required)],
        Some(&gh.trust),
    )
    .unwrap_err();
    assert!(unverified.rejections.is_empty(), "{unverified}");
}

#[test]
fn no_required_attestation_proves_nothing() {
    let gh = Github::new();
    let bundle = gh.bundle(&gh.leaf, &gh.digest, "https://github.com/org/repo");
    let unattested = gh.prove(&referred(&bundle, SLSA_V1), &[], Tlog::Required).unwrap_err();
    assert!(unattested.outcomes.is_empty());
    // Nor does an image with nothing attached.
    let unattested = gh
        .prove(&Attached::default(), &[provenance_requirement(&[])], Tlog::Required)
        .unwrap_err();
    assert_eq!(reasons(&unattested), ["no attestation of this predicate type"]);
}

#[test]
fn another_signer_another_digest_or_a_failed_condition_proves_nothing() {
    let gh = Github::new();
    let fork = gh.sigstore.issue_fulcio_leaf(
        SanKind::Uri("https://github.com/fork/repo/.github/workflows/release.yml@refs/heads/main".into()),
        ISSUER,
    );
    let other = Digest::of(b"another image manifest");
    let condition =
        r#"predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/org/repo""#;
    let cases = [
        (
            gh.bundle(&fork, &gh.digest, "https://github.com/org/repo"),
            "identity mismatch",
        ),
        (
            gh.bundle(&gh.leaf, &other, "https://github.com/org/repo"),
            "not this image",
        ),
        (
            gh.bundle(&gh.leaf, &gh.digest, "https://github.com/fork/repo"),
            "workflow.repository == ",
        ),
    ];
    for (bundle, why) in cases {
        let unattested = gh
            .prove(
                &referred(&bundle, SLSA_V1),
                &[provenance_requirement(&[condition])],
                Tlog::Required,
            )
            .unwrap_err();
        let reasons = reasons(&unattested);
        assert!(reasons[0].contains(why), "{why}: {reasons:?}");
    }
}

#[test]
fn an_image_signature_is_no_attestation() {
    let gh = Github::new();
    let statement = cosign_sign_statement("ghcr.io/org/repo", gh.digest.as_str());
    let signature = make_v3_dsse_bundle(&gh.sigstore.rekor, BundleSigner::Leaf(&gh.leaf), &statement, unix_now());
    let unattested = gh
        .prove(
            &referred(&signature, COSIGN_SIGN_PREDICATE),
            &[provenance_requirement(&[])],
            Tlog::Required,
        )
        .unwrap_err();
    assert_eq!(reasons(&unattested), ["no attestation of this predicate type"]);
}

/// A private repository's attestation: GitHub's Fulcio and TSA, no Rekor entry. With the TSA
/// trusted and the log not required, the timestamp is the signing time; with the log required,
/// it proves nothing.
#[test]
fn a_timestamped_attestation_without_a_log_entry_needs_the_log_not_required() {
    let gh = Github::new();
    let tsa = Tsa::generate();
    let mut root = gh.sigstore.trusted_root_value();
    tsa.trust_in(&mut root);
    let trust = TrustMaterial::from_json(&root.to_string()).unwrap();
    let mut bundle: Value =
        serde_json::from_str(&gh.bundle(&gh.leaf, &gh.digest, "https://github.com/org/repo")).unwrap();
    let signature = BASE64
        .decode(bundle["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    bundle["verificationMaterial"]["tlogEntries"] = json!([]);
    bundle["verificationMaterial"]["timestampVerificationData"] =
        json!({"rfc3161Timestamps": [{"signedTimestamp": BASE64.encode(tsa.stamp(&signature, unix_now(), ""))}]});
    let attached = referred(&bundle.to_string(), SLSA_V1);
    let required = [provenance_requirement(&[])];

    for tlog in [Tlog::Optional, Tlog::Ignore] {
        let verified = gh
            .prove_with(&attached, &required, tlog, &trust)
            .unwrap_or_else(|e| panic!("tlog {tlog}: {:?}", reasons(&e)));
        let signature = verified.attestations()[0].signature.as_ref().unwrap();
        assert_eq!(signature.time_source, "tsa");
        assert_eq!(signature.tlog_index, None);
    }
    let unattested = gh.prove_with(&attached, &required, Tlog::Required, &trust).unwrap_err();
    assert_eq!(unattested.outcomes[0].result, AttestationResult::Fail);
    // Without the TSA in the trusted root there is no signing time at all.
    assert!(gh.prove(&attached, &required, Tlog::Optional).is_err());
}

/// The image's digest must be a sha256 subject of the signed statement, however the statement
/// is dressed: listed among others it counts; under another algorithm's name, another case of
/// the key, or only in the announced predicate type, it does not.
#[test]
fn only_a_sha256_subject_of_the_signed_statement_names_the_image() {
    let gh = Github::new();
    let other = Digest::of(b"another image manifest");
    let signed = |statement: Value| {
        let bytes = serde_json::to_vec(&statement).unwrap();
        make_v3_dsse_bundle(&gh.sigstore.rekor, BundleSigner::Leaf(&gh.leaf), &bytes, unix_now())
    };
    let statement = |subject: Value, predicate_type: &str| {
        json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": subject,
            "predicateType": predicate_type,
            "predicate": provenance("https://github.com/org/repo"),
        })
    };
    let required = [provenance_requirement(&[])];

    let among = statement(
        json!([{"name": "a", "digest": {"sha256": other.hex()}}, {"name": "b", "digest": {"sha256": gh.digest.hex()}}]),
        SLSA_V1,
    );
    gh.prove(&referred(&signed(among), SLSA_V1), &required, Tlog::Required)
        .unwrap_or_else(|e| panic!("{:?}", reasons(&e)));

    let not_the_image = [
        json!([{"name": "a", "digest": {"sha256": other.hex()}}, {"name": "b", "digest": {"sha512": gh.digest.hex()}}]),
        json!([{"name": "a", "digest": {"sha256": other.hex()}}, {"name": "b", "digest": {"SHA256": gh.digest.hex()}}]),
        json!([{"name": "a", "digest": {"sha256": other.hex()}}, {"name": "b", "digest": {"sha256": format!("sha256:{}", gh.digest.hex())}}]),
    ];
    for subject in not_the_image {
        let bundle = signed(statement(subject.clone(), SLSA_V1));
        let unattested = gh
            .prove(&referred(&bundle, SLSA_V1), &required, Tlog::Required)
            .expect_err(&subject.to_string());
        assert_eq!(unattested.outcomes[0].result, AttestationResult::Fail, "{subject}");
    }

    // Announced as SLSA v1, holding SLSA v0.2: not the attestation the rule asks for.
    let spoofed = signed(statement(
        json!([{"name": "b", "digest": {"sha256": gh.digest.hex()}}]),
        "https://slsa.dev/provenance/v0.2",
    ));
    let unattested = gh
        .prove(&referred(&spoofed, SLSA_V1), &required, Tlog::Required)
        .unwrap_err();
    assert_eq!(reasons(&unattested), ["no attestation of this predicate type"]);
}

//! Two Sigstore instances side by side, as the public-good one and GitHub's: a signature of
//! one never verifies for an authority that names the other, whichever way round, on every
//! path that takes authorities (image signatures and attestations).

use std::sync::Arc;

use pullgate_tests::{
    sigstore::{
        cosign_sign_statement, in_toto_statement, make_v3_dsse_bundle, make_v3_timestamped_dsse_bundle, unix_now,
        BundleSigner, Leaf, SanKind, TestSigstore, Tsa,
    },
    Signer,
};

use crate::{
    attached::{AttachedBundle, Referrers},
    reference::{Digest, Reference},
    verify_image, Attached, AttestationResult, Authority, AuthorityKind, IdentityMatch, Keyless, Rejection, Tlog,
    TrustMaterial, COSIGN_SIGN_PREDICATE,
};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1";
const CYCLONEDX: &str = "https://cyclonedx.org/bom";

/// The public-good-like instance (Fulcio, CT log, Rekor) and a GitHub-like one (another Fulcio
/// CA and a TSA, no Rekor), each with its root, and a leaf of each for the same identity.
struct Instances {
    public: TestSigstore,
    public_root: Arc<TrustMaterial>,
    github: TestSigstore,
    tsa: Tsa,
    github_root: Arc<TrustMaterial>,
}

impl Instances {
    fn new() -> Self {
        let (public, github, tsa) = (TestSigstore::new(), TestSigstore::new(), Tsa::generate());
        let public_root = Arc::new(TrustMaterial::from_json(&public.trusted_root_json()).unwrap());
        let github_root = Arc::new(TrustMaterial::from_json(&github.rekorless_trusted_root_json(&tsa)).unwrap());
        Self {
            public,
            public_root,
            github,
            tsa,
            github_root,
        }
    }

    fn leaf(sigstore: &TestSigstore) -> Leaf {
        sigstore.issue_fulcio_leaf(SanKind::Uri(WORKFLOW.into()), ISSUER)
    }

    /// `statement` signed on the public instance: logged in its Rekor.
    fn public_bundle(&self, statement: &[u8]) -> String {
        let leaf = Self::leaf(&self.public);
        make_v3_dsse_bundle(&self.public.rekor, BundleSigner::Leaf(&leaf), statement, unix_now())
    }

    /// `statement` signed on the GitHub-like instance: timestamped by its TSA, not logged.
    fn github_bundle(&self, statement: &[u8]) -> String {
        let leaf = Self::leaf(&self.github);
        make_v3_timestamped_dsse_bundle(&self.tsa, BundleSigner::Leaf(&leaf), statement, unix_now())
    }
}

/// A keyless authority for the one identity, trusting `root` (`None`: the default).
fn keyless(name: &str, root: Option<&Arc<TrustMaterial>>, tlog: Tlog) -> Authority {
    Authority {
        name: name.into(),
        kind: AuthorityKind::Keyless(Keyless {
            issuer: IdentityMatch::Exact(ISSUER.into()),
            subject: IdentityMatch::Exact(WORKFLOW.into()),
            extensions: Default::default(),
            trusted_root: root.cloned(),
        }),
        tlog,
    }
}

fn image() -> (Reference, Digest) {
    let reference = Reference::parse("registry.test/app:v1").unwrap();
    (reference, Digest::of(b"an image manifest"))
}

fn signature(bundle: String) -> Attached {
    Attached {
        referrers: Referrers {
            bundles: vec![AttachedBundle {
                manifest: Digest::of(bundle.as_bytes()),
                predicate_type: Some(COSIGN_SIGN_PREDICATE.into()),
                bytes: bundle.into_bytes(),
            }],
            unreadable: Vec::new(),
            notation: Vec::new(),
        },
        ..Attached::default()
    }
}

#[test]
fn a_signature_of_one_instance_verifies_only_under_the_authority_naming_it() {
    let instances = Instances::new();
    let (reference, digest) = image();
    let statement = cosign_sign_statement("registry.test/app", digest.as_str());
    let from_github = signature(instances.github_bundle(&statement));
    let from_public = signature(instances.public_bundle(&statement));
    let on_github = keyless("github", Some(&instances.github_root), Tlog::Ignore);
    let on_public = keyless("public", Some(&instances.public_root), Tlog::Required);
    // Whatever the default root given is, an authority's own root decides.
    for default in [&instances.public_root, &instances.github_root] {
        let default = Some(default.as_ref());
        let verified = verify_image(
            &reference,
            &digest,
            &from_github,
            std::slice::from_ref(&on_github),
            default,
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.rejections));
        assert_eq!(verified.evidence()[0].time_source, "tsa");
        let refused = verify_image(
            &reference,
            &digest,
            &from_github,
            std::slice::from_ref(&on_public),
            default,
        )
        .unwrap_err();
        assert!(
            matches!(&refused.rejections[..], [Rejection::Invalid(_)]),
            "{:?}",
            refused.rejections
        );

        verify_image(
            &reference,
            &digest,
            &from_public,
            std::slice::from_ref(&on_public),
            default,
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.rejections));
        let refused = verify_image(
            &reference,
            &digest,
            &from_public,
            std::slice::from_ref(&on_github),
            default,
        )
        .unwrap_err();
        assert!(!refused.rejections.is_empty());
    }
    // Even under an authority that would take a signing time from either (tlog: ignore), and
    // with a root of its own that also has a TSA.
    let mut public_with_tsa = instances.public.trusted_root_value();
    instances.tsa.trust_in(&mut public_with_tsa);
    let public_with_tsa = Arc::new(TrustMaterial::from_json(&public_with_tsa.to_string()).unwrap());
    let lenient = keyless("public", Some(&public_with_tsa), Tlog::Ignore);
    let refused = verify_image(&reference, &digest, &from_github, &[lenient], None).unwrap_err();
    assert!(!refused.rejections.is_empty(), "another instance's CA does not count");
}

#[test]
fn in_one_rule_each_authority_is_held_to_its_own_root() {
    let instances = Instances::new();
    let (reference, digest) = image();
    let statement = cosign_sign_statement("registry.test/app", digest.as_str());
    let authorities = [
        keyless("public", None, Tlog::Required),
        keyless("github", Some(&instances.github_root), Tlog::Ignore),
    ];
    let default = Some(instances.public_root.as_ref());
    let verified = verify_image(
        &reference,
        &digest,
        &signature(instances.github_bundle(&statement)),
        &authorities,
        default,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.rejections));
    assert_eq!(verified.evidence()[0].authority, "github");
    let verified = verify_image(
        &reference,
        &digest,
        &signature(instances.public_bundle(&statement)),
        &authorities,
        default,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.rejections));
    assert_eq!(verified.evidence()[0].authority, "public");
}

#[test]
fn verify_bundle_given_another_root_still_uses_the_authoritys_own() {
    let instances = Instances::new();
    let (_, digest) = image();
    let statement = cosign_sign_statement("registry.test/app", digest.as_str());
    let bundle: sigstore_types::Bundle = serde_json::from_str(&instances.github_bundle(&statement)).unwrap();
    let hash = sigstore_types::Sha256Hash::from_hex(digest.hex()).unwrap();
    let on_public = keyless("public", Some(&instances.public_root), Tlog::Ignore);
    let on_github = keyless("github", Some(&instances.github_root), Tlog::Ignore);
    let passed = |trust: &TrustMaterial, authority: &Authority| {
        crate::verify_bundle(trust, &bundle, sigstore_types::Artifact::from_digest(hash), authority).is_ok()
    };
    assert!(passed(&instances.public_root, &on_github));
    assert!(!passed(&instances.github_root, &on_public));
}

#[test]
fn an_attestation_of_one_instance_counts_only_for_the_authority_naming_it() {
    let instances = Instances::new();
    let (_, digest) = image();
    let statement = in_toto_statement(
        "registry.test/app",
        digest.as_str(),
        CYCLONEDX,
        serde_json::json!({ "components": [1] }),
    );
    let required = [crate::Attestation {
        name: "sbom".into(),
        predicate_type: CYCLONEDX.into(),
        max_age: None,
        conditions: Vec::new(),
    }];
    let attached = |bundle: String| Attached {
        referrers: Referrers {
            bundles: vec![AttachedBundle {
                manifest: Digest::of(bundle.as_bytes()),
                predicate_type: Some(CYCLONEDX.into()),
                bytes: bundle.into_bytes(),
            }],
            unreadable: Vec::new(),
            notation: Vec::new(),
        },
        ..Attached::default()
    };
    let result = |attached: &Attached, authority: Authority| {
        let default = Some(instances.public_root.as_ref());
        crate::check_attestations(&digest, attached, &required, &[authority], default, unix_now())
            .remove(0)
            .result
    };
    let from_github = attached(instances.github_bundle(&statement));
    let from_public = attached(instances.public_bundle(&statement));
    let on_github = || keyless("github", Some(&instances.github_root), Tlog::Ignore);
    let on_public = || keyless("public", None, Tlog::Required);
    assert_eq!(result(&from_github, on_github()), AttestationResult::Pass);
    assert_eq!(result(&from_github, on_public()), AttestationResult::Fail);
    assert_eq!(result(&from_public, on_public()), AttestationResult::Pass);
    assert_eq!(result(&from_public, on_github()), AttestationResult::Fail);
}

#[test]
fn key_authorities_keep_the_default_root_for_log_entries() {
    let instances = Instances::new();
    let (reference, digest) = image();
    let signer = Signer::generate();
    let statement = cosign_sign_statement("registry.test/app", digest.as_str());
    let logged = make_v3_dsse_bundle(
        &instances.public.rekor,
        BundleSigner::Key(&signer),
        &statement,
        unix_now(),
    );
    let key = Authority {
        name: "release".into(),
        kind: AuthorityKind::Key(Arc::new(crate::PublicKey::from_pem(&signer.public_key_pem()).unwrap())),
        tlog: Tlog::Required,
    };
    // Beside a keyless authority on GitHub's root, the key's entry is checked on the default.
    let authorities = [keyless("github", Some(&instances.github_root), Tlog::Ignore), key];
    let verified = verify_image(
        &reference,
        &digest,
        &signature(logged.clone()),
        &authorities,
        Some(instances.public_root.as_ref()),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", e.rejections));
    assert_eq!(verified.evidence()[0].authority, "release");
    assert_eq!(verified.evidence()[0].time_source, "tlog");
    // With GitHub's root as the default, the entry's log is unknown: the key does not count.
    let refused = verify_image(
        &reference,
        &digest,
        &signature(logged),
        &authorities,
        Some(instances.github_root.as_ref()),
    );
    assert!(refused.is_err(), "{refused:?}");
}

/// Material mixed across instances: a public-instance certificate with no log entry, its only
/// signing time from the GitHub-like instance's TSA. Neither authority accepts it: the public
/// root does not list that TSA (and `tlog: optional` with no entry needs a trusted time), the
/// GitHub root does not list the public Fulcio CA.
#[test]
fn a_certificate_of_one_instance_timestamped_by_the_others_tsa_counts_for_neither() {
    let instances = Instances::new();
    let (reference, digest) = image();
    let statement = cosign_sign_statement("registry.test/app", digest.as_str());
    let leaf = Instances::leaf(&instances.public);
    let mixed = signature(make_v3_timestamped_dsse_bundle(
        &instances.tsa,
        BundleSigner::Leaf(&leaf),
        &statement,
        unix_now(),
    ));
    for authority in [
        keyless("public", Some(&instances.public_root), Tlog::Optional),
        keyless("public", Some(&instances.public_root), Tlog::Ignore),
        keyless("github", Some(&instances.github_root), Tlog::Optional),
        keyless("github", Some(&instances.github_root), Tlog::Ignore),
    ] {
        for default in [&instances.public_root, &instances.github_root] {
            let refused = verify_image(
                &reference,
                &digest,
                &mixed,
                std::slice::from_ref(&authority),
                Some(default.as_ref()),
            );
            assert!(refused.is_err(), "{} accepted a mixed bundle", authority.name);
        }
    }
}

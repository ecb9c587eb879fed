//! The importer's translations, each checked by loading the output with pullgate's own policy
//! loader and deciding pulls with it, and every category of what cannot be carried over.

use std::{fs, path::Path};

use serde_json::{json, Value};
use sigstore_crypto::KeyPair;

use super::{
    condition::translate_one,
    glob::{narrow_for_test as narrow, translate_for_test as glob, Dialect},
    image_validating::recognizes,
    import_str,
    overlap::glob_intersection,
    ImportError, Imported, Options,
};
use pullgate::{
    policy::{evaluate_conditions, Action, AuthorityKind, Mode, NoMatch, Policy, Tlog},
    reference::Reference,
};

// --- helpers ---

/// A real trusted root (the public-good one), written once per test process.
fn trust_path() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("trusted_root.json");
        fs::write(&path, sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
        path.display().to_string()
    })
}

fn public_pem() -> String {
    KeyPair::generate_ecdsa_p256()
        .unwrap()
        .public_key_der()
        .unwrap()
        .to_pem()
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

fn import(yaml: &str) -> Imported {
    let options = Options {
        trusted_root: trust_path().into(),
    };
    import_str(yaml, Path::new("/src/policies.yaml"), &options).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Imports `yaml` and loads the result as `policy check` would; the output must always load.
fn load(yaml: &str) -> (Imported, Policy) {
    let imported = import(yaml);
    let policy = Policy::from_str(&imported.policy, Path::new("/etc/pullgate/policy.yaml"))
        .unwrap_or_else(|e| panic!("the output does not load: {e}\n{}", imported.policy));
    (imported, policy)
}

/// Every finding, as the command prints it after the file name.
fn lines(imported: &Imported) -> Vec<String> {
    imported.findings.iter().map(ToString::to_string).collect()
}

fn dropped(imported: &Imported) -> Vec<String> {
    imported
        .findings
        .iter()
        .filter(|f| f.is_dropped())
        .map(ToString::to_string)
        .collect()
}

/// Whether some finding contains all of `needles`.
fn has(findings: &[String], needles: &[&str]) -> bool {
    findings.iter().any(|f| needles.iter().all(|n| f.contains(n)))
}

/// The rule that decides a pull, and what it does.
fn decide(policy: &Policy, image: &str, namespace: &str) -> (Option<String>, Action, Mode) {
    let decision = policy.decide(&Reference::parse(image).unwrap(), namespace);
    (
        decision.rule().map(|r| r.name().to_string()),
        decision.action(),
        decision.mode,
    )
}

fn kyverno(spec: &str) -> String {
    format!("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata:\n  name: p\nspec:\n{spec}")
}

/// A ClusterPolicy with one rule whose single verifyImages entry is `entry` (indented by
/// eight spaces, without the leading `- `).
fn kyverno_entry(mode: &str, entry: &str) -> String {
    kyverno(&format!(
        "  validationFailureAction: {mode}\n  rules:\n    - name: r\n      match:\n        any:\n          - resources:\n              kinds: [Pod]\n      verifyImages:\n        - {}",
        entry.trim_start()
    ))
}

fn key_entry(images: &str, pem: &str) -> String {
    format!(
        "imageReferences: [{images}]\n          attestors:\n            - entries:\n                - keys:\n                    publicKeys: |\n{}                    rekor:\n                      ignoreTlog: true\n",
        indent(pem, 22)
    )
}

fn statement(predicate: Value) -> Value {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "app", "digest": {"sha256": "ab".repeat(32)}}],
        "predicateType": "https://cyclonedx.org/bom",
        "predicate": predicate,
    })
}

// --- Kyverno ClusterPolicy ---

#[test]
fn kyverno_keyless_subject_wildcards_become_an_anchored_regexp() {
    let yaml = kyverno(
        r#"  validationFailureAction: Enforce
  rules:
    - name: release
      match:
        any:
          - resources:
              kinds: [Pod]
              namespaces: [prod, "team-*"]
      exclude:
        any:
          - resources:
              namespaces: [team-sandbox]
      verifyImages:
        - imageReferences: ["ghcr.io/example-org/*"]
          attestors:
            - entries:
                - keyless:
                    issuer: https://token.actions.githubusercontent.com
                    subject: "https://github.com/example-org/*/.github/workflows/release.yml@refs/tags/v?.*"
                    rekor:
                      url: https://rekor.sigstore.dev
"#,
    );
    let (imported, policy) = load(&yaml);
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    assert_eq!(policy.no_match(), NoMatch::Allow, "Kyverno admits unmatched images");
    let rule = &policy.rules()[0];
    assert_eq!(rule.name(), "p.release");
    assert_eq!(rule.images()[0].as_str(), "ghcr.io/example-org/**");
    assert_eq!(rule.mode(), Some(Mode::Enforce));
    let AuthorityKind::Keyless(keyless) = &rule.authorities()[0].kind else {
        panic!("keyless expected");
    };
    assert_eq!(rule.authorities()[0].tlog, Tlog::Required);
    assert_eq!(keyless.issuer.as_str(), "https://token.actions.githubusercontent.com");
    assert_eq!(
        keyless.subject.as_str(),
        r"^https://github\.com/example-org/.*/\.github/workflows/release\.yml@refs/tags/v.\..*$"
    );
    let workflow = "https://github.com/example-org/app/.github/workflows/release.yml@refs/tags/v1.2";
    assert!(keyless.subject.matches(workflow));
    // Anchored: another org's prefix, or the workflow inside another URL, is not it.
    assert!(!keyless
        .subject
        .matches("https://github.com/example-org-evil/x/.github/workflows/release.yml@refs/tags/v1.2"));
    assert!(!keyless.subject.matches(&format!("https://evil.example/?{workflow}")));
    // Everything else escaped: `.` is a dot.
    assert!(!keyless
        .subject
        .matches("https://githubXcom/example-org/app/.github/workflows/release.yml@refs/tags/v1.2"));

    // Kyverno's `*` spans `/`: a nested repository is covered, in the namespaces matched.
    let nested = "ghcr.io/example-org/team/app:v1";
    assert_eq!(decide(&policy, nested, "prod").0.as_deref(), Some("p.release"));
    assert_eq!(decide(&policy, nested, "team-a").0.as_deref(), Some("p.release"));
    assert_eq!(
        decide(&policy, nested, "team-sandbox"),
        (None, Action::Allow, Mode::Enforce)
    );
    assert_eq!(decide(&policy, nested, "dev"), (None, Action::Allow, Mode::Enforce));
    assert_eq!(decide(&policy, "ghcr.io/other/app:v1", "prod").0, None);
}

#[test]
fn kyverno_keys_with_ignored_tlog_and_a_cyclonedx_attestation() {
    let pem = public_pem();
    let entry = format!(
        "{}          attestations:\n            - predicateType: https://cyclonedx.org/bom\n              conditions:\n                - all:\n                    - key: \"{{{{ bomFormat }}}}\"\n                      operator: Equals\n                      value: CycloneDX\n                    - key: \"{{{{ length(components) }}}}\"\n                      operator: GreaterThan\n                      value: 0\n",
        key_entry("\"registry.example.com/apps/*\"", &pem)
    );
    let (imported, policy) = load(&kyverno_entry("Enforce", &entry));
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    assert_eq!(
        policy.trusted_root().map(|p| p.display().to_string()).as_deref(),
        Some(trust_path()),
        "key-signed bundles are checked against the trusted root too"
    );
    let rule = &policy.rules()[0];
    assert!(matches!(rule.authorities()[0].kind, AuthorityKind::Key(_)));
    assert_eq!(rule.authorities()[0].tlog, Tlog::Ignore);
    let attestation = &rule.attestations()[0];
    assert_eq!(attestation.name, "cyclonedx");
    assert_eq!(attestation.predicate_type, "https://cyclonedx.org/bom");
    let texts: Vec<&str> = attestation.conditions.iter().map(|c| c.text()).collect();
    assert_eq!(
        texts,
        ["predicate.bomFormat == \"CycloneDX\"", "size(predicate.components) > 0"]
    );
    // The original is named above each condition.
    assert!(imported
        .policy
        .contains("# Kyverno conditions[0].all[1]: \"{{ length(components) }}\" GreaterThan 0"));
    let good = statement(json!({"bomFormat": "CycloneDX", "components": [{"name": "openssl"}]}));
    assert!(evaluate_conditions(&attestation.conditions, &good).is_ok());
    let empty = statement(json!({"bomFormat": "CycloneDX", "components": []}));
    assert!(evaluate_conditions(&attestation.conditions, &empty).is_err());
    let spdx = statement(json!({"bomFormat": "SPDX", "components": [{"name": "x"}]}));
    assert!(evaluate_conditions(&attestation.conditions, &spdx).is_err());
}

#[test]
fn two_attestations_of_one_type_get_names_of_their_own() {
    let pem = public_pem();
    let entry = format!(
        "{}          attestations:\n            - predicateType: https://cyclonedx.org/bom\n            - type: cyclonedx\n",
        key_entry("\"registry.example.com/*\"", &pem)
    );
    let (_, policy) = load(&kyverno_entry("Enforce", &entry));
    let names: Vec<&str> = policy.rules()[0]
        .attestations()
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["cyclonedx", "cyclonedx-2"]);
}

#[test]
fn more_conditions_than_a_policy_holds_deny_rather_than_fail_to_load() {
    let pem = public_pem();
    let conditions: String = (0..65)
        .map(|i| format!("                    - key: \"{{{{ c{i} }}}}\"\n                      operator: Equals\n                      value: x\n"))
        .collect();
    let entry = format!(
        "{}          attestations:\n            - predicateType: cyclonedx\n              conditions:\n                - all:\n{conditions}",
        key_entry("\"registry.example.com/*\"", &pem)
    );
    let (imported, policy) = load(&kyverno_entry("Enforce", &entry));
    assert_eq!(policy.rules()[0].action(), Action::Deny);
    assert!(has(
        &dropped(&imported),
        &["more than 100 attestations or 64 conditions in one; the rule denies"]
    ));
}

#[test]
fn kyverno_keys_check_the_log_unless_told_not_to() {
    let pem = public_pem();
    let entry = key_entry("\"registry.example.com/*\"", &pem).replace(
        "                    rekor:\n                      ignoreTlog: true\n",
        "",
    );
    let (_, policy) = load(&kyverno_entry("Enforce", &entry));
    assert_eq!(policy.rules()[0].authorities()[0].tlog, Tlog::Required);
}

#[test]
fn kyverno_modes_audit_by_default_per_entry_and_per_namespace() {
    let pem = public_pem();
    let entry = key_entry("\"registry.example.com/*\"", &pem);
    let audit = kyverno(&format!(
        "  rules:\n    - name: r\n      verifyImages:\n        - {}",
        entry.trim_start()
    ));
    let (_, policy) = load(&audit);
    assert_eq!(
        policy.rules()[0].mode(),
        Some(Mode::Audit),
        "Kyverno's default is Audit"
    );

    let per_entry = kyverno_entry("Audit", &format!("failureAction: Enforce\n          {}", entry));
    let (_, policy) = load(&per_entry);
    assert_eq!(policy.rules()[0].mode(), Some(Mode::Enforce));

    let overrides = kyverno(&format!(
        "  validationFailureAction: Enforce\n  validationFailureActionOverrides:\n    - action: Audit\n      namespaces: [dev]\n  rules:\n    - name: r\n      verifyImages:\n        - {}",
        entry.trim_start()
    ));
    let (imported, policy) = load(&overrides);
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    let image = "registry.example.com/app:v1";
    assert_eq!(decide(&policy, image, "dev").2, Mode::Audit);
    assert_eq!(decide(&policy, image, "prod").2, Mode::Enforce);
}

#[test]
fn kyverno_attestor_counts_one_of_many_carries_over_all_of_many_denies() {
    let (a, b) = (public_pem(), public_pem());
    let two_entries = |count: &str| {
        format!(
            "imageReferences: [\"registry.example.com/*\"]\n          attestors:\n            - {count}entries:\n                - keys:\n                    publicKeys: |\n{}                    rekor: {{ignoreTlog: true}}\n                - keys:\n                    publicKeys: |\n{}                    rekor: {{ignoreTlog: true}}\n",
            indent(&a, 22),
            indent(&b, 22)
        )
    };
    let (imported, policy) = load(&kyverno_entry("Enforce", &two_entries("count: 1\n              ")));
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    assert_eq!(policy.rules()[0].authorities().len(), 2, "any one of the two");

    // No count: both must sign, which pullgate cannot ask; the rule denies.
    let (imported, policy) = load(&kyverno_entry("Enforce", &two_entries("")));
    assert_eq!(policy.rules()[0].action(), Action::Deny);
    assert!(has(
        &dropped(&imported),
        &["attestors[0]: 2 of its 2 attestors must all sign", "the rule denies"]
    ));

    // Two keys in one publicKeys are two entries too.
    let both = format!("{a}{b}");
    let entry = key_entry("\"registry.example.com/*\"", &both);
    let (_, policy) = load(&kyverno_entry("Enforce", &entry));
    assert_eq!(policy.rules()[0].action(), Action::Deny);
    let counted = entry.replace(
        "            - entries:",
        "            - count: 1\n              entries:",
    );
    let (_, policy) = load(&kyverno_entry("Enforce", &counted));
    assert_eq!(policy.rules()[0].authorities().len(), 2);

    // Two sets must each be satisfied.
    let sets = format!(
        "imageReferences: [\"registry.example.com/*\"]\n          attestors:\n            - entries:\n                - keys:\n                    publicKeys: |\n{}                    rekor: {{ignoreTlog: true}}\n            - entries:\n                - keys:\n                    publicKeys: |\n{}                    rekor: {{ignoreTlog: true}}\n",
        indent(&a, 22),
        indent(&b, 22)
    );
    let (imported, policy) = load(&kyverno_entry("Enforce", &sets));
    assert_eq!(policy.rules()[0].action(), Action::Deny);
    assert!(has(&dropped(&imported), &["2 attestor sets must each be satisfied"]));
}

#[test]
fn kyverno_skip_image_references_are_allowed_before_the_rule() {
    let pem = public_pem();
    let entry = key_entry("\"registry.example.com/*\"", &pem).replace(
        "imageReferences:",
        "skipImageReferences: [\"registry.example.com/debug/*\"]\n          imageReferences:",
    );
    let (imported, policy) = load(&kyverno_entry("Enforce", &entry));
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    let (rule, action, _) = decide(&policy, "registry.example.com/debug/x:v1", "");
    assert_eq!((rule.as_deref(), action), (Some("p.r-skip"), Action::Allow));
    let (rule, action, _) = decide(&policy, "registry.example.com/app:v1", "");
    assert_eq!((rule.as_deref(), action), (Some("p.r"), Action::Verify));
}

/// Kyverno's `*` in a registry host reads as `**`, which pullgate refuses there (it reaches
/// into the path: `evil.io/x.corp.example/app`). It is never written so: a rule that verifies
/// gets the exact equivalent without it (`*` in the host, or `*/**` where it crosses), a rule
/// that allows only the reading within the host, and the rest is reported as dropped.
#[test]
fn kyverno_wildcard_hosts_are_never_written_with_double_stars_in_the_host() {
    let pem = public_pem();
    let entry = key_entry("\"*.corp.example/*\", \"ghcr.io/org/*\"", &pem).replace(
        "imageReferences:",
        "skipImageReferences: [\"*.trusted.example/*\"]\n          imageReferences:",
    );
    let (imported, policy) = load(&kyverno_entry("Enforce", &entry));
    let written = &imported.policy;
    for line in written.lines().filter(|l| l.trim_start().starts_with("- \"")) {
        let glob = line.trim().trim_start_matches("- ").trim_matches('"');
        let host = glob.split('/').next().unwrap_or_default();
        assert!(!host.contains("**"), "{line}\n{written}");
    }
    let found = dropped(&imported);
    assert!(
        has(
            &found,
            &[
                "skipImageReferences[0]:",
                "*.trusted.example/*",
                "*/**.trusted.example/**",
                "dropped"
            ]
        ),
        "{found:#?}"
    );
    assert!(!has(&found, &["imageReferences[0]:"]), "{found:#?}");

    // The rule that allows: only what Kyverno skips, within the host.
    let (rule, action, _) = decide(&policy, "registry.trusted.example/app:v1", "");
    assert_eq!((rule.as_deref(), action), (Some("p.r-skip"), Action::Allow));
    let (rule, _, _) = decide(&policy, "evil.io/x.trusted.example/app:v1", "");
    assert_ne!(rule.as_deref(), Some("p.r-skip"));
    // The rule that verifies: everything Kyverno verifies, the path-crossing reading included.
    for image in [
        "registry.corp.example/app:v1",
        "evil.io/x.corp.example/app:v1",
        "ghcr.io/org/app:v1",
    ] {
        let (rule, action, _) = decide(&policy, image, "");
        assert_eq!((rule.as_deref(), action), (Some("p.r"), Action::Verify), "{image}");
    }
}

#[test]
fn kyverno_namespaced_policy_covers_its_namespace() {
    let pem = public_pem();
    let yaml = kyverno_entry("Enforce", &key_entry("\"registry.example.com/*\"", &pem)).replace(
        "kind: ClusterPolicy\nmetadata:\n  name: p\n",
        "kind: Policy\nmetadata:\n  name: p\n  namespace: team-a\n",
    );
    let (_, policy) = load(&yaml);
    assert!(decide(&policy, "registry.example.com/x:v1", "team-a").0.is_some());
    assert!(decide(&policy, "registry.example.com/x:v1", "team-b").0.is_none());
}

#[test]
fn attestation_attestors_narrow_the_rule_signers_never_widen_them() {
    let (a, b) = (public_pem(), public_pem());
    // One attestor set, `count: 1`, of the keys `pems`, indented by `by`.
    let set = |pems: &[&String], by: usize| {
        let mut out = String::from("- count: 1\n  entries:\n");
        for pem in pems {
            out.push_str(&format!(
                "    - keys:\n        publicKeys: |\n{}        rekor: {{ignoreTlog: true}}\n",
                indent(pem, 10)
            ));
        }
        indent(&out, by)
    };
    let entry = |image: &[&String], attestation: &[&String]| {
        format!(
            "imageReferences: [\"registry.example.com/*\"]\n          attestors:\n{}          attestations:\n            - predicateType: https://cyclonedx.org/bom\n              attestors:\n{}",
            set(image, 12),
            set(attestation, 16),
        )
    };
    let key_count = |policy: &Policy| policy.rules()[0].authorities().len();

    // The image may be signed by A or B, the SBOM only by A: pullgate keeps A alone, else it
    // would accept an SBOM signed by B.
    let (imported, policy) = load(&kyverno_entry("Enforce", &entry(&[&a, &b], &[&a])));
    assert_eq!(key_count(&policy), 1);
    assert!(has(
        &dropped(&imported),
        &[
            "attestations[0].attestors:",
            "keeps only the image's signers that are among these attestors too"
        ]
    ));
    // The SBOM only by B, the image only by A: no signer satisfies both readings; deny.
    let (_, policy) = load(&kyverno_entry("Enforce", &entry(&[&a], &[&b])));
    assert_eq!(policy.rules()[0].action(), Action::Deny);
    // The SBOM by A or B, the image by A: A alone, and SBOMs signed by B are refused.
    let (imported, policy) = load(&kyverno_entry("Enforce", &entry(&[&a], &[&a, &b])));
    assert_eq!(key_count(&policy), 1);
    assert!(has(
        &dropped(&imported),
        &["attestations signed only by the other attestors are refused (stricter)"]
    ));
    // The same signers: nothing to say.
    let (imported, policy) = load(&kyverno_entry("Enforce", &entry(&[&a], &[&a])));
    assert_eq!(key_count(&policy), 1);
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
}

/// A policy-controller authority with an empty `attestations` list checks signatures, as
/// policy-controller does; only a list with entries replaces them.
#[test]
fn policy_controller_an_empty_attestation_list_checks_signatures() {
    let pem = public_pem();
    let yaml = cip(&format!(
        "  images:\n    - glob: \"registry.example.com/**\"\n  authorities:\n    - key:\n        data: |\n{}      attestations: []\n",
        indent(&pem, 10)
    ));
    let (imported, policy) = load(&yaml);
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    assert!(policy.rules()[0].requires_signature());
    assert!(!imported.policy.contains("requireSignature"), "{}", imported.policy);
}

/// A Kyverno entry without `attestors` verifies only its attestations, each by its own
/// attestors: a rule with `requireSignature: false`, not reported as stricter.
#[test]
fn kyverno_attestations_without_image_attestors_need_no_signature() {
    let (a, b) = (public_pem(), public_pem());
    let attestors = |pems: &[&String], by: usize| {
        let mut out = String::from("- count: 1\n  entries:\n");
        for pem in pems {
            out.push_str(&format!(
                "    - keys:\n        publicKeys: |\n{}        rekor: {{ignoreTlog: true}}\n",
                indent(pem, 10)
            ));
        }
        indent(&out, by)
    };
    let attestation = |predicate: &str, pems: &[&String]| {
        format!(
            "            - predicateType: {predicate}\n              attestors:\n{}",
            attestors(pems, 16)
        )
    };
    let entry =
        |attestations: &str| format!("imageReferences: [\"ghcr.io/org/*\"]\n          attestations:\n{attestations}");

    let (imported, policy) = load(&kyverno_entry(
        "Enforce",
        &entry(&attestation("https://slsa.dev/provenance/v1", &[&a])),
    ));
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    assert!(has(
        &lines(&imported),
        &["verifyImages[0].attestations:", "requireSignature: false"]
    ));
    let rule = &policy.rules()[0];
    assert!(!rule.requires_signature());
    assert_eq!(rule.authorities().len(), 1);
    assert_eq!(rule.attestations()[0].predicate_type, "https://slsa.dev/provenance/v1");

    // Two attestations by different signers: only a signer both name is kept (stricter), and
    // with none in common the rule denies.
    let both =
        attestation("https://slsa.dev/provenance/v1", &[&a, &b]) + &attestation("https://cyclonedx.org/bom", &[&a]);
    let (imported, policy) = load(&kyverno_entry("Enforce", &entry(&both)));
    assert!(!policy.rules()[0].requires_signature());
    assert_eq!(policy.rules()[0].authorities().len(), 1);
    assert!(has(
        &dropped(&imported),
        &[
            "attestations[1].attestors:",
            "keeps only the signers all attestations name"
        ]
    ));
    let apart = attestation("https://slsa.dev/provenance/v1", &[&a]) + &attestation("https://cyclonedx.org/bom", &[&b]);
    let (_, policy) = load(&kyverno_entry("Enforce", &entry(&apart)));
    assert_eq!(policy.rules()[0].action(), Action::Deny);

    // With image attestors, the image's signature is still required.
    let signed = format!(
        "{}          attestations:\n{}",
        key_entry("\"ghcr.io/org/*\"", &a),
        attestation("https://slsa.dev/provenance/v1", &[&a])
    );
    let (_, policy) = load(&kyverno_entry("Enforce", &signed));
    assert!(policy.rules()[0].requires_signature());
}

// --- JMESPath conditions ---

#[test]
fn conditions_with_one_reading_become_cel() {
    let cases = [
        (
            json!({"key": "{{ a.b }}", "operator": "Equals", "value": "x"}),
            r#"predicate.a.b == "x""#,
        ),
        (
            json!({"key": "{{a.b}}", "operator": "NotEquals", "value": "x"}),
            r#"predicate.a.b != "x""#,
        ),
        (
            json!({"key": "{{ n }}", "operator": "Equals", "value": 3}),
            "predicate.n == 3",
        ),
        (
            json!({"key": "{{ ok }}", "operator": "Equals", "value": true}),
            "predicate.ok == true",
        ),
        (
            json!({"key": "{{ n }}", "operator": "GreaterThanOrEquals", "value": 2.5}),
            "predicate.n >= 2.5",
        ),
        (
            json!({"key": "{{ n }}", "operator": "LessThan", "value": 10}),
            "predicate.n < 10",
        ),
        (
            json!({"key": "{{ length(c) }}", "operator": "GreaterThan", "value": 0}),
            "size(predicate.c) > 0",
        ),
        (
            json!({"key": "{{ \"a-b\".in }}", "operator": "Equals", "value": "x"}),
            r#"predicate["a-b"]["in"] == "x""#,
        ),
        // Kyverno compares a key that reads as a quantity (`1.5`) as one, never equal to a
        // wildcard.
        (
            json!({"key": "{{ v }}", "operator": "Equals", "value": "1.*"}),
            r#"!predicate.v.matches("^[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)[eEinumkKMGTP]*[-+]?[0-9]*$") && predicate.v.matches("(?s)^1\\..*$")"#,
        ),
        (
            json!({"key": "{{ v }}", "operator": "Equals", "value": "v1.*"}),
            r#"predicate.v.matches("(?s)^v1\\..*$")"#,
        ),
        (
            json!({"key": "{{ r }}", "operator": "AnyIn", "value": ["a", "b"]}),
            r#"type(predicate.r) == list ? predicate.r.exists(x, x in ["a", "b"]) : predicate.r in ["a", "b"]"#,
        ),
        // Kyverno reads a `*` or `?` in the key as a wildcard over the values.
        (
            json!({"key": "{{ r }}", "operator": "AllNotIn", "value": ["a"]}),
            r#"type(predicate.r) == list ? predicate.r.all(x, !(x in ["a"] || (type(x) == string && x.matches("[*?]")))) : !(predicate.r in ["a"] || (type(predicate.r) == string && predicate.r.matches("[*?]")))"#,
        ),
    ];
    for (condition, cel) in cases {
        assert_eq!(translate_one(&condition).as_deref(), Ok(cel), "{condition}");
    }
}

#[test]
fn membership_conditions_read_a_key_that_is_one_value_or_a_list() {
    let check = |operator: &str, key: Value| {
        let cel = translate_one(&json!({"key": "{{ r }}", "operator": operator, "value": ["ana", "bob"]})).unwrap();
        let condition = pullgate::policy::Condition::compile(&cel).unwrap();
        evaluate_conditions(&[condition], &statement(json!({ "r": key }))).is_ok()
    };
    assert!(check("AnyIn", json!("ana")));
    assert!(!check("AnyIn", json!("eve")));
    assert!(check("AnyIn", json!(["eve", "bob"])));
    assert!(!check("AllIn", json!(["eve", "bob"])));
    assert!(check("AllIn", json!(["ana", "bob"])));
    assert!(check("In", json!(["ana"])), "the old In is AllIn");
    assert!(check("AnyNotIn", json!(["ana", "eve"])));
    assert!(!check("AllNotIn", json!(["ana", "eve"])));
    assert!(check("NotIn", json!("eve")));
    // Wildcards in Equals match the whole value, across lines too.
    let cel = translate_one(&json!({"key": "{{ v }}", "operator": "Equals", "value": "v1.*"})).unwrap();
    let condition = pullgate::policy::Condition::compile(&cel).unwrap();
    assert!(evaluate_conditions(std::slice::from_ref(&condition), &statement(json!({"v": "v1.2\nrc"}))).is_ok());
    assert!(evaluate_conditions(std::slice::from_ref(&condition), &statement(json!({"v": "xv1.2"}))).is_err());
    assert!(evaluate_conditions(&[condition], &statement(json!({"v": "v1x2"}))).is_err());
}

#[test]
fn conditions_without_one_reading_are_refused_with_why() {
    let cases = [
        (
            json!({"key": "{{ a[?b=='c'] | length(@) }}", "operator": "Equals", "value": 0}),
            "has no CEL equivalent",
        ),
        (
            json!({"key": "{{ a[].b }}", "operator": "AnyIn", "value": ["x"]}),
            "has no CEL equivalent",
        ),
        (
            json!({"key": "{{ request.object.x }}", "operator": "Equals", "value": "x"}),
            "admission context",
        ),
        (
            json!({"key": "prefix-{{ a }}", "operator": "Equals", "value": "x"}),
            "not one JMESPath expression",
        ),
        (
            json!({"key": "{{ a }}", "operator": "Equals", "value": "3"}),
            "as a quantity or duration",
        ),
        (
            json!({"key": "{{ a }}", "operator": "Equals", "value": "1Gi"}),
            "as a quantity or duration",
        ),
        (
            json!({"key": "{{ a }}", "operator": "Equals", "value": "1h30m"}),
            "as a quantity or duration",
        ),
        (
            json!({"key": "{{ a }}", "operator": "GreaterThan", "value": "1.2.3"}),
            "versions",
        ),
        (
            json!({"key": "{{ a }}", "operator": "AnyIn", "value": ["x*"]}),
            "wildcard",
        ),
        (
            json!({"key": "{{ a }}", "operator": "Equals", "value": "{{ b }}"}),
            "variable",
        ),
        (
            json!({"key": "{{ a }}", "operator": "Equals", "value": ["x"]}),
            "no unambiguous CEL form",
        ),
        (
            json!({"key": "{{ a }}", "operator": "DurationGreaterThan", "value": "1h"}),
            "no unambiguous CEL form",
        ),
    ];
    for (condition, why) in cases {
        let error = translate_one(&condition).unwrap_err();
        assert!(error.contains(why), "{condition}: {error}");
    }
}

#[test]
fn a_dropped_condition_is_reported_and_the_attestation_still_required() {
    let pem = public_pem();
    let entry = format!(
        "{}          attestations:\n            - predicateType: https://cosign.sigstore.dev/attestation/vuln/v1\n              conditions:\n                - all:\n                    - key: \"{{{{ scanner.result.Results[].Vulnerabilities[?Severity=='CRITICAL'] | length(@) }}}}\"\n                      operator: Equals\n                      value: 0\n                  any:\n                    - key: \"{{{{ scanner.uri }}}}\"\n                      operator: Equals\n                      value: \"pkg:github/aquasecurity/trivy*\"\n                    - key: \"{{{{ scanner.version | split(@, '.') }}}}\"\n                      operator: AnyIn\n                      value: [\"0\"]\n",
        key_entry("\"registry.example.com/*\"", &pem)
    );
    let (imported, policy) = load(&kyverno_entry("Enforce", &entry));
    let dropped = dropped(&imported);
    assert!(has(
        &dropped,
        &[
            "document 1 (ClusterPolicy/p): spec.rules[0].verifyImages[0].attestations[0].conditions[0].all[0]:",
            "has no CEL equivalent",
            "; condition dropped"
        ]
    ));
    assert!(has(
        &dropped,
        &[
            "conditions[0].any[1]:",
            "this alternative is dropped, so one of the others must hold"
        ]
    ));
    let attestation = &policy.rules()[0].attestations()[0];
    assert_eq!(
        attestation.predicate_type,
        "https://cosign.sigstore.dev/attestation/vuln/v1"
    );
    let texts: Vec<&str> = attestation.conditions.iter().map(|c| c.text()).collect();
    assert_eq!(
        texts,
        [r#"(predicate.scanner.uri.matches("(?s)^pkg:github/aquasecurity/trivy.*$"))"#]
    );
}

// --- what cannot be carried over ---

#[test]
fn kyverno_signers_that_cannot_be_read_on_the_node_are_dropped_and_the_rule_fails_closed() {
    let yaml = kyverno_entry(
        "Enforce",
        r#"imageReferences: ["registry.example.com/*"]
          mutateDigest: false
          verifyDigest: true
          required: true
          attestors:
            - count: 1
              entries:
                - keys:
                    kms: gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k
                - keys:
                    publicKeys: k8s://kyverno/cosign-pub
                - keys:
                    publicKeys: awskms:///alias/cosign
                - keys:
                    secret:
                      name: cosign-pub
                      namespace: kyverno
                - certificates:
                    cert: "-----BEGIN CERTIFICATE-----"
                - keyless:
                    subject: "*@example.com"
                    issuer: https://accounts.google.com
                    annotations: {env: prod}
                - keyless:
                    subject: "*@example.com"
                    issuer: https://accounts.google.com
                    additionalExtensions:
                      noSuchClaim: x
"#,
    );
    let (imported, policy) = load(&yaml);
    let found = lines(&imported);
    let path = "document 1 (ClusterPolicy/p): spec.rules[0].verifyImages[0]";
    let expected = [
        format!("{path}.attestors[0].entries[0].keys.kms: KMS keys cannot be read offline; dropped"),
        format!("{path}.attestors[0].entries[1].keys.publicKeys: \"k8s://kyverno/cosign-pub\" names a Kubernetes secret, which cannot be read on the node; dropped"),
        format!("{path}.attestors[0].entries[2].keys.publicKeys: KMS keys cannot be read offline; dropped"),
        format!("{path}.attestors[0].entries[3].keys.secret: keys in Kubernetes secrets cannot be read on the node; dropped"),
        format!("{path}.attestors[0].entries[4].certificates: certificate attestors (cert, certChain) are not supported by pullgate; dropped"),
        format!("{path}.attestors[0].entries[5].keyless.annotations: not a field the importer knows; the signer is dropped rather than accepted without it"),
        format!("{path}.attestors[0].entries[6].keyless.additionalExtensions.noSuchClaim: not a Fulcio claim pullgate can check; the signer is dropped rather than accepted without it"),
        format!("{path}.mutateDigest: implied on the node: pullgate pulls the digest it verified, whatever the pod named"),
        format!("{path}.verifyDigest: meaningless on the node: pullgate resolves a tag once, verifies that digest and pulls it"),
        format!("{path}.required: meaningless on the node: every pull is verified before it happens, so nothing is left to mark"),
        format!("{path}: no signer of this rule could be carried over; the rule denies every image it matches"),
    ];
    for line in &expected {
        assert!(found.contains(line), "missing {line:?} in {found:#?}");
    }
    assert!(imported.dropped_anything());
    let notes: Vec<_> = imported.findings.iter().filter(|f| !f.is_dropped()).collect();
    assert_eq!(
        notes.len(),
        3,
        "mutateDigest, verifyDigest and required are notes: {notes:#?}"
    );
    // Never wider: with no signer left, the rule denies what it matches.
    assert_eq!(policy.rules()[0].action(), Action::Deny);
    assert_eq!(decide(&policy, "registry.example.com/app:v1", "").1, Action::Deny);
    assert!(imported
        .policy
        .contains("Denies: none of its signers could be carried over"));
}

#[test]
fn a_dropped_signer_of_one_of_many_leaves_the_others() {
    let pem = public_pem();
    let yaml = kyverno_entry(
        "Enforce",
        &format!(
            "imageReferences: [\"registry.example.com/*\"]\n          attestors:\n            - count: 1\n              entries:\n                - keys:\n                    kms: awskms:///alias/k\n                - keys:\n                    publicKeys: |\n{}                    rekor: {{ignoreTlog: true}}\n",
            indent(&pem, 22)
        ),
    );
    let (imported, policy) = load(&yaml);
    assert!(imported.dropped_anything());
    assert_eq!(policy.rules()[0].action(), Action::Verify);
    assert_eq!(policy.rules()[0].authorities().len(), 1);
}

#[test]
fn notary_and_unknown_fields_are_reported() {
    let yaml = kyverno_entry(
        "Enforce",
        r#"type: Notary
          imageReferences: ["registry.example.com/*"]
          someFutureField: true
          attestors:
            - entries:
                - certificates:
                    cert: x
"#,
    );
    let (imported, policy) = load(&yaml);
    let found = dropped(&imported);
    assert!(has(
        &found,
        &[
            "certificates: not certificates pullgate can trust",
            "holds no PEM certificate"
        ]
    ));
    assert!(has(
        &found,
        &["verifyImages[0].someFutureField: not a field the importer knows; dropped"]
    ));
    assert_eq!(policy.rules()[0].action(), Action::Deny);
}

/// A self-signed CA certificate (P-256, valid until 2126).
const NOTARY_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIB/TCCAaOgAwIBAgIUALMZK3p1KV4Qj77D1FVrQsNEwAcwCgYIKoZIzj0EAwIw
SzELMAkGA1UEBhMCVVMxCzAJBgNVBAgMAldBMRYwFAYDVQQKDA1wdWxsZ2F0ZS50
ZXN0MRcwFQYDVQQDDA5wb2xpY3kgdGVzdCBDQTAgFw0yNjEyMDcwOTU2NDZaGA8y
MTI2MTExMzA5NTY0NlowSzELMAkGA1UEBhMCVVMxCzAJBgNVBAgMAldBMRYwFAYD
VQQKDA1wdWxsZ2F0ZS50ZXN0MRcwFQYDVQQDDA5wb2xpY3kgdGVzdCBDQTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABIgYnBduHp06EhoiOvxolX2KEZZbYEMieSh0
8BOOiC8LfUETW3JF9nfOo3Xgk7A276doW6VgpuuXxnvT2hweiR2jYzBhMB0GA1Ud
DgQWBBQijXkK1wHQXYBy2+OjJHalfLowBzAfBgNVHSMEGDAWgBQijXkK1wHQXYBy
2+OjJHalfLowBzAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwICBDAKBggq
hkjOPQQDAgNIADBFAiEAj/RrQlBmL9GasGsPiL7US9hqU5CIWxGSnXQtF+9dLrMC
IESIpvIcIkUoLQIhRoll6zVPrWBrieiIZgjMaG8uEKwU
-----END CERTIFICATE-----
";

/// Kyverno's `type: Notary` with a certificate attestor: a Notation authority whose trust store
/// is the certificate and which trusts any identity under it, as Kyverno's Notary verifier does;
/// keys under a Notary entry mean nothing and are reported.
#[test]
fn notary_certificate_attestors_become_notation_authorities() {
    let yaml = kyverno_entry(
        "Enforce",
        &format!(
            "type: Notary\n          imageReferences: [\"registry.example.com/*\"]\n          attestors:\n            - count: 1\n              entries:\n                - certificates:\n                    cert: |\n{}                - keys:\n                    publicKeys: |\n{}",
            indent(NOTARY_CA_PEM, 22),
            indent(&public_pem(), 22)
        ),
    );
    let (imported, policy) = load(&yaml);
    let rule = &policy.rules()[0];
    assert_eq!(rule.action(), Action::Verify, "{}", imported.policy);
    let [authority] = rule.authorities() else {
        panic!("{}", imported.policy);
    };
    let AuthorityKind::Notation(trust) = &authority.kind else {
        panic!("{}", imported.policy);
    };
    assert_eq!(trust.trust_store.len(), 1);
    assert!(
        imported.policy.contains("trustedIdentities: [\"*\"]"),
        "{}",
        imported.policy
    );
    assert!(!imported.policy.contains("tlog:"), "{}", imported.policy);
    assert!(has(
        &dropped(&imported),
        &["keys: Kyverno verifies a Notary entry with Notation"]
    ));
    assert!(has(&lines(&imported), &["trustedIdentities: [\"*\"]"]));
}

/// Kyverno's Notary attestations are Notation-signed: pullgate verifies none, so the rule denies.
#[test]
fn notary_attestations_make_the_rule_deny() {
    let yaml = kyverno_entry(
        "Enforce",
        &format!(
            "type: Notary\n          imageReferences: [\"registry.example.com/*\"]\n          attestors:\n            - entries:\n                - certificates:\n                    cert: |\n{}          attestations:\n            - type: sbom/cyclone-dx\n              attestors:\n                - entries:\n                    - certificates:\n                        cert: |\n{}",
            indent(NOTARY_CA_PEM, 22),
            indent(NOTARY_CA_PEM, 26)
        ),
    );
    let (imported, policy) = load(&yaml);
    assert!(has(
        &dropped(&imported),
        &["attestations signed with Notation are not verified"]
    ));
    assert_eq!(policy.rules()[0].action(), Action::Deny, "{}", imported.policy);
}

#[test]
fn rules_that_do_not_verify_images_are_reported_as_not_imported() {
    let pem = public_pem();
    let yaml = kyverno_entry("Enforce", &key_entry("\"registry.example.com/*\"", &pem)).replace(
        "  rules:\n",
        "  rules:\n    - name: no-latest\n      match:\n        any:\n          - resources:\n              kinds: [Pod]\n      validate:\n        message: no latest tag\n        pattern:\n          spec:\n            containers:\n              - image: \"!*:latest\"\n",
    );
    let (imported, policy) = load(&yaml);
    assert_eq!(
        dropped(&imported),
        ["document 1 (ClusterPolicy/p): spec.rules[0]: not an image verification rule (no verifyImages); not imported"]
    );
    assert_eq!(policy.rules().len(), 1);
    assert_eq!(policy.rules()[0].name(), "p.r");
}

#[test]
fn keyless_trust_material_of_its_own_is_reported_and_drops_the_signer() {
    let yaml = kyverno_entry(
        "Enforce",
        r#"imageReferences: ["registry.example.com/*"]
          attestors:
            - entries:
                - keyless:
                    subject: "dev@example.com"
                    issuer: https://accounts.example.com
                    roots: "-----BEGIN CERTIFICATE-----"
                    rekor:
                      url: https://rekor.internal.example.com
                    ctlog:
                      ignoreSCT: true
                    additionalExtensions:
                      githubWorkflowRepository: example-org/app
"#,
    );
    let (imported, policy) = load(&yaml);
    let found = dropped(&imported);
    assert!(has(
        &found,
        &[
            "keyless.roots: custom Fulcio roots: pullgate checks signatures against spec.trustedRoot only",
            "the signer is dropped"
        ]
    ));
    assert!(has(
        &found,
        &["keyless.rekor.url: the transparency log https://rekor.internal.example.com"]
    ));
    assert!(has(
        &found,
        &["keyless.ctlog.ignoreSCT: pullgate always checks the certificate's SCT"]
    ));
    // Checked against the public trusted root, the signer would accept what the source refuses.
    assert_eq!(policy.rules()[0].action(), Action::Deny);

    // Without trust material of its own, the signer is carried over.
    let yaml = yaml.replace(
        "                    roots: \"-----BEGIN CERTIFICATE-----\"\n                    rekor:\n                      url: https://rekor.internal.example.com\n",
        "",
    );
    let (_, policy) = load(&yaml);
    let AuthorityKind::Keyless(keyless) = &policy.rules()[0].authorities()[0].kind else {
        panic!("keyless expected");
    };
    assert_eq!(keyless.subject.as_str(), "dev@example.com", "no wildcard: exact");
    assert_eq!(keyless.extensions.len(), 1, "a claim by cosign's name is pullgate's");
}

#[test]
fn kyverno_admission_only_conditions_are_dropped_towards_stricter() {
    let pem = public_pem();
    let yaml = kyverno_entry("Enforce", &key_entry("\"registry.example.com/*\"", &pem))
        .replace(
            "          - resources:\n              kinds: [Pod]\n",
            "          - resources:\n              kinds: [Pod]\n              namespaces: [prod]\n              selector:\n                matchLabels: {app: web}\n",
        )
        .replace(
            "      verifyImages:",
            "      exclude:\n        any:\n          - resources:\n              namespaces: [prod]\n            subjects:\n              - kind: User\n                name: ci\n          - resources:\n              namespaces: [kube-system]\n      preconditions:\n        all: []\n      verifyImages:",
        );
    let (imported, policy) = load(&yaml);
    let found = dropped(&imported);
    assert!(has(&found, &["match.any[0].resources.selector: cannot be evaluated on the node, so the rule covers every pull in its namespaces (stricter)"]));
    assert!(has(&found, &["exclude.any[0].subjects: cannot be evaluated on the node, so this exclusion is not carried over (stricter)"]));
    assert!(has(
        &found,
        &["spec.rules[0].preconditions: cannot be evaluated on the node"]
    ));
    let rule = &policy.rules()[0];
    assert_eq!(rule.namespaces().map(|n| n.len()), Some(1));
    let excluded: Vec<&str> = rule.exclude_namespaces().iter().map(|g| g.as_str()).collect();
    assert_eq!(excluded, ["kube-system"], "only the exclusion by namespace alone");
}

// --- policy-controller ---

fn cip(spec: &str) -> String {
    format!("apiVersion: policy.sigstore.dev/v1beta1\nkind: ClusterImagePolicy\nmetadata:\n  name: cip\nspec:\n{spec}")
}

#[test]
fn policy_controller_keyless_identities_and_globs() {
    let yaml = cip(r#"  images:
    - glob: "index.docker.io/library/*"
    - glob: "ghcr.io/example-org/**"
  authorities:
    - name: gha
      keyless:
        url: https://fulcio.sigstore.dev
        identities:
          - issuer: https://token.actions.githubusercontent.com
            subjectRegExp: '^https://github\.com/example-org/.*$'
          - issuerRegExp: '.*\.example\.com$'
            subject: release@example.com
      ctlog:
        url: https://rekor.sigstore.dev
"#);
    let (imported, policy) = load(&yaml);
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    assert_eq!(
        policy.no_match(),
        NoMatch::Deny,
        "policy-controller's default no-match-policy"
    );
    let rule = &policy.rules()[0];
    let globs: Vec<&str> = rule.images().iter().map(|g| g.as_str()).collect();
    assert_eq!(globs, ["docker.io/library/*", "ghcr.io/example-org/**"]);
    assert_eq!(rule.authorities().len(), 2);
    assert!(rule.authorities().iter().all(|a| a.tlog == Tlog::Required));
    assert_eq!(rule.mode(), Some(Mode::Enforce));
    // A `*` stays within one segment, as in policy-controller.
    assert!(decide(&policy, "nginx:1.27", "").0.is_some());
    assert!(decide(&policy, "docker.io/library/x/y:1", "").0.is_none());
    assert!(lines(&imported)
        .iter()
        .any(|l| l.contains("policy.sigstore.dev/include=true")));
}

#[test]
fn policy_controller_glob_forms() {
    let cases = [
        ("*", "docker.io/library/*"),
        ("*/*", "docker.io/*/*"),
        ("index.docker.io/myuser/*", "docker.io/myuser/*"),
        ("ghcr.io/org/app:**", "ghcr.io/org/app:*"),
        ("ghcr.io/org/app*", "ghcr.io/org/app*"),
        ("nginx", "docker.io/library/nginx"),
        ("127.0.0.1:5000/apps/**", "127.0.0.1:5000/apps/**"),
    ];
    for (pattern, expected) in cases {
        assert_eq!(
            glob(pattern, Dialect::PolicyController).as_deref(),
            Ok(expected),
            "{pattern}"
        );
    }
    assert!(glob("ghcr.io/[a-z]*", Dialect::PolicyController).is_err());
}

#[test]
fn kyverno_glob_forms() {
    let cases = [
        ("*", "**"),
        ("ghcr.io/org/*", "ghcr.io/org/**"),
        ("ghcr.io/org/app:*", "ghcr.io/org/app:*"),
        ("ghcr.io/*:v1", "ghcr.io/**:v1"),
        ("ghcr.io/org/app*", "ghcr.io/org/app**"),
        ("ghcr.io/org/app?", "ghcr.io/org/app**"),
        ("ghcr.io/org/**", "ghcr.io/org/**"),
        ("nginx:*", "docker.io/library/nginx:*"),
        ("myorg/*", "docker.io/myorg/**"),
        ("index.docker.io/library/nginx*", "docker.io/library/nginx**"),
        ("ghcr.io/org/app@sha256:*", "ghcr.io/org/app@sha256:*"),
        ("localhost:5000/x/*", "localhost:5000/x/**"),
    ];
    for (pattern, expected) in cases {
        assert_eq!(
            glob(pattern, Dialect::KyvernoWildcard).as_deref(),
            Ok(expected),
            "{pattern}"
        );
    }
    assert_eq!(
        glob("ghcr.io/org/[ab]pp:*", Dialect::KyvernoGlob).as_deref(),
        Ok("ghcr.io/org/**pp:*")
    );
    assert!(glob(r"ghcr.io/org/\*", Dialect::KyvernoGlob).is_err());
}

#[test]
fn allow_rules_keep_only_patterns_read_exactly() {
    let exact = [
        ("ghcr.io/org/app:*", Dialect::KyvernoWildcard, "ghcr.io/org/app:*"),
        ("ghcr.io/org/*", Dialect::KyvernoWildcard, "ghcr.io/org/**"),
        (
            "registry.example.com*",
            Dialect::KyvernoWildcard,
            "registry.example.com*/**",
        ),
        ("*", Dialect::KyvernoWildcard, "**"),
        ("ghcr.io/org/**", Dialect::PolicyController, "ghcr.io/org/**"),
        (
            "index.docker.io/myuser/*",
            Dialect::PolicyController,
            "docker.io/myuser/*",
        ),
    ];
    for (pattern, dialect, expected) in exact {
        assert_eq!(narrow(pattern, dialect), Ok(vec![expected.to_string()]), "{pattern}");
    }
    let wider = [
        ("ghcr.io/org/debug", Dialect::KyvernoWildcard, "names no tag or digest"),
        ("ghcr.io/org/*-debug", Dialect::KyvernoWildcard, "runs on into the tag"),
        ("ghcr.io/org/tool:v?", Dialect::KyvernoWildcard, "one character"),
        ("nginx:*", Dialect::KyvernoWildcard, "names no registry"),
        (
            "docker.io/library/nginx:*",
            Dialect::KyvernoWildcard,
            "every spelling of a Docker Hub image",
        ),
        ("ghcr.io/org/debug", Dialect::PolicyController, "names no tag or digest"),
        (
            "ghcr.io/org/app:**",
            Dialect::PolicyController,
            "which a tag never matches",
        ),
        ("docker.io/library/*", Dialect::PolicyController, "index.docker.io"),
    ];
    for (pattern, dialect, why) in wider {
        let error = narrow(pattern, dialect).unwrap_err();
        assert!(error.contains(why), "{pattern}: {error}");
    }
}

/// policy-controller passes an authority with attestations on them alone, but a policy over all
/// authorities' results (`spec.policy`) is how it asks for a signature beside them: one
/// authority checks the image's signature, another its attestations, and the policy needs
/// both. That policy cannot be read here, so the image's signature stays required.
#[test]
fn policy_controller_a_policy_over_all_authorities_keeps_the_signature_required() {
    let pem = public_pem();
    let yaml = cip(&format!(
        r#"  images:
    - glob: "registry.example.com/**"
  authorities:
    - name: signature
      key:
        data: |
{pem}    - name: attested
      key:
        data: |
{pem}      attestations:
        - name: provenance
          predicateType: slsaprovenance1
  policy:
    type: rego
    data: |
      package sigstore
      isCompliant[response] {{
        response := {{"result": count(input.authorityMatches.signature.signatures) > 0, "error": "", "warning": ""}}
      }}
"#,
        pem = indent(&pem, 10)
    ));
    let (imported, policy) = load(&yaml);
    let rule = &policy.rules()[0];
    assert!(
        rule.requires_signature() || rule.action() == Action::Deny,
        "attestations alone admit what spec.policy refuses: {}",
        imported.policy
    );
    assert!(
        !has(&lines(&imported), &["so does pullgate, with requireSignature: false"]),
        "{:#?}",
        lines(&imported)
    );
}

#[test]
fn policy_controller_attestations_judged_by_dropped_policies_keep_the_signature_required() {
    let pem = public_pem();
    let yaml = cip(&format!(
        r#"  mode: warn
  images:
    - glob: "registry.example.com/**"
  authorities:
    - name: release
      key:
        data: |
{}      attestations:
        - name: sbom
          predicateType: cyclonedx
          policy:
            type: cue
            data: 'predicate: components: [...]'
        - name: provenance
          predicateType: slsaprovenance
          policy:
            type: rego
            data: 'package sigstore'
    - name: other
      key:
        secretRef:
          name: cosign
"#,
        indent(&pem, 10)
    ));
    let (imported, policy) = load(&yaml);
    let found = lines(&imported);
    let doc = "document 1 (ClusterImagePolicy/cip)";
    for line in [
        format!("{doc}: spec.authorities[0].attestations[0].policy: CUE policies have no pullgate equivalent; the policy is dropped, the attestation is still required"),
        format!("{doc}: spec.authorities[0].attestations[1].policy: Rego policies have no pullgate equivalent; the policy is dropped, the attestation is still required"),
        format!("{doc}: spec.authorities[1].key.secretRef: keys in Kubernetes secrets cannot be read on the node; dropped"),
        format!("{doc}: spec.authorities[0].attestations: policy-controller passes this authority on its attestations alone, judged by their policies, which pullgate cannot read; pullgate also requires an image signature from this authority"),
    ] {
        assert!(found.contains(&line), "missing {line:?} in {found:#?}");
    }
    // Without their policies, attestations of these types prove too little to stand alone.
    assert!(!imported.policy.contains("requireSignature"), "{}", imported.policy);
    let rule = &policy.rules()[0];
    assert!(rule.requires_signature());
    assert_eq!(rule.mode(), Some(Mode::Warn));
    let types: Vec<&str> = rule.attestations().iter().map(|a| a.predicate_type.as_str()).collect();
    assert_eq!(types, ["https://cyclonedx.org/bom", "https://slsa.dev/provenance/v0.2"]);
    assert_eq!(rule.authorities().len(), 1);
    assert_eq!(rule.authorities()[0].name, "release");
}

#[test]
fn policy_controller_static_authorities_and_no_match_policy() {
    let pass = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-policy-controller\n  namespace: cosign-system\ndata:\n  no-match-policy: warn\n",
        cip("  images: [{glob: \"registry.k8s.io/**\"}]\n  authorities:\n    - static:\n        action: pass\n")
    );
    let (imported, policy) = load(&pass);
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    assert_eq!(policy.no_match(), NoMatch::Warn);
    assert_eq!(decide(&policy, "registry.k8s.io/pause:3.9", "").1, Action::Allow);
    assert!(
        policy.trusted_root().is_none(),
        "nothing is verified, so no trusted root is named"
    );

    let fail = cip("  images: [{glob: \"registry.k8s.io/**\"}]\n  authorities:\n    - static:\n        action: fail\n");
    let (_, policy) = load(&fail);
    assert_eq!(decide(&policy, "registry.k8s.io/pause:3.9", "").1, Action::Deny);
}

#[test]
fn policy_controller_trust_roots_and_kms_are_reported() {
    let yaml = cip(r#"  images: [{glob: "registry.example.com/**"}]
  authorities:
    - key:
        kms: awskms:///alias/release
    - keyless:
        url: https://fulcio.internal.example.com
        trustRootRef: internal
        identities:
          - issuer: https://accounts.example.com
            subject: dev@example.com
"#);
    let (imported, policy) = load(&yaml);
    let found = dropped(&imported);
    assert!(has(
        &found,
        &["spec.authorities[0].key.kms: KMS keys cannot be read offline; dropped"]
    ));
    assert!(has(
        &found,
        &["spec.authorities[1].keyless.url: the Fulcio at https://fulcio.internal.example.com"]
    ));
    assert!(has(
        &found,
        &[
            "spec.authorities[1].keyless.trustRootRef: a TrustRoot: pullgate checks signatures against spec.trustedRoot only",
            "the signer is dropped"
        ]
    ));
    assert_eq!(
        policy.rules()[0].action(),
        Action::Deny,
        "the identity is not checked against the public trusted root instead"
    );
}

// --- ImageValidatingPolicy ---

#[test]
fn image_validating_policy_signature_checks_map_to_verify() {
    let pem = public_pem();
    let yaml = format!(
        r#"apiVersion: policies.kyverno.io/v1beta1
kind: ImageValidatingPolicy
metadata:
  name: ivp
spec:
  validationActions: [Audit]
  matchConstraints:
    namespaceSelector:
      matchExpressions:
        - key: kubernetes.io/metadata.name
          operator: NotIn
          values: [kube-system]
  matchImageReferences:
    - glob: "registry.example.com/{{team-a,team-b}}/*"
  attestors:
    - name: release
      cosign:
        key:
          data: |
{}        ctlog:
          insecureIgnoreTlog: true
  attestations:
    - name: sbom
      intoto:
        type: https://cyclonedx.org/bom
  validations:
    - expression: >-
        images.containers.map(image, verifyImageSignatures(image, [attestors.release])).all(e, e > 0)
      message: not signed
    - expression: "images.containers.all(i, verifyAttestationSignatures(i, attestations.sbom, [attestors.release]) > 0)"
"#,
        indent(&pem, 12)
    );
    let (imported, policy) = load(&yaml);
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    let rule = &policy.rules()[0];
    assert_eq!(rule.mode(), Some(Mode::Audit));
    let globs: Vec<&str> = rule.images().iter().map(|g| g.as_str()).collect();
    assert_eq!(
        globs,
        ["registry.example.com/team-a/**", "registry.example.com/team-b/**"]
    );
    assert_eq!(rule.authorities()[0].tlog, Tlog::Ignore);
    assert_eq!(rule.attestations()[0].predicate_type, "https://cyclonedx.org/bom");
    assert!(decide(&policy, "registry.example.com/team-a/x/y:1", "kube-system")
        .0
        .is_none());
    assert!(decide(&policy, "registry.example.com/team-a/x/y:1", "default")
        .0
        .is_some());
}

/// An ImageValidatingPolicy that verifies only an attestation's signatures checks no image
/// signature: a rule with `requireSignature: false`, not reported as stricter.
#[test]
fn image_validating_policy_attestation_checks_alone_need_no_signature() {
    let pem = public_pem();
    let yaml = format!(
        r#"apiVersion: policies.kyverno.io/v1beta1
kind: ImageValidatingPolicy
metadata:
  name: ivp
spec:
  matchImageReferences:
    - glob: "ghcr.io/org/*"
  attestors:
    - name: github
      cosign:
        key:
          data: |
{}        ctlog:
          insecureIgnoreTlog: true
  attestations:
    - name: provenance
      intoto:
        type: https://slsa.dev/provenance/v1
  validations:
    - expression: "images.containers.all(i, verifyAttestationSignatures(i, attestations.provenance, [attestors.github]) > 0)"
"#,
        indent(&pem, 12)
    );
    let (imported, policy) = load(&yaml);
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    assert!(has(
        &lines(&imported),
        &["spec.validations[0].expression:", "requireSignature: false"]
    ));
    let rule = &policy.rules()[0];
    assert!(!rule.requires_signature());
    assert_eq!(rule.authorities().len(), 1);
    assert_eq!(rule.attestations()[0].predicate_type, "https://slsa.dev/provenance/v1");
}

/// A validation that checks the image's signature in a shape the importer cannot read still
/// requires a signature in Kyverno, which must hold beside the attestation check: the rule may
/// not admit images on their attestations alone, nor say no validation checks the signature.
#[test]
fn image_validating_policy_an_unread_signature_check_keeps_attestations_from_proving_alone() {
    let pem = public_pem();
    let yaml = format!(
        r#"apiVersion: policies.kyverno.io/v1beta1
kind: ImageValidatingPolicy
metadata:
  name: ivp
spec:
  matchImageReferences:
    - glob: "ghcr.io/org/*"
  attestors:
    - name: github
      cosign:
        key:
          data: |
{}        ctlog:
          insecureIgnoreTlog: true
  attestations:
    - name: provenance
      intoto:
        type: https://slsa.dev/provenance/v1
  validations:
    - expression: "images.containers.all(i, i.startsWith('ghcr.io/org/base') || verifyImageSignatures(i, [attestors.github]) > 0)"
    - expression: "images.containers.all(i, verifyAttestationSignatures(i, attestations.provenance, [attestors.github]) > 0)"
"#,
        indent(&pem, 12)
    );
    let (imported, policy) = load(&yaml);
    let rule = &policy.rules()[0];
    assert!(
        rule.requires_signature() || rule.action() == Action::Deny,
        "attestations alone admit: {}",
        imported.policy
    );
    assert!(
        !has(&lines(&imported), &["no validation checks the image's signature"]),
        "{:#?}",
        lines(&imported)
    );
    assert_eq!(rule.action(), Action::Deny, "{}", imported.policy);
    assert!(has(
        &dropped(&imported),
        &["spec.validations[0].expression:", "whose signature it needs is unknown"]
    ));
}

#[test]
fn image_validating_policy_other_validations_are_dropped_and_deny() {
    let yaml = r#"apiVersion: policies.kyverno.io/v1alpha1
kind: ImageValidatingPolicy
metadata:
  name: ivp
spec:
  matchImageReferences: [{glob: "ghcr.io/*"}]
  attestors:
    - name: notary
      notary:
        certs: {value: x}
  validations:
    - expression: "images.containers.all(i, i.registry == 'ghcr.io')"
"#;
    let (imported, policy) = load(yaml);
    let found = dropped(&imported);
    assert!(has(
        &found,
        &["spec.attestors[0].notary: Notary attestors of an ImageValidatingPolicy are not carried over"]
    ));
    assert!(has(
        &found,
        &[
            "spec.validations[0].expression:",
            "is not a signature check pullgate can carry over; dropped"
        ]
    ));
    assert_eq!(policy.rules()[0].action(), Action::Deny);
    assert_eq!(
        policy.rules()[0].mode(),
        Some(Mode::Enforce),
        "validationActions default to Deny"
    );
}

#[test]
fn image_validating_policy_recognizes_only_signature_checks() {
    assert_eq!(
        recognizes(
            "images.containers.map(image, verifyImageSignatures(image, [attestors.a, attestors[\"b\"]])).all(e, e > 0)"
        ),
        Some((true, vec!["a".to_string(), "b".to_string()]))
    );
    assert_eq!(
        recognizes("images.initContainers.all(i, verifyImageSignatures(i, [attestors.a]) >= 1)"),
        Some((true, vec!["a".to_string()]))
    );
    assert_eq!(
        recognizes(
            "images.containers.map(i, verifyAttestationSignatures(i, attestations.sbom, [attestors.a])).all(e, e != 0)"
        ),
        Some((false, vec!["a".to_string()]))
    );
    for other in [
        "images.containers.map(i, verifyImageSignatures(i, [attestors.a])).all(e, e > 1)",
        "images.containers.map(i, verifyImageSignatures(j, [attestors.a])).all(e, e > 0)",
        "images.containers.map(i, verifyImageSignatures(i, [attestors.a])).all(e, f > 0)",
        "images.containers.all(i, verifyImageSignatures(i, [attestors.a]) > 0 || true)",
        "images.containers.all(i, extractPayload(i, attestations.sbom).bomFormat == 'CycloneDX')",
    ] {
        assert_eq!(recognizes(other), None, "{other}");
    }
}

// --- several documents, overlaps, order ---

#[test]
fn overlapping_rules_put_the_stricter_first_and_say_what_is_lost() {
    let pem = public_pem();
    // A general rule, then a specific one that asks for the same key and an SBOM too.
    let general = kyverno_entry("Enforce", &key_entry("\"registry.example.com/*\"", &pem));
    let specific = kyverno_entry(
        "Enforce",
        &format!(
            "{}          attestations:\n            - predicateType: https://cyclonedx.org/bom\n",
            key_entry("\"registry.example.com/app*\"", &pem)
        ),
    )
    .replace("name: p\n", "name: q\n");
    let (imported, policy) = load(&format!("{general}---\n{specific}"));
    let names: Vec<&str> = policy.rules().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["q.r", "p.r"], "the stricter goes first");
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    assert!(has(
        &lines(&imported),
        &[
            "rules \"q.r\" (document 2 (ClusterPolicy/q) spec.rules[0].verifyImages[0]) and \"p.r\"",
            "nothing is lost"
        ]
    ));

    // Different keys: neither is stricter; the later loses its requirement where they overlap.
    let other = public_pem();
    let specific =
        kyverno_entry("Enforce", &key_entry("\"registry.example.com/app*\"", &other)).replace("name: p\n", "name: q\n");
    let (imported, policy) = load(&format!("{general}---\n{specific}"));
    let names: Vec<&str> = policy.rules().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["p.r", "q.r"], "input order when neither is stricter");
    assert!(has(
        &dropped(&imported),
        &[
            "both match pulls such as registry.example.com/app",
            "the requirements of \"q.r\" are not checked for them"
        ]
    ));
}

#[test]
fn rules_in_disjoint_namespaces_do_not_overlap() {
    let pem = public_pem();
    let entry = key_entry("\"registry.example.com/*\"", &pem);
    let a =
        kyverno_entry("Enforce", &entry).replace("kinds: [Pod]\n", "kinds: [Pod]\n              namespaces: [prod]\n");
    let b = kyverno_entry("Audit", &entry)
        .replace("name: p\n", "name: q\n")
        .replace(
            "kinds: [Pod]\n",
            "kinds: [Pod]\n              namespaces: [dev, \"team-*\"]\n",
        );
    let imported = import(&format!("{a}---\n{b}"));
    assert!(
        imported.findings.iter().all(|f| !f.to_string().contains("both match")),
        "{:#?}",
        lines(&imported)
    );
}

#[test]
fn glob_intersections_find_an_example_or_none() {
    assert_eq!(
        glob_intersection("ghcr.io/org/**", "ghcr.io/*/app").as_deref(),
        Some("ghcr.io/org/app")
    );
    assert_eq!(glob_intersection("ghcr.io/org/*", "ghcr.io/org/a/b"), None);
    assert_eq!(glob_intersection("ghcr.io/a/**", "ghcr.io/b/**"), None);
    assert_eq!(glob_intersection("ghcr.io/a:v1", "ghcr.io/a@sha256:*"), None);
    assert_eq!(
        glob_intersection("ghcr.io/a:v*", "ghcr.io/a:*1").as_deref(),
        Some("ghcr.io/a:v1")
    );
    assert!(glob_intersection("**", "docker.io/library/nginx").is_some());
}

#[test]
fn a_list_of_mixed_kinds_is_read_in_order_and_others_are_noted() {
    let pem = public_pem();
    let policy = kyverno_entry("Enforce", &key_entry("\"registry.example.com/a/*\"", &pem));
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}{}",
        indent(&format!("- {}", policy.replace('\n', "\n  ")), 0),
        "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: prod\n"
    );
    let imported = import(&format!(
        "{list}---\n{}",
        cip("  images: [{glob: \"registry.example.com/b/**\"}]\n  authorities:\n    - static: {action: pass}\n")
    ));
    let found = lines(&imported);
    assert!(
        found.contains(
            &"document 1 item 2 (Namespace/prod): not a Kyverno or policy-controller image policy; ignored".to_string()
        ),
        "{found:#?}"
    );
    assert!(imported
        .policy
        .contains("#   document 1 item 1: ClusterPolicy/p (kyverno.io/v1)"));
    assert!(imported
        .policy
        .contains("#   document 2: ClusterImagePolicy/cip (policy.sigstore.dev/v1beta1)"));
    assert!(has(
        &dropped(&imported),
        &["no-match-policy (deny) also applies in the cluster to images that only Kyverno policies match"]
    ));
}

#[test]
fn unreadable_input_is_an_error() {
    let options = Options {
        trusted_root: trust_path().into(),
    };
    let file = Path::new("x.yaml");
    assert!(matches!(
        import_str("a: [b", file, &options),
        Err(ImportError::NotYaml(_))
    ));
    assert!(matches!(
        import_str("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n", file, &options),
        Err(ImportError::NoPolicy)
    ));
    assert!(matches!(import_str("", file, &options), Err(ImportError::NoPolicy)));
    let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
    assert!(matches!(
        import_str(&deep, file, &options),
        Err(ImportError::TooDeep(1))
    ));
    let big = format!("# {}\n", "x".repeat(1024 * 1024));
    assert!(matches!(
        import_str(&big, file, &options),
        Err(ImportError::Unreadable(_))
    ));
}

#[test]
fn the_output_starts_with_its_header_and_every_name_is_valid() {
    let pem = public_pem();
    let yaml = kyverno_entry("Enforce", &key_entry("\"registry.example.com/*\"", &pem))
        .replace("name: p\n", "name: \"weird name/with:chars\"\n");
    let (imported, policy) = load(&yaml);
    assert!(imported
        .policy
        .starts_with("# Generated by `pullgate policy import` from /src/policies.yaml."));
    assert_eq!(policy.name(), "imported-policies");
    assert_eq!(policy.rules()[0].name(), "weird-name-with-chars.r");
}

mod never_wider;
mod ratify;

//! The output decides every image at least as strictly as the source product, and says so
//! when it cannot decide it exactly: one test per case the import review found fail-open
//! (A1–A12, B1–B4, C), each built from the review's probe.

use serde_json::json;

use super::{decide, dropped, has, indent, lines, load, statement};
use pullgate::policy::{evaluate_conditions, Action, Mode, NoMatch};

/// The P-256 key the review's probes are signed with.
const PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjvch9g5YRvFJ43z0Ym0LOixUT92V
zMVyA7IqqI/61uLMpkW6KCz+k7bxZjfo1axWp4aHaF7tfKlzRxLqAHEMxA==
-----END PUBLIC KEY-----";

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111110";

/// A ClusterPolicy `p` (Enforce) with one rule `r` matching every Pod, whose single
/// verifyImages entry checks `images` against the probe key; `extra` goes into the entry.
fn kyverno_key(images: &str, extra: &str) -> String {
    format!(
        "apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: p
spec:
  validationFailureAction: Enforce
  rules:
    - name: r
      match:
        any:
          - resources:
              kinds: [Pod]
      verifyImages:
        - imageReferences: [{images}]
{extra}          attestors:
            - entries:
                - keys:
                    publicKeys: |-
{}",
        indent(PEM, 22)
    )
}

/// A ClusterImagePolicy `name` over `images` with the probe key as its authority.
fn cip_key(name: &str, images: &str) -> String {
    format!(
        "apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata:
  name: {name}
spec:
  images: [{images}]
  authorities:
    - key:
        data: |
{}",
        indent(PEM, 10)
    )
}

fn rule_of(decision: &(Option<String>, Action, Mode)) -> Option<&str> {
    decision.0.as_deref()
}

// --- A: fail-open with exit 0 ---

/// A1 (p7): an exclusion that also names kinds or operations does not hold for every pod pull.
#[test]
fn exclusions_limited_to_other_kinds_or_operations_are_not_carried_over() {
    let yaml = kyverno_key("\"ghcr.io/org/*\"", "").replace(
        "      verifyImages:",
        "      exclude:
        any:
          - resources:
              kinds: [Deployment]
              namespaces: [prod]
          - resources:
              operations: [UPDATE]
              namespaces: [payments]
          - resources:
              kinds: [Pod]
              namespaces: [kube-system]
      verifyImages:",
    );
    let (imported, policy) = load(&yaml);
    let image = "ghcr.io/org/app:v1";
    assert_eq!(
        decide(&policy, image, "prod"),
        (Some("p.r".into()), Action::Verify, Mode::Enforce)
    );
    assert_eq!(rule_of(&decide(&policy, image, "payments")), Some("p.r"));
    assert_eq!(
        rule_of(&decide(&policy, image, "kube-system")),
        None,
        "a Pod exclusion holds"
    );
    let found = dropped(&imported);
    assert!(
        has(&found, &["exclude.any[0].resources.kinds:", "not carried over"]),
        "{found:#?}"
    );
    assert!(
        has(&found, &["exclude.any[1].resources.operations:", "not carried over"]),
        "{found:#?}"
    );
}

/// A2 (p2, p15): a `*` runs on into the tag or digest, in Kyverno and policy-controller alike.
#[test]
fn a_star_that_runs_into_the_tag_or_digest_covers_it() {
    let (imported, policy) = load(&kyverno_key("\"ghcr.io/org/*-prod\"", ""));
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/app:v1-prod", "")), Some("p.r"));
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/app-prod:v1", "")), Some("p.r"));
    let found = lines(&imported);
    assert!(
        !found.iter().any(|l| l.contains("no image")),
        "the pattern matches images in Kyverno: {found:#?}"
    );
    assert!(
        has(
            &found,
            &["\"ghcr.io/org/*-prod\"", "tag or digest", "more images are checked"]
        ),
        "{found:#?}"
    );
    assert!(!imported.dropped_anything(), "more is checked: {found:#?}");

    // A `*` before a tag can take in the `@sha256` of a digest reference.
    let (_, policy) = load(&kyverno_key("\"ghcr.io/org/*:*\"", ""));
    assert_eq!(
        rule_of(&decide(&policy, &format!("ghcr.io/org/app@{DIGEST}"), "")),
        Some("p.r")
    );

    let (imported, policy) = load(&cip_key("prod", "{glob: \"ghcr.io/org/*-prod\"}"));
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/app:v1-prod", "")), Some("prod"));
    assert!(!lines(&imported).iter().any(|l| l.contains("no image")));
    let (_, policy) = load(&cip_key("digests", "{glob: \"ghcr.io/org/*:*\"}"));
    assert_eq!(
        rule_of(&decide(&policy, &format!("ghcr.io/org/app@{DIGEST}"), "")),
        Some("digests")
    );
}

/// A3 (p1, p3): a wildcard host is a registry, and `library/` is not forced before a wildcard.
#[test]
fn wildcard_registries_and_docker_hub_namespaces_are_read_as_kyverno_reads_them() {
    let (imported, policy) = load(&kyverno_key("\"registry.example.com*\"", ""));
    assert_eq!(
        rule_of(&decide(&policy, "registry.example.com/app:v1", "")),
        Some("p.r")
    );
    assert_eq!(
        rule_of(&decide(&policy, "registry.example.com:5000/a/b:v1", "")),
        Some("p.r")
    );
    assert_eq!(
        rule_of(&decide(&policy, "registry.example.com.evil.io/x:1", "")),
        Some("p.r")
    );
    assert!(
        !lines(&imported).iter().any(|l| l.contains("Docker Hub")),
        "{:#?}",
        lines(&imported)
    );

    let (_, policy) = load(&kyverno_key("\"docker.io/myorg*\"", ""));
    assert_eq!(rule_of(&decide(&policy, "myorg/app:v1", "")), Some("p.r"));
    assert_eq!(
        rule_of(&decide(&policy, "docker.io/myorg-team/app:v1", "")),
        Some("p.r")
    );
    assert_eq!(
        rule_of(&decide(&policy, "myorgapp:v1", "")),
        Some("p.r"),
        "the library/ reading too"
    );
}

/// A4 (p4, p5, p10): an allow rule never reads a pattern more widely than the source.
#[test]
fn allow_rules_drop_patterns_they_would_read_more_widely() {
    let (imported, policy) = load(&kyverno_key(
        "\"ghcr.io/org/*\"",
        "          skipImageReferences: [\"ghcr.io/org/debug\", \"ghcr.io/org/tool:v?\", \"ghcr.io/org/ok:*\"]\n",
    ));
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/debug:v1", "")), Some("p.r"));
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/tool:v10", "")), Some("p.r"));
    assert_eq!(
        decide(&policy, "ghcr.io/org/ok:v1", ""),
        (Some("p.r-skip".into()), Action::Allow, Mode::Enforce),
        "an exact pattern is kept"
    );
    let found = dropped(&imported);
    assert!(
        has(&found, &["skipImageReferences[0]:", "\"ghcr.io/org/debug\"", "dropped"]),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            &["skipImageReferences[1]:", "\"ghcr.io/org/tool:v?\"", "dropped"]
        ),
        "{found:#?}"
    );

    let (imported, policy) = load(&kyverno_key("\"*\"", "          skipImageReferences: [\"nginx:*\"]\n"));
    assert_eq!(rule_of(&decide(&policy, "nginx:1.27", "")), Some("p.r"));
    assert!(has(&dropped(&imported), &["skipImageReferences[0]:", "\"nginx:*\""]));

    let pass = "apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata:
  name: trusted-debug
spec:
  images:
    - glob: \"ghcr.io/org/debug\"
    - glob: \"ghcr.io/org/*-debug\"
    - glob: \"ghcr.io/org/tools/**\"
  authorities:
    - static:
        action: pass
";
    let (imported, policy) = load(&format!(
        "{pass}---\n{}",
        cip_key("signed", "{glob: \"registry.example.com/**\"}")
    ));
    assert_eq!(policy.no_match(), NoMatch::Deny);
    assert_eq!(
        decide(&policy, "ghcr.io/org/debug:v1", ""),
        (None, Action::Deny, Mode::Enforce)
    );
    assert_eq!(
        decide(&policy, "ghcr.io/org/x-debug:v1", ""),
        (None, Action::Deny, Mode::Enforce)
    );
    assert_eq!(
        decide(&policy, "ghcr.io/org/tools/cli:v1", ""),
        (Some("trusted-debug".into()), Action::Allow, Mode::Enforce)
    );
    let found = dropped(&imported);
    assert!(has(&found, &["spec.images[0].glob:", "dropped"]), "{found:#?}");
    assert!(has(&found, &["spec.images[1].glob:", "dropped"]), "{found:#?}");
}

/// A5 (p6): `namespaces: []` puts no limit on a Kyverno filter.
#[test]
fn an_empty_namespace_list_means_every_namespace() {
    let yaml = kyverno_key("\"ghcr.io/org/*\"", "").replace(
        "              kinds: [Pod]\n",
        "              kinds: [Pod]\n              namespaces: []\n",
    );
    let (imported, policy) = load(&yaml);
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/app:v1", "default")), Some("p.r"));
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/app:v1", "prod")), Some("p.r"));
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
}

/// A6 (p18): lists of any kind are opened, and image policies of kinds the importer does not
/// know are reported as dropped.
#[test]
fn unknown_image_policy_kinds_are_dropped_and_lists_opened() {
    let yaml = format!(
        "{}---
apiVersion: policies.kyverno.io/v1alpha1
kind: ImageVerificationPolicy
metadata:
  name: old-ivpol
spec:
  matchImageReferences:
    - glob: \"ghcr.io/*\"
---
apiVersion: kyverno.io/v1
kind: ClusterPolicyList
items:
  - apiVersion: kyverno.io/v1
    kind: ClusterPolicy
    metadata: {{name: in-list}}
    spec:
      validationFailureAction: Enforce
      rules:
        - name: r
          match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}
          verifyImages:
            - imageReferences: [\"quay.io/*\"]
              attestors: [{{entries: [{{keyless: {{issuer: \"https://accounts.google.com\", subject: \"a@b.c\"}}}}]}}]
---
apiVersion: policy.sigstore.dev/v1
kind: ClusterImagePolicy
metadata: {{name: future}}
spec:
  images: [{{glob: \"docker.io/**\"}}]
  authorities: [{{keyless: {{identities: [{{issuer: \"https://accounts.google.com\", subject: \"a@b.c\"}}]}}}}]
",
        kyverno_key("\"registry.example.com/*\"", "")
    );
    let (imported, policy) = load(&yaml);
    assert_eq!(rule_of(&decide(&policy, "quay.io/team/app:v1", "")), Some("in-list.r"));
    assert_eq!(
        policy.no_match(),
        NoMatch::Deny,
        "a policy-controller document was read"
    );
    let found = dropped(&imported);
    assert!(
        has(
            &found,
            &["document 2 (ImageVerificationPolicy/old-ivpol):", "not imported"]
        ),
        "{found:#?}"
    );
    assert!(
        has(&found, &["document 4 (ClusterImagePolicy/future):", "not imported"]),
        "{found:#?}"
    );
}

/// A7 (p23): Kyverno adds the legacy `key` as a further attestor set, required as well.
#[test]
fn a_legacy_key_next_to_attestors_is_a_second_requirement() {
    let yaml = format!(
        "apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: p
spec:
  validationFailureAction: Enforce
  rules:
    - name: r
      match:
        any:
          - resources:
              kinds: [Pod]
      verifyImages:
        - imageReferences: [\"ghcr.io/org/*\"]
          key: |-
{}          attestors:
            - entries:
                - keyless:
                    issuer: https://token.actions.githubusercontent.com
                    subject: https://github.com/org/release/.github/workflows/release.yml@refs/heads/main
",
        indent(PEM, 12)
    );
    let (imported, policy) = load(&yaml);
    assert_eq!(
        decide(&policy, "ghcr.io/org/app:v1", ""),
        (Some("p.r".into()), Action::Deny, Mode::Enforce)
    );
    assert!(has(&dropped(&imported), &["verifyImages[0].key:", "the rule denies"]));
}

/// A8 (p13): under `applyRules: One` a skipped image is not one the rule applied to, so the
/// next rule still checks it.
#[test]
fn apply_rules_one_lets_the_next_rule_check_a_skipped_image() {
    let entry = |images: &str, skip: &str| {
        format!(
            "        - imageReferences: [{images}]
{skip}          attestors:
            - entries:
                - keys:
                    publicKeys: |-
{}",
            indent(PEM, 22)
        )
    };
    let yaml = format!(
        "apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: p13
spec:
  validationFailureAction: Enforce
  applyRules: One
  rules:
    - name: first
      match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}
      verifyImages:
{}    - name: second
      match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}
      verifyImages:
{}",
        entry(
            "\"ghcr.io/org/*\"",
            "          skipImageReferences: [\"ghcr.io/org/tools:*\"]\n"
        ),
        entry("\"ghcr.io/*\"", "")
    );
    let (_, policy) = load(&yaml);
    assert_eq!(
        decide(&policy, "ghcr.io/org/tools:v1", ""),
        (Some("p13.second".into()), Action::Verify, Mode::Enforce)
    );
}

/// A9 (p16, p21, p9): an entry's failure action is never weaker than one Kyverno may apply.
#[test]
fn failure_actions_and_overrides_are_never_read_weaker() {
    // p16: another entry enforces.
    let second = "        - imageReferences: [\"ghcr.io/other/*\"]\n          failureAction: Enforce\n          attestors: [{entries: [{keyless: {issuer: \"https://accounts.google.com\", subject: \"a@b.c\"}}]}]\n";
    let yaml = kyverno_key("\"ghcr.io/org/*\"", "")
        .replace("validationFailureAction: Enforce", "validationFailureAction: Audit")
        + second;
    let (imported, policy) = load(&yaml);
    assert_eq!(decide(&policy, "ghcr.io/org/app:v1", "").2, Mode::Enforce);
    assert!(
        has(&dropped(&imported), &["verifyImages[0]:", "Enforce"]),
        "{:#?}",
        lines(&imported)
    );

    // p21: an override without namespaces applies in every namespace.
    let yaml = kyverno_key("\"ghcr.io/org/*\"", "").replace(
        "  validationFailureAction: Enforce\n",
        "  validationFailureAction: Audit\n  validationFailureActionOverrides:\n    - action: Enforce\n",
    );
    let (_, policy) = load(&yaml);
    assert_eq!(decide(&policy, "ghcr.io/org/app:v1", "default").2, Mode::Enforce);
    assert_eq!(decide(&policy, "ghcr.io/org/app:v1", "prod").2, Mode::Enforce);

    // p9: an override to a weaker mode reads its namespaces as exclusions are read.
    let yaml = kyverno_key("\"ghcr.io/org/*\"", "").replace(
        "  validationFailureAction: Enforce\n",
        "  validationFailureAction: Enforce\n  validationFailureActionOverrides:\n    - action: Audit\n      namespaces: [\"dev?\", staging]\n",
    );
    let (imported, policy) = load(&yaml);
    assert_eq!(decide(&policy, "ghcr.io/org/app:v1", "devops").2, Mode::Enforce);
    assert_eq!(decide(&policy, "ghcr.io/org/app:v1", "dev1").2, Mode::Enforce);
    assert_eq!(decide(&policy, "ghcr.io/org/app:v1", "staging").2, Mode::Audit);
    assert!(has(
        &dropped(&imported),
        &["validationFailureActionOverrides[0].namespaces[0]:", "\"dev?\""]
    ));
}

/// A10 (p14): an empty `any` never holds, and Kyverno's negated membership compares text.
#[test]
fn conditions_that_kyverno_reads_as_text_or_never_true_are_not_weaker() {
    let attestation = |conditions: &str| {
        kyverno_key("\"ghcr.io/org/*\"", "").replace(
            "          attestors:",
            &format!(
                "          attestations:\n            - predicateType: https://example.com/scan/v1\n              conditions:\n{conditions}          attestors:"
            ),
        )
    };
    let (_, policy) = load(&attestation(
        "                - all:\n                    - key: \"{{ severity }}\"\n                      operator: Equals\n                      value: 1\n                - any: []\n",
    ));
    assert_eq!(
        decide(&policy, "ghcr.io/org/app:v1", ""),
        (Some("p.r".into()), Action::Deny, Mode::Enforce)
    );

    let (imported, policy) = load(&attestation(
        "                - all:\n                    - key: \"{{ severity }}\"\n                      operator: AllNotIn\n                      value: [9, 10]\n                    - key: \"{{ build }}\"\n                      operator: Equals\n                      value: \"1*\"\n",
    ));
    assert!(!imported.dropped_anything(), "{:#?}", lines(&imported));
    let conditions = &policy.rules()[0].attestations()[0].conditions;
    let holds = |predicate| evaluate_conditions(conditions, &statement(predicate)).is_ok();
    assert!(holds(json!({"severity": 3, "build": "1.2.3"})));
    assert!(!holds(json!({"severity": 9, "build": "1.2.3"})));
    assert!(!holds(json!({"severity": 9.0, "build": "1.2.3"})));
    assert!(
        !holds(json!({"severity": "9", "build": "1.2.3"})),
        "Kyverno compares \"9\" and 9 as text"
    );
    assert!(
        !holds(json!({"severity": "*", "build": "1.2.3"})),
        "a wildcard key matches in Kyverno"
    );
    assert!(
        !holds(json!({"severity": 3, "build": "1500"})),
        "Kyverno compares quantities as quantities"
    );
}

/// A11 (p19): a namespaced Policy that does not say its namespace.
#[test]
fn a_namespaced_policy_without_its_namespace_covers_every_namespace() {
    let yaml = kyverno_key("\"ghcr.io/org/*\"", "").replace("kind: ClusterPolicy", "kind: Policy");
    let (imported, policy) = load(&yaml);
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/app:v1", "team-a")), Some("p.r"));
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/app:v1", "default")), Some("p.r"));
    assert!(has(
        &dropped(&imported),
        &["document 1 (Policy/p): metadata.namespace:", "every namespace"]
    ));
}

/// A12 (p24): Kyverno checks a keyless attestor that also names a key as keyless only.
#[test]
fn an_image_validating_attestor_with_keyless_and_a_key_is_keyless_only() {
    let yaml = format!(
        "apiVersion: policies.kyverno.io/v1beta1
kind: ImageValidatingPolicy
metadata:
  name: p24
spec:
  validationActions: [Deny]
  matchImageReferences:
    - glob: \"ghcr.io/org/*\"
  attestors:
    - name: a
      cosign:
        keyless:
          identities:
            - issuer: https://token.actions.githubusercontent.com
              subject: https://github.com/org/release/.github/workflows/release.yml@refs/heads/main
        key:
          data: |
{}  validations:
    - expression: \"images.containers.map(i, verifyImageSignatures(i, [attestors.a])).all(e, e > 0)\"
",
        indent(PEM, 12)
    );
    let (imported, policy) = load(&yaml);
    let authorities = policy.rules()[0].authorities();
    assert_eq!(authorities.len(), 1);
    assert!(matches!(
        authorities[0].kind,
        pullgate::policy::AuthorityKind::Keyless(_)
    ));
    assert!(has(&dropped(&imported), &["spec.attestors[0].cosign.key:", "keyless"]));
}

// --- B: exit 1, but the output was still wider ---

/// B1 (p12, p12b): a signer that trusts its own roots is dropped, never checked against the
/// public ones.
#[test]
fn signers_with_trust_anchors_of_their_own_are_dropped() {
    let yaml = "apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata:
  name: private-pki
spec:
  images:
    - glob: \"ghcr.io/org/**\"
  authorities:
    - keyless:
        url: https://fulcio.internal.example.com
        trustRootRef: internal-root
        identities:
          - issuerRegExp: \".*\"
            subjectRegExp: \".*\"
      ctlog:
        url: https://rekor.internal.example.com
        trustRootRef: internal-root
";
    let (imported, policy) = load(yaml);
    assert_eq!(
        decide(&policy, "ghcr.io/org/app:v1", ""),
        (Some("private-pki".into()), Action::Deny, Mode::Enforce)
    );
    let found = dropped(&imported);
    assert!(
        has(&found, &["spec.authorities[0].keyless.trustRootRef:", "dropped"]),
        "{found:#?}"
    );
    assert!(
        !found
            .iter()
            .any(|f| f.contains("trustRootRef") && f.contains("stricter")),
        "{found:#?}"
    );

    let yaml = "apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: p12b
spec:
  validationFailureAction: Enforce
  rules:
    - name: r
      match: {any: [{resources: {kinds: [Pod]}}]}
      verifyImages:
        - imageReferences: [\"ghcr.io/org/*\"]
          attestors:
            - entries:
                - keyless:
                    issuer: \"*\"
                    subject: \"*\"
                    roots: |-
                      -----BEGIN CERTIFICATE-----
                      MIIB
                      -----END CERTIFICATE-----
";
    let (imported, policy) = load(yaml);
    assert_eq!(
        decide(&policy, "ghcr.io/org/app:v1", ""),
        (Some("p12b.r".into()), Action::Deny, Mode::Enforce)
    );
    let found = dropped(&imported);
    assert!(has(&found, &["keyless.roots:", "dropped"]), "{found:#?}");
    assert!(
        !found.iter().any(|f| f.contains("roots") && f.contains("stricter")),
        "{found:#?}"
    );
}

/// B2 (p20, p17): an allow rule that loses what narrows it is dropped, and a weaker rule that
/// covers more than its source never shadows a stricter one.
#[test]
fn narrowings_the_node_cannot_see_never_widen_an_allow_or_a_weaker_rule() {
    let yaml = "apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata:
  name: trusted-only-for-labelled
spec:
  images:
    - glob: \"ghcr.io/org/**\"
  match:
    - resource: pods
      version: v1
      selector:
        matchLabels: {exempt: \"true\"}
  authorities:
    - static:
        action: pass
";
    let (imported, policy) = load(yaml);
    assert_eq!(
        decide(&policy, "ghcr.io/org/app:v1", ""),
        (None, Action::Deny, Mode::Enforce)
    );
    let found = dropped(&imported);
    assert!(has(&found, &["spec.match:", "not imported"]), "{found:#?}");
    assert!(
        !found.iter().any(|f| f.contains("spec.match") && f.contains("stricter")),
        "{found:#?}"
    );

    let audit_first = kyverno_key("\"ghcr.io/*\"", "          failureAction: Audit\n")
        .replace(
            "kinds: [Pod]\n",
            "kinds: [Pod]\n              selector:\n                matchLabels: {tier: debug}\n",
        )
        .replace(
            "  validationFailureAction: Enforce\n",
            "  validationFailureAction: Enforce\n  applyRules: One\n",
        )
        .replace("    - name: r\n", "    - name: debug\n");
    let everything = kyverno_key("\"ghcr.io/*\"", "");
    let everything = &everything[everything.find("    - name: r\n").unwrap_or(0)..];
    let (_, policy) = load(&format!("{audit_first}{everything}"));
    assert_eq!(
        decide(&policy, "ghcr.io/x/app:v1", "default"),
        (Some("p.r".into()), Action::Verify, Mode::Enforce)
    );
}

/// B3 (p8): an override to a stricter mode holds wherever it meets the rule's namespaces.
#[test]
fn a_stricter_override_is_kept_where_it_meets_the_rule_namespaces() {
    let yaml = kyverno_key("\"ghcr.io/org/*\"", "")
        .replace(
            "  validationFailureAction: Enforce\n",
            "  validationFailureAction: Audit\n  validationFailureActionOverrides:\n    - action: Enforce\n      namespaces: [prod]\n",
        )
        .replace("              kinds: [Pod]\n", "              kinds: [Pod]\n              namespaces: [prod, dev]\n");
    let (_, policy) = load(&yaml);
    assert_eq!(decide(&policy, "ghcr.io/org/app:v1", "prod").2, Mode::Enforce);
    assert_eq!(decide(&policy, "ghcr.io/org/app:v1", "dev").2, Mode::Audit);
    assert_eq!(rule_of(&decide(&policy, "ghcr.io/org/app:v1", "staging")), None);
}

/// B4 (p11): an attestation that cannot be checked keeps its authority from ever passing.
#[test]
fn a_policy_controller_attestation_that_cannot_be_checked_fails_its_authority() {
    let yaml = cip_key("att", "{glob: \"ghcr.io/org/**\"}")
        + "      attestations:\n        - name: must-have-vuln\n          predicateType: \"vuln scan\"\n";
    let (imported, policy) = load(&yaml);
    assert_eq!(
        decide(&policy, "ghcr.io/org/app:v1", ""),
        (Some("att".into()), Action::Deny, Mode::Enforce)
    );
    assert!(has(
        &dropped(&imported),
        &["attestations[0].predicateType:", "never passes"]
    ));
}

// --- C: the output is always well-formed ---

/// C (p22): line and paragraph separators neither end a comment nor change a scalar.
#[test]
fn line_and_paragraph_separators_are_escaped() {
    // Escaped in the input, so that the value holds exactly these characters.
    let subject = "https://github.com/org/*\\u2028 mode: warn\\u2029";
    let yaml = format!(
        "apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: p22
spec:
  validationFailureAction: Enforce
  rules:
    - name: r
      match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}
      verifyImages:
        - imageReferences: [\"ghcr.io/org/*\"]
          attestors:
            - entries:
                - keyless:
                    issuer: \"https://token.actions.githubusercontent.com\"
                    subject: \"{subject}\"
"
    );
    let (imported, policy) = load(&yaml);
    assert!(
        !imported.policy.contains(['\u{2028}', '\u{2029}']),
        "{}",
        imported.policy
    );
    assert_eq!(decide(&policy, "ghcr.io/org/app:v1", "").2, Mode::Enforce);
    let pullgate::policy::AuthorityKind::Keyless(keyless) = &policy.rules()[0].authorities()[0].kind else {
        panic!("keyless expected");
    };
    assert!(keyless
        .subject
        .matches("https://github.com/org/x\u{2028} mode: warn\u{2029}"));
    assert!(!keyless.subject.matches("https://github.com/org/x  mode: warn "));
}

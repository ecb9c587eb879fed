use std::{fs, path::Path, time::Duration};

use sigstore_crypto::{KeyAlgorithm, KeyPair, SigningScheme};

use super::{lines::LineIndex, *};
use crate::reference::Reference;

mod notation;
mod roots;

// --- helpers ---

/// A fresh P-256 public key as PEM.
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

/// The 1-based line of the only line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let found: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(found.len(), 1, "{needle:?} should occur on exactly one line");
    found[0]
}

/// The 1-based line of the `n`th (from 0) line of `text` that contains `needle`.
fn nth_line_of(text: &str, needle: &str, n: usize) -> usize {
    let (i, _) = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .nth(n)
        .unwrap_or_else(|| panic!("{needle:?} should occur {} times", n + 1));
    i + 1
}

fn parse(text: &str) -> Result<Policy, PolicyErrors> {
    Policy::from_str(&with_trust(text), Path::new("/etc/pullgate/policy.yaml"))
}

/// A real trusted root (the public-good one the Sigstore crates embed), written once per test
/// process, for policies whose keyless authorities need one.
fn trust_path() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("trusted_root.json");
        fs::write(&path, sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
        path.display().to_string()
    })
}

/// Points the SPEC example's trusted root at [`trust_path`], and gives keyless policies without
/// one a `trustedRoot` on a line of its own at the end, so no error line number moves.
fn with_trust(text: &str) -> String {
    let text = text.replace(SPEC_TRUSTED_ROOT, trust_path());
    if text.contains("keyless:") && !text.contains("trustedRoot") && text.ends_with('\n') {
        return format!("{text}  trustedRoot: {}\n", trust_path());
    }
    text
}

const SPEC_TRUSTED_ROOT: &str = "/etc/pullgate/trust/trusted_root.json";

fn errors(text: &str) -> Vec<PolicyError> {
    match parse(text) {
        Ok(_) => panic!("policy should be invalid:\n{text}"),
        Err(errors) => errors.into_vec(),
    }
}

/// The only error of an invalid policy.
fn only_error(text: &str) -> PolicyError {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors.into_iter().next().unwrap()
}

fn image(reference: &str) -> Reference {
    Reference::parse(reference).unwrap()
}

fn digest() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

/// A policy with the given rules (YAML, indented under `rules:`) after a standard header.
fn with_rules(spec_extra: &str, rules: &str) -> String {
    format!(
        "apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata:\n  name: test\nspec:\n{spec_extra}  rules:\n{rules}"
    )
}

fn allow_rule(name: &str, images: &str) -> String {
    format!("    - name: {name}\n      images: {images}\n      action: allow\n")
}

fn rule_names<'p>(policy: &'p Policy, reference: &str, namespace: &str) -> Option<&'p str> {
    policy.decide(&image(reference), namespace).rule().map(Rule::name)
}

/// The example of SPEC §4, with its placeholder key replaced by `pem`.
fn spec_example(pem: &str) -> String {
    let example = r#"apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: node-default
spec:
  mode: enforce            # enforce | warn | audit   (default enforce)
  noMatch: deny            # deny | allow | warn       (default deny): images no rule matches
  trustedRoot: /etc/pullgate/trust/trusted_root.json   # Sigstore TrustedRoot JSON: Fulcio CAs, Rekor logs,
                                                        # CT logs, TSAs. Needed for keyless; optional for keys.
  rules:
    - name: system
      images: ["registry.k8s.io/**"]
      action: allow                      # verify (default) | allow | deny
    - name: apps
      images: ["registry.example.com/team/**", "127.0.0.1:5000/signed/*"]
      namespaces: ["*"]                  # optional; globs over the pod namespace
      excludeNamespaces: ["kube-system"] # optional
      mode: enforce                      # optional; overrides spec.mode for this rule
      authorities:                       # a valid signature from ANY one authority satisfies the rule
        - name: release-key
          key:
            publicKey: |                 # PEM (ECDSA P-256/P-384, Ed25519, RSA); or path: FILE
PEM_HERE          tlog: optional                 # required | optional | ignore (default optional for keys)
        - name: ci
          keyless:
            issuer: https://token.actions.githubusercontent.com        # or issuerRegExp
            subjectRegExp: '^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/v.*$'  # or subject
            extensions:                                                # optional exact Fulcio claims
              sourceRepositoryURI: https://github.com/org/repo
          tlog: required                 # default required for keyless
      attestations:                      # ALL must hold; each by at least one attestation signed by an authority above
        - name: sbom
          predicateType: https://cyclonedx.org/bom
          maxAge: 2160h                  # optional: signing time no older than this
          conditions:                    # optional CEL expressions over `predicate` and `statement`; all must be true
            - 'size(predicate.components) > 0'
        - name: provenance
          predicateType: https://slsa.dev/provenance/v1
          conditions:
            - 'predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/org/repo"'
"#;
    example.replace("PEM_HERE", &indent(pem, 14))
}

/// A one-rule verify policy whose only authority has the given `key:` body.
fn key_policy(key_body: &str) -> String {
    with_rules(
        "",
        &format!(
            "    - name: signed\n      images: [\"ghcr.io/org/**\"]\n      authorities:\n        - name: release\n          key:\n{key_body}"
        ),
    )
}

// --- schema ---

#[test]
fn spec_example_parses() {
    let pem = public_pem();
    let policy = parse(&spec_example(&pem)).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(policy.name(), "node-default");
    assert_eq!(policy.mode(), Mode::Enforce);
    assert_eq!(policy.no_match(), NoMatch::Deny);
    assert_eq!(policy.trusted_root(), Some(Path::new(trust_path())));
    assert!(policy.trust().is_some());
    assert!(policy.hash().starts_with("sha256:") && policy.hash().len() == 7 + 64);

    let [system, apps] = policy.rules() else {
        panic!("expected two rules, got {:#?}", policy.rules());
    };
    assert_eq!(system.name(), "system");
    assert_eq!(system.action(), Action::Allow);
    assert!(system.authorities().is_empty() && system.attestations().is_empty());
    assert_eq!(system.images()[0].as_str(), "registry.k8s.io/**");
    assert_eq!(system.mode(), None);
    assert!(system.namespaces().is_none());

    assert_eq!(apps.name(), "apps");
    assert_eq!(apps.action(), Action::Verify);
    assert_eq!(apps.mode(), Some(Mode::Enforce));
    assert_eq!(apps.images().len(), 2);
    assert_eq!(apps.namespaces().map(|n| n.len()), Some(1));
    assert_eq!(apps.exclude_namespaces()[0].as_str(), "kube-system");

    let [release, ci] = apps.authorities() else {
        panic!("expected two authorities");
    };
    assert_eq!(release.name, "release-key");
    assert_eq!(release.tlog, Tlog::Optional);
    match &release.kind {
        AuthorityKind::Key(key) => {
            assert_eq!(key.scheme(), SigningScheme::EcdsaP256Sha256);
            // The parsed key is the one written in the policy.
            let der = sigstore_types::DerPublicKey::from_pem(&pem).unwrap();
            let expected = sigstore_crypto::VerificationKey::from_spki(&der).unwrap();
            assert_eq!(key.as_bytes(), expected.as_bytes());
        }
        other => panic!("expected a key, got {other:?}"),
    }
    assert_eq!(ci.name, "ci");
    assert_eq!(ci.tlog, Tlog::Required);
    let AuthorityKind::Keyless(keyless) = &ci.kind else {
        panic!("expected keyless");
    };
    assert_eq!(
        keyless.issuer,
        IdentityMatch::Exact("https://token.actions.githubusercontent.com".into())
    );
    assert_eq!(
        keyless.subject,
        IdentityMatch::RegExp(
            crate::policy::Re2Regex::new(
                r"^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/v.*$"
            )
            .unwrap()
        )
    );
    assert_eq!(
        keyless
            .extensions
            .get(&FulcioClaim::SourceRepositoryUri)
            .map(String::as_str),
        Some("https://github.com/org/repo")
    );
    assert_eq!(keyless.extensions.len(), 1);

    let [sbom, provenance] = apps.attestations() else {
        panic!("expected two attestations");
    };
    assert_eq!(sbom.name, "sbom");
    assert_eq!(sbom.predicate_type, "https://cyclonedx.org/bom");
    assert_eq!(sbom.max_age, Some(Duration::from_secs(2160 * 3600)));
    let texts: Vec<&str> = sbom.conditions.iter().map(Condition::text).collect();
    assert_eq!(texts, ["size(predicate.components) > 0"]);
    assert_eq!(provenance.predicate_type, "https://slsa.dev/provenance/v1");
    assert_eq!(provenance.max_age, None);
    assert_eq!(provenance.conditions.len(), 1);
}

#[test]
fn identity_regexps_read_perl_classes_as_cosign_does() {
    // cosign's Go RE2: `\d` is [0-9], `\s` is [\t\n\f\r ], `\w` is [0-9A-Za-z_].
    let text = "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: re2
spec:
  rules:
    - name: signed
      images: [\"ghcr.io/org/**\"]
      authorities:
        - name: ci
          keyless:
            issuerRegExp: '^https://issuer\\s?$'
            subjectRegExp: '^https://ci\\.example/\\w+/\\d+$'
";
    let policy = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let AuthorityKind::Keyless(keyless) = &policy.rules()[0].authorities()[0].kind else {
        panic!("expected keyless");
    };
    assert!(keyless.subject.matches("https://ci.example/build_1/42"));
    assert!(!keyless.subject.matches("https://ci.example/build_1/\u{0664}\u{0662}"));
    assert!(!keyless.subject.matches("https://ci.example/\u{00e9}t\u{00e9}/42"));
    assert!(keyless.issuer.matches("https://issuer "));
    assert!(!keyless.issuer.matches("https://issuer\u{0b}"));
    // Shown as written, not as rewritten.
    assert_eq!(keyless.subject.as_str(), r"^https://ci\.example/\w+/\d+$");
}

#[test]
fn defaults_are_filled_in() {
    let pem = public_pem();
    let text = format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: minimal
spec:
  rules:
    - name: signed
      images: [\"ghcr.io/org/**\"]
      authorities:
        - name: key
          key:
            publicKey: |
{}        - name: ci
          keyless:
            issuerRegExp: '^https://issuer$'
            subject: someone@example.com
",
        indent(&pem, 14)
    );
    let policy = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.mode(), Mode::Enforce);
    assert_eq!(policy.no_match(), NoMatch::Deny);
    // The keyless authority needs a trusted root, which parse() appends.
    assert_eq!(policy.trusted_root(), Some(Path::new(trust_path())));
    let rule = &policy.rules()[0];
    assert_eq!(rule.action(), Action::Verify);
    assert_eq!(rule.mode(), None);
    assert!(rule.namespaces().is_none() && rule.exclude_namespaces().is_empty());
    assert!(rule.attestations().is_empty());
    assert!(rule.requires_signature());
    let tlogs: Vec<Tlog> = rule.authorities().iter().map(|a| a.tlog).collect();
    assert_eq!(tlogs, [Tlog::Optional, Tlog::Required]);
    let AuthorityKind::Keyless(keyless) = &rule.authorities()[1].kind else {
        panic!("expected keyless");
    };
    assert_eq!(
        keyless.issuer,
        IdentityMatch::RegExp(crate::policy::Re2Regex::new("^https://issuer$").unwrap())
    );
    assert_eq!(keyless.subject, IdentityMatch::Exact("someone@example.com".into()));
    assert!(keyless.extensions.is_empty());

    // A policy may have no rules at all: then noMatch decides everything.
    let empty = "apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: x}\nspec: {noMatch: allow}\n";
    let policy = parse(empty).unwrap_or_else(|e| panic!("{e}"));
    assert!(policy.rules().is_empty());
    assert_eq!(policy.decide(&image("nginx"), "").action(), Action::Allow);
}

#[test]
fn relative_paths_resolve_against_the_policy_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("keys")).unwrap();
    fs::write(dir.path().join("keys/release.pub"), public_pem()).unwrap();
    fs::create_dir(dir.path().join("trust")).unwrap();
    fs::write(
        dir.path().join("trust/root.json"),
        sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
    )
    .unwrap();
    let text = key_policy("            path: keys/release.pub\n")
        .replace("spec:\n", "spec:\n  trustedRoot: trust/root.json\n");
    let file = dir.path().join("policy.yaml");
    fs::write(&file, &text).unwrap();

    let policy = Policy::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.file(), file);
    assert_eq!(
        policy.trusted_root(),
        Some(dir.path().join("trust/root.json").as_path())
    );
    assert!(matches!(policy.rules()[0].authorities()[0].kind, AuthorityKind::Key(_)));
    // The same text from another directory does not find the key.
    let elsewhere = Policy::from_str(&text, Path::new("/nonexistent/policy.yaml"));
    assert!(elsewhere.is_err());
}

#[test]
fn unknown_fields_are_errors_that_name_the_field_and_line() {
    let pem = public_pem();
    let text = spec_example(&pem).replace("          tlog: required ", "          tlogg: required ");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].authorities[1].tlogg");
    assert_eq!(error.line, Some(line_of(&text, "tlogg: required")));
    assert!(error.message.contains("unknown field `tlogg`"), "{}", error.message);
    assert!(!error.message.contains("at line"), "{}", error.message);

    let text = format!("{}extra: 1\n", with_rules("", &allow_rule("a", "[\"ghcr.io/a\"]")));
    let error = only_error(&text);
    assert_eq!(error.field, "extra");
    assert_eq!(error.line, Some(line_of(&text, "extra: 1")));

    let text =
        with_rules("", &allow_rule("a", "[\"ghcr.io/a\"]")).replace("  name: test", "  name: test\n  labels: {}");
    let error = only_error(&text);
    assert_eq!(error.field, "metadata.labels");
    assert_eq!(error.line, Some(line_of(&text, "labels")));
}

#[test]
fn type_errors_carry_field_and_line() {
    let text = with_rules("  mode: strict\n", &allow_rule("a", "[\"ghcr.io/a\"]"));
    let error = only_error(&text);
    assert_eq!(error.field, "spec.mode");
    assert_eq!(error.line, Some(line_of(&text, "mode: strict")));
    assert!(error.message.contains("unknown variant `strict`"), "{}", error.message);

    let text = with_rules("", "    - name: a\n      images: {x: 1}\n      action: allow\n");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].images");
    assert_eq!(error.line, Some(line_of(&text, "images: {x: 1}")));

    let text = with_rules("", "    - images: [\"ghcr.io/a\"]\n      action: allow\n");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].name");
    assert!(error.message.contains("missing field `name`"), "{}", error.message);
    assert_eq!(error.line, Some(line_of(&text, "- images")));
}

#[test]
fn yaml_syntax_errors_carry_the_line() {
    let text = with_rules("", "    - name: a\n      images: [\"ghcr.io/a\"\n      action: allow\n");
    let error = only_error(&text);
    assert!(
        error.line.is_some_and(|line| line >= line_of(&text, "images:")),
        "{error:?}"
    );
    assert!(!error.message.is_empty());
}

#[test]
fn wrong_api_version_and_kind_are_named() {
    let text = with_rules("", &allow_rule("a", "[\"ghcr.io/a\"]"))
        .replace("pullgate.dev/v1alpha1", "pullgate.dev/v1")
        .replace("kind: ImagePolicy", "kind: Policy");
    let errors = errors(&text);
    let fields: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
    assert_eq!(fields, [("apiVersion", Some(1)), ("kind", Some(2))]);
}

// --- keys ---

#[test]
fn bad_inline_key_names_field_and_line() {
    let text = key_policy("            publicKey: |\n              -----BEGIN PUBLIC KEY-----\n              bm90IGEga2V5\n              -----END PUBLIC KEY-----\n");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].authorities[0].key.publicKey");
    assert_eq!(error.line, Some(line_of(&text, "publicKey:")));
    assert!(error.message.starts_with("not a PEM public key: "), "{}", error.message);

    let text = key_policy("            publicKey: hello\n");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].authorities[0].key.publicKey");
    assert!(error.message.starts_with("not a PEM public key"), "{}", error.message);
    assert_eq!(
        error.to_string(),
        format!(
            "/etc/pullgate/policy.yaml:{}: spec.rules[0].authorities[0].key.publicKey: {}",
            line_of(&text, "publicKey:"),
            error.message
        )
    );
}

#[test]
fn private_keys_and_extra_pem_blocks_are_refused() {
    let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n";
    let text = key_policy(&format!("            publicKey: |\n{}", indent(private, 14)));
    let error = only_error(&text);
    assert!(error.message.contains("PRIVATE KEY"), "{}", error.message);
    assert!(!error.message.contains("MC4CAQ"), "the key must not be echoed");

    let two = format!("{}{}", public_pem(), public_pem());
    let text = key_policy(&format!("            publicKey: |\n{}", indent(&two, 14)));
    let error = only_error(&text);
    assert!(error.message.contains("2 PEM blocks"), "{}", error.message);
}

#[test]
fn key_algorithms_cosign_uses_are_accepted() {
    // An Ed25519 SPKI (RFC 8410 test vector public key).
    let ed25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
    let text = key_policy(&format!("            publicKey: |\n{}", indent(ed25519, 14)));
    let policy = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let AuthorityKind::Key(key) = &policy.rules()[0].authorities()[0].kind else {
        panic!("expected a key");
    };
    assert_eq!(key.scheme().key_algorithm(), KeyAlgorithm::Ed25519);
}

#[test]
fn keys_verification_would_refuse_are_refused_at_load() {
    // A P-256 SPKI with a compressed point, which verification does not accept.
    let compressed = "-----BEGIN PUBLIC KEY-----\nMDkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDIgACERERERERERERERERERERERERERERERERERERERERERE=\n-----END PUBLIC KEY-----\n";
    let text = key_policy(&format!("            publicKey: |\n{}", indent(compressed, 14)));
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].authorities[0].key.publicKey");
    assert!(
        error.message.starts_with("not a usable public key"),
        "{}",
        error.message
    );
}

#[test]
fn key_needs_exactly_one_source() {
    let text = key_policy("            publicKey: x\n            path: y.pub\n");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].authorities[0].key");
    assert_eq!(error.line, Some(line_of(&text, "key:")));

    let text = key_policy("            {}\n");
    assert_eq!(only_error(&text).field, "spec.rules[0].authorities[0].key");
}

#[test]
fn missing_key_file_names_field_and_line() {
    let text = key_policy("            path: keys/missing.pub\n");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].authorities[0].key.path");
    assert_eq!(error.line, Some(line_of(&text, "path: keys/missing.pub")));
    assert!(
        error.message.contains("/etc/pullgate/keys/missing.pub"),
        "{}",
        error.message
    );
    assert!(error.message.contains("cannot read"), "{}", error.message);
}

#[test]
fn key_file_must_hold_one_public_key_and_be_small() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    fs::write(dir.path().join("two.pub"), format!("{}{}", public_pem(), public_pem())).unwrap();
    let error = only_error_at(&key_policy("            path: two.pub\n"), &file);
    assert!(error.message.contains("2 PEM blocks"), "{}", error.message);

    fs::write(dir.path().join("big.pub"), vec![b'a'; 64 * 1024 + 1]).unwrap();
    let error = only_error_at(&key_policy("            path: big.pub\n"), &file);
    assert!(error.message.contains("larger than 65536 bytes"), "{}", error.message);
}

fn only_error_at(text: &str, file: &Path) -> PolicyError {
    let errors = Policy::from_str(text, file).unwrap_err().into_vec();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn hash_covers_policy_and_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let key = dir.path().join("release.pub");
    let text = key_policy("            path: release.pub\n");
    fs::write(&file, &text).unwrap();

    fs::write(&key, public_pem()).unwrap();
    let first = Policy::load(&file).unwrap();
    let again = Policy::load(&file).unwrap();
    assert_eq!(first.hash(), again.hash(), "same inputs, same generation");

    fs::write(&key, public_pem()).unwrap();
    let rotated = Policy::load(&file).unwrap();
    assert_ne!(first.hash(), rotated.hash(), "a new key file is a new generation");

    fs::write(&file, format!("{text}# a comment\n")).unwrap();
    let edited = Policy::load(&file).unwrap();
    assert_ne!(rotated.hash(), edited.hash(), "an edited policy is a new generation");
}

// --- semantic checks ---

#[test]
fn duplicate_rule_name_names_the_second_rule() {
    let rules = format!(
        "{}{}{}",
        allow_rule("a", "[\"ghcr.io/a\"]"),
        allow_rule("b", "[\"ghcr.io/b\"]"),
        allow_rule("a", "[\"ghcr.io/c\"]")
    );
    let text = with_rules("", &rules);
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[2].name");
    assert_eq!(error.line, Some(nth_line_of(&text, "- name: a", 1)));
    assert!(error.message.contains("spec.rules[0]"), "{}", error.message);
}

#[test]
fn duplicate_authority_and_attestation_names_are_errors() {
    let pem = public_pem();
    let text = spec_example(&pem)
        .replace("- name: ci", "- name: release-key")
        .replace("- name: provenance", "- name: sbom");
    let errors = errors(&text);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.rules[1].authorities[1].name",
            "spec.rules[1].attestations[1].name"
        ]
    );
    assert_eq!(errors[0].line, Some(nth_line_of(&text, "- name: release-key", 1)));
    assert_eq!(errors[1].line, Some(nth_line_of(&text, "- name: sbom", 1)));
}

#[test]
fn names_are_checked() {
    let text = with_rules("", &allow_rule("\"has space\"", "[\"ghcr.io/a\"]"));
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].name");
    let text = with_rules("", &allow_rule("a", "[\"ghcr.io/a\"]")).replace("name: test", "name: \"\"");
    assert_eq!(only_error(&text).field, "metadata.name");
}

#[test]
fn bad_globs_name_the_item_and_line() {
    let cases = [
        ("nginx", "write docker.io/library/nginx"),
        ("nginx:1.25", "write docker.io/library/nginx:1.25"),
        ("bitnami/*", "write docker.io/bitnami/*"),
        ("docker.io/nginx", "write docker.io/library/nginx"),
        ("ghcr.io/app?", "`?` is not supported"),
        ("ghcr.io/app[12]", "`[` is not supported"),
        ("ghcr.io/{a,b}", "`{` is not supported"),
        ("*", "use `**`"),
        ("ghcr.io", "write ghcr.io/**"),
        ("127.0.0.1:5000", "write 127.0.0.1:5000/**"),
        ("ghcr.io//a", "empty path segment"),
        ("@sha256:ab", "empty path segment"),
        ("ghcr.io/a/***", "`***`"),
        ("ghcr.io/a:", "empty tag"),
        ("ghcr.io/a@", "empty digest"),
        ("ghcr.io/Org/app", "lowercase"),
        ("ghcr.io/a b", "' '"),
    ];
    for (pattern, expected) in cases {
        let rules = format!(
            "    - name: r\n      images:\n        - \"ghcr.io/ok\"\n        - \"{pattern}\"\n      action: allow\n"
        );
        let text = with_rules("", &rules);
        let error = only_error(&text);
        assert_eq!(error.field, "spec.rules[0].images[1]", "{pattern}");
        assert_eq!(
            error.line,
            Some(line_of(&text, &format!("- \"{pattern}\""))),
            "{pattern}"
        );
        assert!(error.message.contains(expected), "{pattern}: {}", error.message);
    }

    for (pattern, expected) in [
        ("kube-**", "use `*`"),
        ("Default", "'D'"),
        ("team-?", "`?`"),
        ("", "empty"),
    ] {
        let rules = format!(
            "    - name: r\n      images: [\"ghcr.io/a\"]\n      namespaces: [\"{pattern}\"]\n      action: allow\n"
        );
        let error = only_error(&with_rules("", &rules));
        assert_eq!(error.field, "spec.rules[0].namespaces[0]", "{pattern}");
        assert!(error.message.contains(expected), "{pattern}: {}", error.message);
    }
}

#[test]
fn rule_shape_follows_its_action() {
    let text = with_rules("", "    - name: r\n      images: [\"ghcr.io/a\"]\n");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].authorities");
    assert_eq!(error.line, Some(line_of(&text, "- name: r")));

    let pem = public_pem();
    let text = spec_example(&pem).replace("      mode: enforce  ", "      action: deny\n      mode: enforce  ");
    let errors = errors(&text);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.rules[1].authorities", "spec.rules[1].attestations"]);
    assert_eq!(errors[0].line, Some(line_of(&text, "authorities:")));

    let text = with_rules("", "    - name: r\n      images: []\n      action: allow\n");
    assert_eq!(only_error(&text).field, "spec.rules[0].images");
    let text = with_rules(
        "",
        "    - name: r\n      images: [\"ghcr.io/a\"]\n      namespaces: []\n      action: allow\n",
    );
    assert_eq!(only_error(&text).field, "spec.rules[0].namespaces");
}

/// A GitHub-attested rule: keyless, its provenance the proof; `extra` goes after `images`.
fn attested_rule(extra: &str, attestations: &str) -> String {
    with_rules(
        "",
        &format!(
            "    - name: github
      images: [\"ghcr.io/org/**\"]
{extra}      authorities:
        - name: ci
          keyless:
            issuer: https://token.actions.githubusercontent.com
            subjectRegExp: '^https://github\\.com/org/'
{attestations}"
        ),
    )
}

const PROVENANCE: &str = "      attestations:
        - name: provenance
          predicateType: https://slsa.dev/provenance/v1
";

#[test]
fn require_signature_false_makes_the_attestations_the_proof() {
    let text = attested_rule("      requireSignature: false\n", PROVENANCE);
    let policy = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let rule = &policy.rules()[0];
    assert!(!rule.requires_signature());
    assert_eq!(rule.attestations()[0].predicate_type, "https://slsa.dev/provenance/v1");

    // Written out as true, it is the default.
    let text = attested_rule("      requireSignature: true\n", PROVENANCE);
    assert!(parse(&text).unwrap().rules()[0].requires_signature());
}

#[test]
fn require_signature_false_without_attestations_is_an_error_at_its_line() {
    for attestations in ["", "      attestations: []\n"] {
        let text = attested_rule("      requireSignature: false\n", attestations);
        let error = only_error(&text);
        assert_eq!(error.field, "spec.rules[0].requireSignature");
        assert_eq!(error.line, Some(line_of(&text, "requireSignature")));
        assert!(
            error.message.contains("needs at least one attestation"),
            "{}",
            error.message
        );
        assert!(
            error.to_string().starts_with(&format!(
                "/etc/pullgate/policy.yaml:{}: spec.rules[0].requireSignature: ",
                line_of(&text, "requireSignature")
            )),
            "{error}"
        );
    }
    // Not a boolean: a type error at its line.
    let text = attested_rule("      requireSignature: sometimes\n", PROVENANCE);
    let error = only_error(&text);
    assert_eq!(error.line, Some(line_of(&text, "requireSignature")), "{error}");
}

#[test]
fn only_verify_rules_take_require_signature() {
    for action in ["allow", "deny"] {
        for value in ["false", "true"] {
            let text = with_rules(
                "",
                &format!("    - name: r\n      images: [\"ghcr.io/a\"]\n      action: {action}\n      requireSignature: {value}\n"),
            );
            let error = only_error(&text);
            assert_eq!(error.field, "spec.rules[0].requireSignature");
            assert_eq!(error.line, Some(line_of(&text, "requireSignature")));
        }
    }
}

#[test]
fn authority_needs_exactly_one_kind_and_identity() {
    let pem = public_pem();
    let example = spec_example(&pem);

    let text = example.replace(
        "          keyless:\n",
        "          key: {path: x.pub}\n          keyless:\n",
    );
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].authorities[1]");
    assert!(
        error.message.contains("exactly one of `key`, `keyless` or `notation`"),
        "{}",
        error.message
    );

    let text = example.replace(
        "            issuer: https://token",
        "            issuerRegExp: x\n            issuer: https://token",
    );
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].authorities[1].keyless.issuer");
    assert_eq!(error.line, Some(line_of(&text, "issuer: https://token")));

    let text = example.replace(
        "            issuer: https://token.actions.githubusercontent.com",
        "            issuer: \"\"",
    );
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].authorities[1].keyless.issuer");
    assert_eq!(error.message, "must not be empty");

    let text = example.replace("            subjectRegExp:", "            sbjectRegExp:");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].authorities[1].keyless.sbjectRegExp");

    let text = example.replace("            subjectRegExp: ", "            subject: ''\n            #");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].authorities[1].keyless.subject");
}

#[test]
fn unknown_fulcio_claims_are_named() {
    let pem = public_pem();
    let text = spec_example(&pem).replace(
        "              sourceRepositoryURI: https://github.com/org/repo",
        "              sourceRepositoryUri: https://github.com/org/repo\n              githubWorkflowRepository: org/repo\n              workflow: x",
    );
    let errors = errors(&text);
    let fields: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
    assert_eq!(
        fields,
        [
            (
                "spec.rules[1].authorities[1].keyless.extensions.sourceRepositoryUri",
                Some(line_of(&text, "sourceRepositoryUri:"))
            ),
            (
                "spec.rules[1].authorities[1].keyless.extensions.workflow",
                Some(line_of(&text, "workflow: x"))
            ),
        ]
    );
    assert!(
        errors[0].message.contains("did you mean sourceRepositoryURI?"),
        "{}",
        errors[0].message
    );
    assert!(errors[1].message.contains("buildSignerURI"), "{}", errors[1].message);
}

#[test]
fn duplicate_keys_are_errors() {
    let pem = public_pem();
    let text = spec_example(&pem).replace(
        "              sourceRepositoryURI: https://github.com/org/repo",
        "              sourceRepositoryURI: https://github.com/org/repo\n              sourceRepositoryURI: https://github.com/org/fork",
    );
    let error = only_error(&text);
    assert_eq!(
        error.field,
        "spec.rules[1].authorities[1].keyless.extensions.sourceRepositoryURI"
    );
    assert!(error.message.contains("duplicate key"), "{}", error.message);
    assert!(error.line.is_some());

    let text = spec_example(&pem).replace(
        "      action: allow ",
        "      action: allow\n      action: deny\n      #",
    );
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].action");
    assert!(error.message.contains("duplicate field"), "{}", error.message);
}

#[test]
fn max_age_must_be_a_positive_duration() {
    let pem = public_pem();
    let text = spec_example(&pem).replace("maxAge: 2160h", "maxAge: 90 days please");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].attestations[0].maxAge");
    assert_eq!(error.line, Some(line_of(&text, "maxAge:")));
    let text = spec_example(&pem).replace("maxAge: 2160h", "maxAge: 0s");
    assert_eq!(only_error(&text).message, "must be longer than zero");
    let text = spec_example(&pem).replace("maxAge: 2160h", "maxAge: 90d");
    let policy = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        policy.rules()[1].attestations()[0].max_age,
        Some(Duration::from_secs(90 * 86400))
    );
}

/// Review finding: a key signature's time shows only that it existed by then, so an old
/// key-signed attestation logged or stamped again would pass maxAge.
#[test]
fn max_age_needs_a_keyless_authority() {
    let pem = public_pem();
    let example = spec_example(&pem);
    let keyless_start = example.find("        - name: ci\n").unwrap();
    let keyless_end = example.find("      attestations:").unwrap();
    let text = format!("{}{}", &example[..keyless_start], &example[keyless_end..]);
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].attestations[0].maxAge");
    assert_eq!(error.line, Some(line_of(&text, "maxAge:")));
    assert!(
        error.message.starts_with(crate::policy::MAX_AGE_NEEDS_KEYLESS),
        "{}",
        error.message
    );
    // With a keyless authority beside the key, the rule loads; key evidence still cannot meet it.
    assert!(parse(&example).is_ok());
}

#[test]
fn conditions_compile_when_the_policy_loads() {
    let pem = public_pem();
    let policy = parse(&spec_example(&pem)).unwrap_or_else(|e| panic!("{e}"));
    let apps = &policy.rules()[1];
    let provenance = &apps.attestations()[1];
    assert_eq!(
        provenance.conditions[0].text(),
        r#"predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/org/repo""#
    );
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"externalParameters": {"workflow": {"repository": "https://github.com/org/repo"}}}},
    });
    assert_eq!(evaluate_conditions(&provenance.conditions, &statement), Ok(()));
    let sbom = &apps.attestations()[0];
    assert_eq!(
        evaluate_conditions(&sbom.conditions, &statement)
            .unwrap_err()
            .to_string(),
        r#"condition "size(predicate.components) > 0" failed: No such key: components"#
    );
}

#[test]
fn condition_errors_name_the_condition_and_its_line() {
    let pem = public_pem();
    let text = spec_example(&pem).replace("'size(predicate.components) > 0'", "'size(predicate.components > 0'");
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].attestations[0].conditions[0]");
    assert_eq!(error.line, Some(line_of(&text, "size(predicate.components > 0")));
    assert_eq!(
        error.message,
        r#""size(predicate.components > 0": does not parse: column 30: Syntax error: missing ')' at '<EOF>'"#
    );
    assert!(error.to_string().starts_with(&format!(
        "/etc/pullgate/policy.yaml:{}: spec.rules[1].attestations[0].conditions[0]: ",
        error.line.unwrap()
    )));

    let text = spec_example(&pem).replace(
        "predicate.buildDefinition.externalParameters",
        "predicate.buildDefinition.externalParameters == workflow || predicate",
    );
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].attestations[1].conditions[0]");
    assert_eq!(error.line, Some(line_of(&text, "== workflow ||")));
    assert!(
        error
            .message
            .ends_with(": unknown variable \"workflow\"; conditions see only predicate and statement"),
        "{}",
        error.message
    );

    // Each bad condition is reported, at its own line.
    let text = spec_example(&pem).replace(
        "            - 'size(predicate.components) > 0'\n",
        "            - 'size(predicate.components) > 0'\n            - 'sise(predicate.components) > 0'\n            - ''\n            - 'predicate.x.matches(predicate.y)'\n",
    );
    let errors = errors(&text);
    let found: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
    assert_eq!(
        found,
        [
            (
                "spec.rules[1].attestations[0].conditions[1]",
                Some(line_of(&text, "sise("))
            ),
            (
                "spec.rules[1].attestations[0].conditions[2]",
                Some(line_of(&text, "- ''"))
            ),
            (
                "spec.rules[1].attestations[0].conditions[3]",
                Some(line_of(&text, "matches("))
            ),
        ]
    );
    assert_eq!(
        errors[0].message,
        r#""sise(predicate.components) > 0": unknown function "sise""#
    );
    assert_eq!(errors[1].message, "must not be empty");
    assert!(errors[2]
        .message
        .ends_with("the pattern of matches() must be a string literal"));
}

#[test]
fn conditions_are_bounded() {
    let pem = public_pem();
    let many: String = (0..MAX_CONDITIONS + 1)
        .map(|i| format!("            - 'predicate.n == {i}'\n"))
        .collect();
    let text = spec_example(&pem).replace("            - 'size(predicate.components) > 0'\n", &many);
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].attestations[0].conditions");
    assert_eq!(error.line, Some(nth_line_of(&text, "conditions:", 0)));
    assert_eq!(error.message, "65 conditions; at most 64 are allowed");

    let long = format!("predicate.name == \"{}\"", "x".repeat(MAX_CONDITION_CHARS));
    let text = spec_example(&pem).replace("'size(predicate.components) > 0'", &format!("'{long}'"));
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[1].attestations[0].conditions[0]");
    let expected = format!(": {} characters long; at most 4096 are allowed", long.chars().count());
    assert!(error.message.ends_with(&expected), "{}", error.message);
    assert!(error.message.len() < 300, "the runaway condition is not quoted in full");
}

#[test]
fn every_semantic_error_is_reported() {
    let rules = "    - name: a
      images: [\"nginx\"]
      action: allow
    - name: a
      images: [\"ghcr.io/a\"]
      authorities:
        - name: k
          key:
            publicKey: nope
        - name: f
          key:
            path: /nonexistent/key.pub
";
    let text = with_rules("", rules);
    let errors = errors(&text);
    let found: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
    assert_eq!(
        found,
        [
            ("spec.rules[0].images[0]", Some(line_of(&text, "[\"nginx\"]"))),
            ("spec.rules[1].name", Some(line_of(&text, "[\"ghcr.io/a\"]") - 1)),
            (
                "spec.rules[1].authorities[0].key.publicKey",
                Some(line_of(&text, "publicKey: nope"))
            ),
            (
                "spec.rules[1].authorities[1].key.path",
                Some(line_of(&text, "path: /nonexistent"))
            ),
        ]
    );
    let shown = parse(&text).unwrap_err().to_string();
    assert_eq!(shown.lines().count(), 4, "{shown}");
    assert!(
        shown.lines().all(|line| line.starts_with("/etc/pullgate/policy.yaml:")),
        "{shown}"
    );
}

#[test]
fn size_limits_are_enforced() {
    let globs: Vec<String> = (0..1001).map(|i| format!("\"ghcr.io/a{i}\"")).collect();
    let text = with_rules("", &allow_rule("r", &format!("[{}]", globs.join(", "))));
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].images");
    assert!(error.message.contains("at most 1000"), "{}", error.message);

    let rules: String = (0..1001)
        .map(|i| allow_rule(&format!("r{i}"), "[\"ghcr.io/a\"]"))
        .collect();
    let error = only_error(&with_rules("", &rules));
    assert_eq!(error.field, "spec.rules");

    let authorities: String = (0..101)
        .map(|i| format!("        - name: a{i}\n          keyless: {{issuer: i, subject: s}}\n"))
        .collect();
    let text = with_rules(
        "",
        &format!("    - name: r\n      images: [\"ghcr.io/a\"]\n      authorities:\n{authorities}"),
    );
    assert_eq!(only_error(&text).field, "spec.rules[0].authorities");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let padding = format!("# {}\n", "x".repeat(1024 * 1024));
    fs::write(
        &file,
        format!("{}{padding}", with_rules("", &allow_rule("a", "[\"ghcr.io/a\"]"))),
    )
    .unwrap();
    let error = Policy::load(&file).unwrap_err().into_vec().remove(0);
    assert!(error.message.contains("larger than 1048576 bytes"), "{}", error.message);
    assert_eq!(error.line, None);
}

#[test]
fn error_display_names_file_line_and_field() {
    let error = PolicyError {
        file: "policy.yaml".into(),
        line: Some(14),
        field: "spec.rules[1].authorities[0].key.publicKey".into(),
        message: "not a PEM public key: x".into(),
    };
    assert_eq!(
        error.to_string(),
        "policy.yaml:14: spec.rules[1].authorities[0].key.publicKey: not a PEM public key: x"
    );
    let whole_file = PolicyError {
        line: None,
        field: String::new(),
        message: "larger than 1 bytes".into(),
        ..error
    };
    assert_eq!(whole_file.to_string(), "policy.yaml: larger than 1 bytes");
}

// --- matching ---

#[test]
fn star_stays_in_a_segment_and_double_star_crosses() {
    let star = ImageGlob::parse("ghcr.io/org/*").unwrap();
    assert!(star.matches(&image("ghcr.io/org/app")));
    assert!(star.matches(&image("ghcr.io/org/app:v1")));
    assert!(!star.matches(&image("ghcr.io/org/team/app")));
    assert!(!star.matches(&image("ghcr.io/other/app")));

    let double = ImageGlob::parse("ghcr.io/org/**").unwrap();
    assert!(double.matches(&image("ghcr.io/org/app")));
    assert!(double.matches(&image("ghcr.io/org/team/app")));
    assert!(!double.matches(&image("ghcr.io/organization/app")));

    let middle = ImageGlob::parse("ghcr.io/*/app").unwrap();
    assert!(middle.matches(&image("ghcr.io/org/app")));
    assert!(!middle.matches(&image("ghcr.io/org/team/app")));
    let deep = ImageGlob::parse("ghcr.io/**/app").unwrap();
    assert!(deep.matches(&image("ghcr.io/org/team/app")));
    assert!(!deep.matches(&image("ghcr.io/org/team/app2")));

    let partial = ImageGlob::parse("ghcr.io/org/app-*").unwrap();
    assert!(partial.matches(&image("ghcr.io/org/app-web")));
    assert!(!partial.matches(&image("ghcr.io/org/app")));

    let any_host = ImageGlob::parse("*/library/nginx").unwrap();
    assert!(any_host.matches(&image("nginx")));
    let sub_host = ImageGlob::parse("*.example.com/**").unwrap();
    assert!(sub_host.matches(&image("registry.example.com/a/b")));
    assert!(!sub_host.matches(&image("example.com/a")));
    let everything = ImageGlob::parse("**").unwrap();
    assert!(everything.matches(&image("localhost:5000/x")));
    let port = ImageGlob::parse("127.0.0.1:5000/signed/*").unwrap();
    assert!(port.matches(&image("127.0.0.1:5000/signed/app:v1")));
    assert!(!port.matches(&image("127.0.0.1:5001/signed/app:v1")));
}

/// SPEC §4: two spellings that reach the same repository meet the same rule, whichever
/// spelling the pattern or the reference is written in.
#[test]
fn host_spellings_meet_the_same_rule() {
    let hub = ImageGlob::parse("docker.io/**").unwrap();
    let evil = ImageGlob::parse("evil.example.com/**").unwrap();
    for reference in [
        "registry-1.docker.io/library/nginx:1",
        "index.docker.io/library/nginx",
        "Docker.IO/bitnami/redis",
        "docker.io:443/library/nginx",
    ] {
        assert!(hub.matches(&image(reference)), "{reference}");
    }
    for reference in [
        "EVIL.example.com/app:v1",
        "evil.example.com:443/app",
        "Evil.Example.Com:0443/team/app",
    ] {
        assert!(evil.matches(&image(reference)), "{reference}");
    }
    assert!(!evil.matches(&image("evil.example.com:5000/app")));

    // Patterns are canonicalized the same way at load.
    for pattern in [
        "Docker.io/**",
        "registry-1.docker.io/**",
        "INDEX.docker.io:443/**",
        "docker.io:443/library/nginx",
    ] {
        let glob = ImageGlob::parse(pattern).unwrap();
        assert!(glob.matches(&image("nginx")), "{pattern}");
        assert!(!glob.matches(&image("ghcr.io/library/nginx")), "{pattern}");
    }
    let upper = ImageGlob::parse("EVIL.Example.com:443/app:v1").unwrap();
    assert!(upper.matches(&image("evil.example.com/app:v1")));
    let wild = ImageGlob::parse("*.Example.COM/**").unwrap();
    assert!(wild.matches(&image("EVIL.example.com:443/app")));
    assert_eq!(upper.as_str(), "EVIL.Example.com:443/app:v1", "shown as written");

    // A deny rule in one spelling stops every spelling before a permissive noMatch.
    let text = with_rules(
        "  noMatch: allow\n",
        &allow_rule("no-evil", "[\"Evil.Example.com:443/**\"]").replace("allow", "deny"),
    );
    let policy = parse(&text).unwrap();
    for reference in [
        "evil.example.com/app",
        "EVIL.EXAMPLE.COM/app",
        "evil.example.com:443/app",
    ] {
        assert_eq!(rule_names(&policy, reference, "ns"), Some("no-evil"), "{reference}");
    }
}

/// `**` in a host would reach into the path: `**.corp.example/**` matched
/// `evil.io/x.corp.example/app`. It is refused, with file and line; `*` stays in the host.
#[test]
fn double_star_in_a_host_is_refused_and_star_stays_in_the_host() {
    for pattern in ["**.corp.example/**", "**/app", "ghcr.io**/app", "a**b.io/x:v1"] {
        let rules = format!(
            "    - name: r\n      images:\n        - \"ghcr.io/ok\"\n        - \"{pattern}\"\n      action: allow\n"
        );
        let text = with_rules("", &rules);
        let error = only_error(&text);
        assert_eq!(error.field, "spec.rules[0].images[1]", "{pattern}");
        assert_eq!(
            error.line,
            Some(line_of(&text, &format!("- \"{pattern}\""))),
            "{pattern}"
        );
        assert!(
            error.message.contains("`**` cannot stand in the registry host"),
            "{pattern}: {}",
            error.message
        );
    }
    assert_eq!(
        ImageGlob::parse("*.example.com:443/**").unwrap_err(),
        GlobError::DefaultPortWithWildcard
    );
    assert!(ImageGlob::parse("**").is_ok(), "every image");
    assert!(ImageGlob::parse("**:v1").is_ok(), "every image tagged v1");

    let star = ImageGlob::parse("*.corp.example/**").unwrap();
    assert!(star.matches(&image("registry.corp.example/app")));
    assert!(star.matches(&image("a.b.corp.example/app")));
    assert!(!star.matches(&image("evil.io/x.corp.example/app")));
    let any_host = ImageGlob::parse("*/app").unwrap();
    assert!(!any_host.matches(&image("evil.io/x/app")));
}

#[test]
fn tagless_pattern_matches_any_tag_and_digest() {
    let glob = ImageGlob::parse("docker.io/library/nginx").unwrap();
    let d = digest();
    for reference in ["nginx", "nginx:1.25", &format!("nginx@{d}"), &format!("nginx:1.25@{d}")] {
        assert!(glob.matches(&image(reference)), "{reference}");
    }
    assert!(!glob.matches(&image("nginx-extra")));
    assert!(!glob.matches(&image("docker.io/library/nginx/sub")));
}

#[test]
fn tagged_and_digest_patterns_match_only_those() {
    let d = digest();
    let tagged = ImageGlob::parse("ghcr.io/org/app:v1").unwrap();
    assert!(tagged.matches(&image("ghcr.io/org/app:v1")));
    // containerd pulls the digest of `app:v1@sha256:…` and ignores the tag, so a tag pattern
    // must not vouch for it: the digest could be anything.
    assert!(!tagged.matches(&image(&format!("ghcr.io/org/app:v1@{d}"))));
    assert!(!tagged.matches(&image("ghcr.io/org/app:v2")));
    assert!(!tagged.matches(&image("ghcr.io/org/app")), "the default tag is latest");
    assert!(
        !tagged.matches(&image(&format!("ghcr.io/org/app@{d}"))),
        "no tag to match"
    );

    let tag_glob = ImageGlob::parse("ghcr.io/org/**:v1.*").unwrap();
    assert!(tag_glob.matches(&image("ghcr.io/org/team/app:v1.2")));
    assert!(!tag_glob.matches(&image("ghcr.io/org/team/app:v2.0")));

    let pinned = ImageGlob::parse(&format!("ghcr.io/org/app@{d}")).unwrap();
    assert!(pinned.matches(&image(&format!("ghcr.io/org/app@{d}"))));
    assert!(pinned.matches(&image(&format!("ghcr.io/org/app:v1@{d}"))));
    assert!(!pinned.matches(&image("ghcr.io/org/app:v1")));
    let other = format!("sha256:{}", "cd".repeat(32));
    assert!(!pinned.matches(&image(&format!("ghcr.io/org/app@{other}"))));
}

#[test]
fn namespace_globs_and_the_empty_namespace() {
    let star = NamespaceGlob::parse("*").unwrap();
    assert!(star.matches("default") && star.matches(""));
    let prefix = NamespaceGlob::parse("team-*").unwrap();
    assert!(prefix.matches("team-a") && prefix.matches("team-"));
    assert!(!prefix.matches("other") && !prefix.matches(""));
    let exact = NamespaceGlob::parse("kube-system").unwrap();
    assert!(exact.matches("kube-system") && !exact.matches("kube-system2"));
}

#[test]
fn first_matching_rule_wins() {
    let rules = format!(
        "{}{}{}",
        allow_rule("specific", "[\"ghcr.io/org/app\"]"),
        allow_rule("org", "[\"ghcr.io/org/**\"]"),
        allow_rule("everything", "[\"**\"]")
    );
    let policy = parse(&with_rules("", &rules)).unwrap();
    assert_eq!(rule_names(&policy, "ghcr.io/org/app:v1", "default"), Some("specific"));
    assert_eq!(rule_names(&policy, "ghcr.io/org/other", "default"), Some("org"));
    assert_eq!(rule_names(&policy, "nginx", "default"), Some("everything"));

    let reversed = format!(
        "{}{}",
        allow_rule("org", "[\"ghcr.io/org/**\"]"),
        allow_rule("specific", "[\"ghcr.io/org/app\"]")
    );
    let policy = parse(&with_rules("", &reversed)).unwrap();
    assert_eq!(rule_names(&policy, "ghcr.io/org/app:v1", "default"), Some("org"));
}

#[test]
fn namespaces_include_and_exclude() {
    let rules = "    - name: teams
      images: [\"ghcr.io/**\"]
      namespaces: [\"team-*\", \"default\"]
      excludeNamespaces: [\"team-legacy\"]
      action: allow
    - name: not-system
      images: [\"ghcr.io/**\"]
      excludeNamespaces: [\"kube-system\"]
      action: deny
    - name: any
      images: [\"ghcr.io/**\"]
      namespaces: [\"*\"]
      action: allow
";
    let policy = parse(&with_rules("", rules)).unwrap();
    let decide = |ns: &str| rule_names(&policy, "ghcr.io/a/b", ns);
    assert_eq!(decide("team-a"), Some("teams"));
    assert_eq!(decide("default"), Some("teams"));
    assert_eq!(decide("team-legacy"), Some("not-system"));
    assert_eq!(decide("kube-system"), Some("any"));
    // A pull without a sandbox: not matched by `team-*` or `default`, but by an absent list.
    assert_eq!(decide(""), Some("not-system"));

    let only_star = "    - name: named
      images: [\"ghcr.io/**\"]
      namespaces: [\"default\"]
      action: deny
    - name: star
      images: [\"ghcr.io/**\"]
      namespaces: [\"*\"]
      excludeNamespaces: [\"default\"]
      action: allow
";
    let policy = parse(&with_rules("", only_star)).unwrap();
    assert_eq!(rule_names(&policy, "ghcr.io/a/b", ""), Some("star"));
}

#[test]
fn no_match_decides_images_no_rule_covers() {
    let rules = allow_rule("ghcr", "[\"ghcr.io/**\"]");
    let decide = |spec: &str| {
        let policy = parse(&with_rules(spec, &rules)).unwrap();
        let decision = policy.decide(&image("quay.io/x/y"), "default");
        assert!(decision.rule().is_none());
        (decision.action(), decision.mode)
    };
    assert_eq!(decide(""), (Action::Deny, Mode::Enforce));
    assert_eq!(decide("  noMatch: deny\n  mode: audit\n"), (Action::Deny, Mode::Audit));
    assert_eq!(decide("  noMatch: allow\n").0, Action::Allow);
    assert_eq!(decide("  noMatch: warn\n"), (Action::Deny, Mode::Warn));

    let policy = parse(&with_rules("  noMatch: warn\n", &rules)).unwrap();
    let matched = policy.decide(&image("ghcr.io/x/y"), "default");
    assert_eq!(matched.rule().map(Rule::name), Some("ghcr"));
    assert_eq!((matched.action(), matched.mode), (Action::Allow, Mode::Enforce));
}

#[test]
fn rule_mode_overrides_policy_mode() {
    let rules = "    - name: quiet
      images: [\"ghcr.io/quiet/**\"]
      mode: audit
      action: deny
    - name: loud
      images: [\"ghcr.io/**\"]
      action: deny
";
    let policy = parse(&with_rules("  mode: warn\n", rules)).unwrap();
    let quiet = policy.decide(&image("ghcr.io/quiet/a"), "default");
    assert_eq!((quiet.action(), quiet.mode), (Action::Deny, Mode::Audit));
    let loud = policy.decide(&image("ghcr.io/loud/a"), "default");
    assert_eq!((loud.action(), loud.mode), (Action::Deny, Mode::Warn));
    assert_eq!(Mode::Audit.to_string(), "audit");
    assert_eq!(Action::Verify.to_string(), "verify");
}

// --- internals ---

#[test]
fn line_index_finds_keys_and_items() {
    let text = "a:\n  b: 1\n  c:\n    - x\n    - d: 2\n      e:\n        f: 3\nlist: [1, 2]\n";
    let index = LineIndex::build(text);
    assert_eq!(index.line("a"), Some(1));
    assert_eq!(index.line("a.b"), Some(2));
    assert_eq!(index.line("a.c"), Some(3));
    assert_eq!(index.line("a.c[0]"), Some(4));
    assert_eq!(index.line("a.c[1]"), Some(5));
    assert_eq!(index.line("a.c[1].d"), Some(5));
    assert_eq!(index.line("a.c[1].e"), Some(6));
    assert_eq!(index.line("a.c[1].e.f"), Some(7));
    assert_eq!(index.line("list[1]"), Some(8));
    // Unknown fields fall back to the nearest parent.
    assert_eq!(index.line("a.c[1].e.missing"), Some(6));
    assert_eq!(index.line("a.c[7]"), Some(3));
    assert_eq!(index.line("nothing"), None);
}

#[test]
fn fulcio_claims_round_trip() {
    for claim in FulcioClaim::ALL {
        assert_eq!(FulcioClaim::from_name(claim.name()), Some(claim));
        assert!(claim.oid().starts_with("1.3.6.1.4.1.57264.1."));
    }
    assert_eq!(FulcioClaim::SourceRepositoryUri.oid(), "1.3.6.1.4.1.57264.1.12");
    assert_eq!(FulcioClaim::from_name("githubWorkflowSha"), None);
    assert_eq!(
        FulcioClaim::from_name_ignoring_case("githubWorkflowSha"),
        Some(FulcioClaim::GithubWorkflowSha)
    );
}

#[test]
fn decisions_in_any_namespace_stop_at_the_first_rule_covering_every_namespace() {
    let rules = "    - name: dev
      images: [\"ghcr.io/**\"]
      namespaces: [\"*\"]
      excludeNamespaces: [\"prod\"]
      mode: warn
      action: deny
    - name: team
      images: [\"ghcr.io/team/**\"]
      namespaces: [\"team-a\"]
      action: allow
    - name: everyone
      images: [\"ghcr.io/**\"]
      action: deny
    - name: never-reached
      images: [\"ghcr.io/**\"]
      action: allow
";
    let policy = parse(&with_rules("", rules)).unwrap();
    let names = |img: &str| -> Vec<Option<&str>> {
        policy
            .decisions_in_any_namespace(&image(img))
            .iter()
            .map(|d| d.rule().map(Rule::name))
            .collect()
    };
    assert_eq!(
        names("ghcr.io/team/app"),
        vec![Some("dev"), Some("team"), Some("everyone")]
    );
    assert_eq!(names("ghcr.io/other/app"), vec![Some("dev"), Some("everyone")]);
    // No rule covers every namespace: noMatch is among the possible decisions.
    assert_eq!(names("quay.io/x/y"), vec![None]);
    let scoped_only = "    - name: scoped
      images: [\"quay.io/**\"]
      namespaces: [\"a\"]
      action: allow
";
    let policy = parse(&with_rules("", scoped_only)).unwrap();
    let decisions = policy.decisions_in_any_namespace(&image("quay.io/x/y"));
    assert_eq!(
        decisions.iter().map(|d| d.rule().map(Rule::name)).collect::<Vec<_>>(),
        vec![Some("scoped"), None]
    );
    assert_eq!(decisions[1].action(), Action::Deny);
}

#[test]
fn keyless_without_a_trusted_root_is_an_error_at_the_authority() {
    let text = with_rules(
        "",
        "    - name: ci
      images: [\"ghcr.io/**\"]
      authorities:
        - name: gh
          keyless:
            issuer: https://token.actions.githubusercontent.com
            subjectRegExp: '^https://github\\.com/org/'
",
    );
    // Not through parse(), which would supply a trusted root.
    let errors = Policy::from_str(&text, Path::new("/etc/pullgate/policy.yaml"))
        .unwrap_err()
        .into_vec();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field, "spec.rules[0].authorities[0].keyless");
    assert!(errors[0].message.contains("trustedRoot"));
}

#[test]
fn broken_trusted_root_and_bad_regexp_are_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.json");
    fs::write(&root, "{\"mediaType\": \"nope\"}").unwrap();
    let text = with_rules(
        &format!("  trustedRoot: {}\n", root.display()),
        "    - name: ci
      images: [\"ghcr.io/**\"]
      authorities:
        - name: gh
          keyless:
            issuer: https://token.actions.githubusercontent.com
            subjectRegExp: '^https://github\\.com/(org'
",
    );
    let errors = Policy::from_str(&text, Path::new("/etc/pullgate/policy.yaml"))
        .unwrap_err()
        .into_vec();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"spec.trustedRoot"), "{errors:#?}");
    assert!(
        fields.contains(&"spec.rules[0].authorities[0].keyless.subjectRegExp"),
        "{errors:#?}"
    );
    let regexp = errors.iter().find(|e| e.field.ends_with("subjectRegExp")).unwrap();
    assert_eq!(regexp.line, Some(line_of(&text, "subjectRegExp")));
}

#[test]
fn deeply_nested_flow_collections_are_refused_before_parsing() {
    let started = std::time::Instant::now();
    let text = format!(
        "apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nspec: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let errors = Policy::from_str(&text, Path::new("deep.yaml")).unwrap_err();
    let error = errors.first();
    assert_eq!(error.line, Some(3));
    assert!(
        error.message.contains("nested deeper than 64 levels"),
        "{}",
        error.message
    );
    // Brackets inside quotes, after a plain scalar's apostrophe, and in comments do not count.
    let quoted = format!(
        "apiVersion: pullgate.dev/v1alpha1\nkind: ImagePolicy\nmetadata:\n  name: \"{}\" # {}\n",
        "[".repeat(100),
        "{".repeat(100)
    );
    let errors = Policy::from_str(&quoted, Path::new("q.yaml")).unwrap_err();
    assert!(errors.iter().all(|e| !e.message.contains("nested deeper")), "{errors}");
    let hidden = format!("spec: [a'b, {}{}]\n", "[".repeat(100), "]".repeat(100));
    let errors = Policy::from_str(&hidden, Path::new("h.yaml")).unwrap_err();
    assert!(errors.first().message.contains("nested deeper"), "{errors}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

// --- signatureRepository ---

/// A verify rule for `ghcr.io/org/**` with `signatureRepository: <repository>` (`None`: the line
/// is left out).
fn signature_repository_policy(repository: Option<&str>) -> String {
    let line = repository.map_or_else(String::new, |r| format!("      signatureRepository: {r}\n"));
    with_rules(
        "",
        &format!(
            "    - name: signed\n      images: [\"ghcr.io/org/**\"]\n{line}      authorities:\n        - name: release\n          key:\n            publicKey: |\n{}",
            indent(&public_pem(), 14)
        ),
    )
}

#[test]
fn signature_repository_is_normalized_as_references_are() {
    for (written, host, path) in [
        ("ghcr.io/org/signatures", "ghcr.io", "org/signatures"),
        ("GHCR.io:443/org/signatures", "ghcr.io", "org/signatures"),
        ("127.0.0.1:5000/sigs/app", "127.0.0.1:5000", "sigs/app"),
        ("org/signatures", "docker.io", "org/signatures"),
        ("signatures", "docker.io", "library/signatures"),
    ] {
        let policy = parse(&signature_repository_policy(Some(written))).unwrap_or_else(|e| panic!("{written}: {e}"));
        let repository = policy.rules()[0].signature_repository().expect("the rule has one");
        assert_eq!((repository.host(), repository.path()), (host, path), "{written}");
        assert_eq!(repository.to_string(), format!("{host}/{path}"));
    }
    let without = parse(&signature_repository_policy(None)).unwrap();
    assert!(without.rules()[0].signature_repository().is_none());
}

#[test]
fn signature_repository_with_a_tag_or_digest_or_bad_name_is_refused_at_its_line() {
    for written in [
        "ghcr.io/org/signatures:v1",
        "127.0.0.1:5000/sigs:latest",
        &format!("ghcr.io/org/signatures@{}", digest()),
        "ghcr.io/Org/Signatures",
        "\"\"",
        "ghcr.io/org/",
    ] {
        let text = signature_repository_policy(Some(written));
        let error = only_error(&text);
        assert_eq!(error.field, "spec.rules[0].signatureRepository", "{written}: {error}");
        assert_eq!(
            error.line,
            Some(line_of(&text, "signatureRepository")),
            "{written}: {error}"
        );
    }
    let tagged = only_error(&signature_repository_policy(Some("ghcr.io/org/signatures:v1")));
    assert!(tagged.message.contains("tag or digest"), "{tagged}");
}

#[test]
fn signature_repository_needs_a_rule_that_verifies() {
    let text = with_rules(
        "",
        "    - name: open\n      images: [\"ghcr.io/**\"]\n      action: allow\n      signatureRepository: ghcr.io/org/signatures\n",
    );
    let error = only_error(&text);
    assert_eq!(error.field, "spec.rules[0].signatureRepository");
    assert_eq!(error.line, Some(line_of(&text, "signatureRepository")));
    assert!(error.message.contains("verifies nothing"), "{error}");
}

//! Ratify's Notation verifier: trust policies as rules with Notation authorities, and what cannot
//! be carried over reported, failing closed.

use super::{decide, dropped, has, indent, lines, load, NOTARY_CA_PEM};
use pullgate::policy::{Action, AuthorityKind, Mode, NoMatch};

/// An inline KeyManagementProvider holding the test CA.
fn provider(name: &str) -> String {
    format!(
        "apiVersion: config.ratify.deislabs.io/v1beta1\nkind: KeyManagementProvider\nmetadata:\n  name: {name}\nspec:\n  type: inline\n  parameters:\n    contentType: certificate\n    value: |\n{}",
        indent(NOTARY_CA_PEM, 6)
    )
}

/// A Notation Verifier whose stores are `ca:ca-certs` (providers `ca`) and `tsa:tsa-certs`
/// (providers `tsa`), with `policies` as its trust policies (indented eight spaces).
fn verifier(ca: &str, tsa: &str, policies: &str) -> String {
    format!(
        "apiVersion: config.ratify.deislabs.io/v1beta1\nkind: Verifier\nmetadata:\n  name: verifier-notation\nspec:\n  name: notation\n  artifactTypes: application/vnd.cncf.notary.signature\n  parameters:\n    verificationCertStores:\n      ca:\n        ca-certs: [{ca}]\n      tsa:\n        tsa-certs: [{tsa}]\n    trustPolicyDoc:\n      version: \"1.0\"\n      trustPolicies:\n{policies}"
    )
}

fn policy(name: &str, scopes: &str, level: &str, stores: &str, identities: &str) -> String {
    format!(
        "        - name: {name}\n          registryScopes: [{scopes}]\n          signatureVerification:\n            level: {level}\n          trustStores: [{stores}]\n          trustedIdentities: [{identities}]\n"
    )
}

const SUBJECT: &str = "\"x509.subject: C=US, ST=WA, O=pullgate.test, CN=release\"";

/// A realistic verifier with inline providers: the exact scope's rule comes before the `*` one
/// (Notation prefers it), each with a Notation authority holding the provider's certificates,
/// the identities as given and the TSA store; images outside every scope are denied.
#[test]
fn ratify_notation_verifier_becomes_notation_rules() {
    let policies = policy(
        "default",
        "\"*\"",
        "strict",
        "\"ca:ca-certs\", \"tsa:tsa-certs\"",
        SUBJECT,
    ) + &policy(
        "app",
        "registry.example.com/team/app",
        "strict",
        "\"ca:ca-certs\"",
        "\"*\"",
    );
    let yaml = format!(
        "{}\n---\n{}\n---\n{}",
        verifier("ratify-ca", "ratify-tsa", &policies),
        provider("ratify-ca"),
        provider("ratify-tsa")
    );
    let (imported, policy) = load(&yaml);
    assert!(!imported.dropped_anything(), "{:?}", dropped(&imported));
    let rules = policy.rules();
    assert_eq!(rules.len(), 2, "{}", imported.policy);
    assert_eq!(
        decide(&policy, "registry.example.com/team/app:v1", "default")
            .0
            .as_deref(),
        Some("verifier-notation-app")
    );
    assert_eq!(
        decide(&policy, "registry.example.com/team/other:v1", "default")
            .0
            .as_deref(),
        Some("verifier-notation-default")
    );
    assert_eq!(policy.no_match(), NoMatch::Deny);
    let [authority] = rules[1].authorities() else {
        panic!("{}", imported.policy);
    };
    let AuthorityKind::Notation(trust) = &authority.kind else {
        panic!("{}", imported.policy);
    };
    assert_eq!(trust.trust_store.len(), 1);
    assert_eq!(trust.tsa_roots.len(), 1);
    assert!(imported.policy.contains("CN=release"), "{}", imported.policy);
    assert!(has(&lines(&imported), &["revocation"]));
}

/// Levels: permissive and audit enforce (stricter, reported), skip allows (noted), override is
/// reported, an unknown level reads as strict.
#[test]
fn ratify_levels_map_to_modes_and_actions() {
    let policies = policy("p", "registry.example.com/a", "permissive", "\"ca:ca-certs\"", "\"*\"")
        + &policy("q", "registry.example.com/b", "audit", "\"ca:ca-certs\"", "\"*\"")
        + &policy("s", "registry.example.com/c", "skip", "", "")
        + "        - name: o\n          registryScopes: [registry.example.com/d]\n          signatureVerification:\n            level: strict\n            override:\n              revocation: log\n          trustStores: [\"ca:ca-certs\"]\n          trustedIdentities: [\"*\"]\n";
    let yaml = format!(
        "{}\n---\n{}",
        verifier("ratify-ca", "ratify-ca", &policies),
        provider("ratify-ca")
    );
    let (imported, policy) = load(&yaml);
    let found = dropped(&imported);
    for image in [
        "registry.example.com/a:1",
        "registry.example.com/b:1",
        "registry.example.com/d:1",
    ] {
        let (_, action, mode) = decide(&policy, image, "default");
        assert_eq!((action, mode), (Action::Verify, Mode::Enforce), "{image}");
    }
    assert_eq!(decide(&policy, "registry.example.com/c:1", "default").1, Action::Allow);
    assert!(has(&found, &["level", "permissive", "stricter"]), "{found:?}");
    assert!(has(&found, &["level", "audit", "stricter"]), "{found:?}");
    assert!(has(&found, &["override"]), "{found:?}");
    assert!(has(&lines(&imported), &["skip: the rule allows"]));
}

/// A store whose certificates are not in the input (Azure Key Vault, or a provider missing) is
/// named for the operator, and the rule denies rather than admit without a trust store.
#[test]
fn ratify_missing_certificates_deny_and_are_reported() {
    let akv = "apiVersion: config.ratify.deislabs.io/v1beta1\nkind: KeyManagementProvider\nmetadata:\n  name: akv\nspec:\n  type: azurekeyvault\n  parameters:\n    vaultURI: https://vault.example\n";
    let yaml = format!(
        "{}\n---\n{akv}",
        verifier(
            "akv",
            "elsewhere",
            &policy("default", "\"*\"", "strict", "\"ca:ca-certs\"", "\"*\"")
        )
    );
    let (imported, policy) = load(&yaml);
    assert_eq!(decide(&policy, "registry.example.com/x:1", "default").1, Action::Deny);
    let found = dropped(&imported);
    assert!(
        has(&found, &["ca:ca-certs", "akv", "azurekeyvault", "supply its PEM"]),
        "{found:?}"
    );
    assert!(has(&found, &["denies every image"]), "{found:?}");
}

/// Scopes that are not one repository are dropped; fields the importer does not know are
/// reported; a verifier that is not Notation is not imported.
#[test]
fn ratify_scopes_and_unknown_fields_are_reported() {
    let policies = policy(
        "p",
        "registry.example.com/team/*, nginx, registry.example.com/ok",
        "strict",
        "\"ca:ca-certs\"",
        "\"*\"",
    )
    .replace("          trustStores", "          surprise: 1\n          trustStores");
    let cosign = "apiVersion: config.ratify.deislabs.io/v1beta1\nkind: Verifier\nmetadata:\n  name: verifier-cosign\nspec:\n  name: cosign\n  artifactTypes: application/vnd.dev.cosign.artifact.sig.v1+json\n";
    let yaml = format!(
        "{}\n---\n{}\n---\n{cosign}",
        verifier("ratify-ca", "ratify-ca", &policies),
        provider("ratify-ca")
    );
    let (imported, policy) = load(&yaml);
    let found = dropped(&imported);
    assert_eq!(policy.rules()[0].images().len(), 1, "{}", imported.policy);
    assert!(
        has(&found, &["registry.example.com/team/*", "not a repository"]),
        "{found:?}"
    );
    assert!(has(&found, &["\"nginx\"", "not a repository"]), "{found:?}");
    assert!(
        has(&found, &["surprise", "not a field the importer knows"]),
        "{found:?}"
    );
    assert!(has(&found, &["verifier \"cosign\" is not Notation"]), "{found:?}");
}

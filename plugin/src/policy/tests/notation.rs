//! Notation authorities in a policy: trust stores read (file or inline PEM) and checked at load,
//! part of the generation, and every mistake reported at its file and line.

use std::fs;

use super::{indent, line_of, public_pem, with_rules};
use crate::policy::{AuthorityKind, Policy, PolicyError};

/// A self-signed CA certificate (P-256, valid until 2126), as a trust store holds one.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
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

const IDENTITY: &str = "x509.subject: C=US, ST=WA, O=pullgate.test, CN=release";

/// A directory for the policy and its trust store files.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        let dir = Self(tempfile::tempdir().unwrap());
        dir.write("ca.pem", CA_PEM);
        dir
    }

    fn write(&self, name: &str, text: &str) {
        fs::write(self.0.path().join(name), text).unwrap();
    }

    fn load(&self, text: &str) -> Result<Policy, Vec<PolicyError>> {
        let path = self.0.path().join("policy.yaml");
        fs::write(&path, text).unwrap();
        Policy::load(&path).map_err(|e| e.into_vec())
    }

    fn only_error(&self, text: &str) -> PolicyError {
        let errors = self.load(text).expect_err("the policy should be invalid");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().unwrap()
    }
}

/// A one-rule policy whose authorities are `authorities` (YAML items under `authorities:`).
fn policy(authorities: &str) -> String {
    with_rules(
        "",
        &format!("    - name: signed\n      images: [\"ghcr.io/org/**\"]\n      authorities:\n{authorities}"),
    )
}

fn notation(name: &str, body: &str) -> String {
    format!("        - name: {name}\n          notation:\n{}", indent(body, 12))
}

#[test]
fn a_notation_authority_reads_its_stores_from_a_file_or_inline() {
    let dir = Dir::new();
    let from_file = policy(&notation(
        "release",
        &format!("certificates: ca.pem\ntrustedIdentities: [\"{IDENTITY}\"]\ntsaCertificates: ca.pem"),
    ));
    let loaded = dir.load(&from_file).unwrap_or_else(|e| panic!("{e:#?}"));
    let AuthorityKind::Notation(trust) = &loaded.rules()[0].authorities()[0].kind else {
        panic!("not a Notation authority");
    };
    assert_eq!((trust.trust_store.len(), trust.tsa_roots.len()), (1, 1));

    let inline = policy(&notation(
        "release",
        &format!("certificates: |\n{}trustedIdentities: [\"*\"]", indent(CA_PEM, 2)),
    ));
    let loaded = dir.load(&inline).unwrap_or_else(|e| panic!("{e:#?}"));
    let AuthorityKind::Notation(trust) = &loaded.rules()[0].authorities()[0].kind else {
        panic!("not a Notation authority");
    };
    assert_eq!(trust.trust_store.len(), 1);
    assert!(trust.tsa_roots.is_empty());
}

#[test]
fn a_changed_trust_store_file_is_a_new_generation() {
    let dir = Dir::new();
    let text = policy(&notation(
        "release",
        &format!("certificates: ca.pem\ntrustedIdentities: [\"{IDENTITY}\"]"),
    ));
    let before = dir.load(&text).unwrap().hash().to_string();
    dir.write("ca.pem", &format!("{CA_PEM}{CA_PEM}"));
    let after = dir.load(&text).unwrap().hash().to_string();
    assert_ne!(before, after);
}

#[test]
fn a_rule_may_mix_key_and_notation_authorities() {
    let dir = Dir::new();
    let key = format!(
        "        - name: release-key\n          key:\n            publicKey: |\n{}",
        indent(&public_pem(), 14)
    );
    let text = policy(&format!(
        "{key}{}",
        notation("release", "certificates: ca.pem\ntrustedIdentities: [\"*\"]")
    ));
    let loaded = dir.load(&text).unwrap_or_else(|e| panic!("{e:#?}"));
    let kinds: Vec<bool> = loaded.rules()[0]
        .authorities()
        .iter()
        .map(|a| a.kind.is_sigstore())
        .collect();
    assert_eq!(kinds, [true, false]);
}

#[test]
fn bad_stores_and_identities_are_errors_at_their_line() {
    let dir = Dir::new();
    dir.write("key.pem", &public_pem());
    dir.write("empty.pem", "# no certificates here\n");
    let cases = [
        ("certificates: key.pem\ntrustedIdentities: [\"*\"]", "certificates: key.pem", "not a CERTIFICATE"),
        ("certificates: empty.pem\ntrustedIdentities: [\"*\"]", "certificates: empty.pem", "holds no PEM certificate"),
        ("certificates: missing.pem\ntrustedIdentities: [\"*\"]", "certificates: missing.pem", "missing.pem"),
        (
            "certificates: |\n  -----BEGIN CERTIFICATE-----\n  AAAA\n  -----END CERTIFICATE-----\ntrustedIdentities: [\"*\"]",
            "certificates: |",
            "not an X.509 certificate",
        ),
        (
            "certificates: ca.pem\ntrustedIdentities: [\"x509.subject: CN=release\"]",
            "trustedIdentities",
            "C, ST or S, and O are required",
        ),
        ("certificates: ca.pem\ntrustedIdentities: []", "trustedIdentities", "is empty"),
        ("certificates: ca.pem", "notation:", "is empty"),
        (
            "certificates: ca.pem\ntrustedIdentities: [\"*\"]\ntsaCertificates: empty.pem",
            "tsaCertificates",
            "holds no PEM certificate",
        ),
    ];
    for (body, line, message) in cases {
        let text = policy(&notation("release", body));
        let error = dir.only_error(&text);
        assert_eq!(error.line, Some(line_of(&text, line)), "{body}: {error}");
        assert!(error.to_string().contains(message), "{body}: {error}");
        assert!(error.to_string().contains("policy.yaml"), "{error}");
    }
}

#[test]
fn a_notation_authority_takes_no_tlog_and_no_second_kind() {
    let dir = Dir::new();
    let text = policy(&format!(
        "{}          tlog: required\n",
        notation("release", "certificates: ca.pem\ntrustedIdentities: [\"*\"]")
    ));
    let error = dir.only_error(&text);
    assert_eq!(error.line, Some(line_of(&text, "tlog: required")));
    assert!(error.to_string().contains("takes no tlog"), "{error}");

    let text = policy(&format!(
        "{}          key:\n            path: key.pem\n",
        notation("release", "certificates: ca.pem\ntrustedIdentities: [\"*\"]")
    ));
    let errors = dir.load(&text).expect_err("two kinds");
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("exactly one of `key`, `keyless` or `notation`")),
        "{errors:#?}"
    );
}

#[test]
fn attestations_need_an_authority_that_can_sign_them() {
    let dir = Dir::new();
    let text = format!(
        "{}      attestations:\n        - name: sbom\n          predicateType: https://cyclonedx.org/bom\n",
        policy(&notation("release", "certificates: ca.pem\ntrustedIdentities: [\"*\"]"))
    );
    let error = dir.only_error(&text);
    assert_eq!(error.line, Some(line_of(&text, "attestations:")));
    assert!(error.to_string().contains("only Notation authorities"), "{error}");
}

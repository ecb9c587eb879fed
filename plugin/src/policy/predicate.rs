//! Predicate types pullgate knows by name: for messages and docs, and for the short names
//! `cosign attest --type` takes, which a policy may write instead of the URI.
//!
//! Any other URI is accepted as written (the seeds' own, such as
//! `https://security.sigstore.dev/attestations/vuln/trivy/v1`); matching is always exact.

/// A predicate type: its URI, what to call it, and cosign's short names for it.
struct Known {
    uri: &'static str,
    name: &'static str,
    cosign: &'static [&'static str],
}

const KNOWN: &[Known] = &[
    Known {
        uri: "https://spdx.dev/Document",
        name: "SPDX SBOM",
        cosign: &["spdx", "spdxjson"],
    },
    Known {
        uri: "https://cyclonedx.org/bom",
        name: "CycloneDX SBOM",
        cosign: &["cyclonedx"],
    },
    Known {
        uri: "https://slsa.dev/provenance/v0.2",
        name: "SLSA provenance v0.2",
        cosign: &["slsaprovenance", "slsaprovenance02"],
    },
    Known {
        uri: "https://slsa.dev/provenance/v1",
        name: "SLSA provenance v1",
        cosign: &["slsaprovenance1"],
    },
    Known {
        uri: "https://cosign.sigstore.dev/attestation/vuln/v1",
        name: "cosign vulnerability scan",
        cosign: &["vuln"],
    },
    Known {
        uri: "https://openvex.dev/ns",
        name: "OpenVEX",
        cosign: &["openvex"],
    },
    Known {
        uri: "https://openvex.dev/ns/v0.2.0",
        name: "OpenVEX v0.2.0",
        cosign: &[],
    },
    Known {
        uri: "https://cosign.sigstore.dev/attestation/v1",
        name: "cosign custom predicate",
        cosign: &["custom"],
    },
    Known {
        uri: "https://in-toto.io/Link/v1",
        name: "in-toto link",
        cosign: &["link"],
    },
];

/// The URI a policy's `predicateType` stands for: cosign's short names are expanded, URIs kept.
/// Anything else is refused, so a typo cannot become a requirement nothing ever meets.
pub fn resolve(text: &str) -> Result<String, String> {
    if let Some(known) = KNOWN.iter().find(|k| k.cosign.contains(&text)) {
        return Ok(known.uri.to_string());
    }
    if text.contains(':') && !text.chars().any(char::is_whitespace) {
        return Ok(text.to_string());
    }
    let names: Vec<&str> = KNOWN.iter().flat_map(|k| k.cosign.iter().copied()).collect();
    Err(format!(
        "{text:?} is neither a URI nor one of cosign's predicate names ({})",
        names.join(", ")
    ))
}

/// `CycloneDX SBOM, https://cyclonedx.org/bom` for a known type, else the URI alone.
pub fn describe(uri: &str) -> String {
    match KNOWN.iter().find(|k| k.uri == uri) {
        Some(known) => format!("{}, {uri}", known.name),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_names_expand_and_uris_stay() {
        assert_eq!(resolve("cyclonedx").unwrap(), "https://cyclonedx.org/bom");
        assert_eq!(resolve("spdxjson").unwrap(), "https://spdx.dev/Document");
        assert_eq!(resolve("slsaprovenance").unwrap(), "https://slsa.dev/provenance/v0.2");
        assert_eq!(resolve("slsaprovenance1").unwrap(), "https://slsa.dev/provenance/v1");
        assert_eq!(
            resolve("vuln").unwrap(),
            "https://cosign.sigstore.dev/attestation/vuln/v1"
        );
        assert_eq!(resolve("openvex").unwrap(), "https://openvex.dev/ns");
        assert_eq!(resolve("custom").unwrap(), "https://cosign.sigstore.dev/attestation/v1");
        let trivy = "https://security.sigstore.dev/attestations/vuln/trivy/v1";
        assert_eq!(resolve(trivy).unwrap(), trivy);
    }

    #[test]
    fn a_typo_is_refused_with_the_names() {
        let err = resolve("cyclondx").unwrap_err();
        assert!(err.contains("\"cyclondx\" is neither a URI"), "{err}");
        assert!(err.contains("cyclonedx"), "{err}");
        assert!(resolve("https://example.com/a b").is_err());
    }

    #[test]
    fn known_types_are_described_by_name() {
        assert_eq!(
            describe("https://cyclonedx.org/bom"),
            "CycloneDX SBOM, https://cyclonedx.org/bom"
        );
        assert_eq!(describe("https://openvex.dev/ns"), "OpenVEX, https://openvex.dev/ns");
        assert_eq!(
            describe("https://example.com/dast/zap/v1"),
            "https://example.com/dast/zap/v1"
        );
    }
}

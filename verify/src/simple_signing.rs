//! The simple-signing payload cosign signs for an image:
//! `{"critical":{"identity":{…},"image":{"docker-manifest-digest":…},"type":…},"optional":…}`.

use serde::Deserialize;

/// `critical.type` of a cosign image signature.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

/// The parts of a signed payload pullgate relies on.
#[derive(Debug, PartialEq, Eq)]
pub struct SignedImage {
    pub manifest_digest: String,
    pub docker_reference: Option<String>,
}

// Exact duplicate keys are refused by serde's derive, case variants by `unambiguous`, so a
// payload cannot say one thing to pullgate and another to cosign.
#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: Image,
    #[serde(default)]
    identity: Option<Identity>,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference", default)]
    docker_reference: Option<String>,
}

/// Parses a payload and checks that it is a cosign image signature.
pub fn parse(payload: &[u8]) -> Result<SignedImage, String> {
    super::unambiguous::check(payload, &super::unambiguous::SIMPLE_SIGNING)
        .map_err(|e| format!("not a simple-signing payload cosign reads alike: {e}"))?;
    let p: Payload = serde_json::from_slice(payload).map_err(|e| format!("not a simple-signing payload: {e}"))?;
    if p.critical.kind != COSIGN_SIGNATURE_TYPE {
        return Err(format!(
            "critical.type is {:?}, not {COSIGN_SIGNATURE_TYPE:?}",
            p.critical.kind
        ));
    }
    Ok(SignedImage {
        manifest_digest: p.critical.image.docker_manifest_digest,
        docker_reference: p.critical.identity.and_then(|i| i.docker_reference),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cosign_payload() {
        let p = br#"{"critical":{"identity":{"docker-reference":"r/a"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#;
        let s = parse(p).unwrap();
        assert_eq!(s.manifest_digest, "sha256:ab");
        assert_eq!(s.docker_reference.as_deref(), Some("r/a"));
    }

    #[test]
    fn refuses_other_types_and_duplicates() {
        let atomic = br#"{"critical":{"identity":{},"image":{"docker-manifest-digest":"sha256:ab"},"type":"atomic container signature"}}"#;
        assert!(parse(atomic).unwrap_err().contains("critical.type"));
        let dup = br#"{"critical":{"image":{"docker-manifest-digest":"sha256:ab","docker-manifest-digest":"sha256:cd"},"type":"cosign container image signature"}}"#;
        assert!(parse(dup).unwrap_err().contains("duplicate"));
        assert!(parse(b"this is not a signature").is_err());
    }

    #[test]
    fn refuses_case_variant_keys_that_cosign_reads_as_the_last() {
        let variants = [
            r#"{"critical":{"image":{"docker-manifest-digest":"sha256:ab","Docker-Manifest-Digest":"sha256:cd"},"type":"cosign container image signature"}}"#,
            r#"{"critical":{"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature","Type":"other"}}"#,
            r#"{"critical":{"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"Critical":{}}"#,
        ];
        for payload in variants {
            assert!(
                parse(payload.as_bytes()).unwrap_err().contains("duplicate key"),
                "{payload}"
            );
        }
    }
}

//! The project's own cosign key signer for tests: an ECDSA P-256 key that signs simple-signing
//! payloads the way `cosign sign --key` does.

use base64::Engine as _;
use serde_json::json;
use sigstore_crypto::KeyPair;
use sigstore_types::DerPublicKey;

use crate::{
    cosign,
    distribution::{Auth, RegistryError},
};

/// The `critical.type` of a cosign image signature payload.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// A fresh signing key; its public half goes into a policy's `key.publicKey`.
#[derive(Debug)]
pub struct Signer {
    key: KeyPair,
}

// === impl Signer ===

impl Signer {
    pub fn generate() -> Signer {
        Signer {
            key: KeyPair::generate_ecdsa_p256().expect("generate an ECDSA P-256 key"),
        }
    }

    pub fn public_key_der(&self) -> DerPublicKey {
        self.key
            .public_key_der()
            .expect("encode the public key as SubjectPublicKeyInfo")
    }

    /// The public key as a `-----BEGIN PUBLIC KEY-----` PEM block.
    pub fn public_key_pem(&self) -> String {
        self.public_key_der().to_pem()
    }

    /// The cosign simple-signing payload that binds `docker_reference` (`host/path`, no tag)
    /// to the manifest `digest`.
    pub fn payload_for(docker_reference: &str, digest: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "critical": {
                "identity": { "docker-reference": docker_reference },
                "image": { "docker-manifest-digest": digest },
                "type": SIGNATURE_TYPE,
            },
            "optional": null,
        }))
        .expect("serialize a simple-signing payload")
    }

    /// An ASN.1 DER ECDSA signature (SHA-256) over `payload`, base64 (standard alphabet).
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature = self.key.sign(payload).expect("sign with the test key");
        base64::engine::general_purpose::STANDARD.encode(signature.as_bytes())
    }

    /// Signs `host/repo@digest` and attaches the signature to its `.sig` image, keeping any
    /// signatures already there. Returns the digest of the new `.sig` manifest.
    pub async fn sign_image(
        &self,
        host: &str,
        repo: &str,
        digest: &str,
        auth: Auth<'_>,
    ) -> Result<String, RegistryError> {
        self.sign_image_into(host, repo, digest, host, repo, auth).await
    }

    /// Signs `host/repo@digest` as `cosign sign` with `COSIGN_REPOSITORY=<into_host>/<into_repo>`
    /// does: the payload names the image's own repository, and the signature goes to the `.sig`
    /// image of that digest in the other repository (`auth` is for that one).
    pub async fn sign_image_into(
        &self,
        host: &str,
        repo: &str,
        digest: &str,
        into_host: &str,
        into_repo: &str,
        auth: Auth<'_>,
    ) -> Result<String, RegistryError> {
        let payload = Self::payload_for(&format!("{host}/{repo}"), digest);
        let signature = self.sign(&payload);
        cosign::attach_signature(into_host, into_repo, digest, &payload, &signature, auth).await
    }
}

//! Public keys written into a policy as PEM, inline or in a file.

use sigstore_crypto::{validate_raw_public_key, KeyAlgorithm, VerificationKey};
use sigstore_types::DerPublicKey;

/// Key files larger than this are refused; a public key is at most a few kilobytes.
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Why PEM text is not a public key pullgate can verify with.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key: no -----BEGIN PUBLIC KEY----- line")]
    NoBlock,
    #[error("not a PEM public key: holds {0} PEM blocks where exactly one PUBLIC KEY is allowed")]
    ManyBlocks(usize),
    #[error("not a PEM public key: the block is a {0}; give the PUBLIC KEY")]
    WrongBlock(String),
    #[error("not a PEM public key: {0}")]
    Malformed(String),
    #[error("unsupported key algorithm {0:?}; use ECDSA P-256 or P-384, Ed25519 or RSA")]
    Algorithm(KeyAlgorithm),
    #[error("not a usable public key: {0}")]
    Invalid(sigstore_crypto::Error),
}

/// Parses exactly one `PUBLIC KEY` PEM block into a key for one of the algorithms cosign signs
/// with.
/// A public key from the policy: its DER form (what Sigstore bundle verification takes) and a
/// verifier for it. Dereferences to the verifier.
pub struct PublicKey {
    der: DerPublicKey,
    key: VerificationKey,
}

impl PublicKey {
    /// Parses one PEM `PUBLIC KEY` block, as a policy's `publicKey` would be.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        parse_pem(pem).map_err(|e| e.to_string())
    }

    pub fn der(&self) -> &DerPublicKey {
        &self.der
    }
}

impl std::ops::Deref for PublicKey {
    type Target = VerificationKey;

    fn deref(&self) -> &VerificationKey {
        &self.key
    }
}

pub fn parse_pem(pem: &str) -> Result<PublicKey, KeyError> {
    let begins: Vec<&str> = pem
        .lines()
        .filter_map(|line| line.trim().strip_prefix("-----BEGIN "))
        .collect();
    let label = match begins.as_slice() {
        [] => return Err(KeyError::NoBlock),
        [one] => one.trim_end_matches('-'),
        many => return Err(KeyError::ManyBlocks(many.len())),
    };
    // Checked before decoding, so that a pasted private key is refused without being decoded
    // or echoed in an error.
    if label != "PUBLIC KEY" {
        return Err(KeyError::WrongBlock(label.to_string()));
    }
    let der = DerPublicKey::from_pem(pem).map_err(|e| KeyError::Malformed(e.to_string()))?;
    let algorithm = KeyAlgorithm::from_spki(&der).map_err(|e| KeyError::Malformed(e.to_string()))?;
    if !matches!(
        algorithm,
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 | KeyAlgorithm::Ed25519 | KeyAlgorithm::Rsa
    ) {
        return Err(KeyError::Algorithm(algorithm));
    }
    let key = VerificationKey::from_spki(&der).map_err(|e| KeyError::Malformed(e.to_string()))?;
    // Refuse at load time what verification would refuse on every pull: compressed EC points,
    // RSA moduli outside 2048..=8192 bits.
    validate_raw_public_key(key.scheme(), key.as_bytes()).map_err(KeyError::Invalid)?;
    Ok(PublicKey { der, key })
}

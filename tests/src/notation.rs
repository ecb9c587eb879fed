//! A Notary Project signer written from the specifications (signature-specification,
//! signature-envelope-jws, signature-envelope-cose): a test CA (root and intermediate) issuing
//! code-signing leaves, and JWS or COSE_Sign1 envelopes over a `targetArtifact` descriptor —
//! including what the notation CLI will not make: expired signatures and certificates, leaves
//! without code signing, unknown critical headers, payloads swapped after signing.
//!
//! Shapes:
//! - JWS: `{payload, protected, header: {x5c, io.cncf.notary.signingAgent,
//!   io.cncf.notary.timestampSignature?}, signature}`, signed over `protected '.' payload`
//!   (base64url without padding); times RFC 3339.
//! - COSE: tag 18 `[<<{1: alg, 2: crit, 3: cty, scheme, time: 1(epoch), expiry?}>>,
//!   {33: [certs], agent, timestampSignature?}, payload, signature]`, signed over
//!   `["Signature1", protected, h'', payload]`.
//! - ECDSA signatures are fixed-size `r || s`; RSA signatures are RSASSA-PSS.

use std::time::Duration;

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{
        EcdsaKeyPair, EcdsaSigningAlgorithm, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
        ECDSA_P384_SHA384_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED_SIGNING, RSA_PSS_SHA256, RSA_PSS_SHA384,
        RSA_PSS_SHA512,
    },
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use minicbor::{data::Tag, Encoder};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    RsaKeySize, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512,
    PKCS_RSA_SHA256,
};
use serde_json::{json, Value};

use crate::sigstore::{b64, rfc3339, unix_now, Tsa, CA_EPOCH};

// What a leaf request is written with, for crates that do not depend on rcgen.
pub use rcgen::{DnType, ExtendedKeyUsagePurpose};

/// The content type of the signed payload.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";

/// The subject the default leaf carries, and the identity that names it.
pub const LEAF_SUBJECT: [(DnType, &str); 5] = [
    (DnType::CountryName, "US"),
    (DnType::StateOrProvinceName, "WA"),
    (DnType::LocalityName, "Seattle"),
    (DnType::OrganizationName, "pullgate.test"),
    (DnType::CommonName, "notation signer"),
];
pub const LEAF_IDENTITY: &str = "x509.subject: C=US, ST=WA, L=Seattle, O=pullgate.test, CN=notation signer";

/// A key type and size of the specification's algorithm table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
    EcP521,
}

/// The envelope format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jws,
    Cose,
}

/// A test CA: a root and an intermediate under it, both of `kind`.
pub struct NotationCa {
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    intermediate: Issuer<'static, KeyPair>,
}

/// What a leaf is issued for.
#[derive(Clone, Debug)]
pub struct LeafRequest {
    pub kind: KeyKind,
    pub subject: Vec<(DnType, String)>,
    pub not_before: i64,
    pub not_after: i64,
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
}

/// A signing key and its chain: leaf, intermediate, root.
pub struct NotationSigner {
    kind: KeyKind,
    key_der: Vec<u8>,
    chain: Vec<Vec<u8>>,
}

/// One signature to make.
#[derive(Clone, Debug)]
pub struct SignRequest {
    /// The `targetArtifact` descriptor.
    pub descriptor: Value,
    /// `notary.x509` or `notary.x509.signingAuthority`.
    pub scheme: String,
    /// The signing time (or authentic signing time) the envelope claims, unix seconds.
    pub signing_time: i64,
    pub expiry: Option<i64>,
    /// A header named critical that no verifier knows.
    pub unknown_critical: Option<String>,
    /// A countersignature from this TSA at this time.
    pub timestamp_at: Option<i64>,
    /// The payload the envelope carries instead of the one signed.
    pub substitute_payload: Option<Vec<u8>>,
}

// === impl KeyKind ===

impl KeyKind {
    fn generate(self) -> KeyPair {
        let rsa = |size| KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, size).expect("generate an RSA key");
        match self {
            Self::Rsa2048 => rsa(RsaKeySize::_2048),
            Self::Rsa3072 => rsa(RsaKeySize::_3072),
            Self::Rsa4096 => rsa(RsaKeySize::_4096),
            Self::EcP256 => KeyPair::generate_for(self.certificate_algorithm()).expect("generate a key"),
            Self::EcP384 => KeyPair::generate_for(self.certificate_algorithm()).expect("generate a key"),
            Self::EcP521 => KeyPair::generate_for(self.certificate_algorithm()).expect("generate a key"),
        }
    }

    fn certificate_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => &PKCS_RSA_SHA256,
            Self::EcP256 => &PKCS_ECDSA_P256_SHA256,
            Self::EcP384 => &PKCS_ECDSA_P384_SHA384,
            Self::EcP521 => &PKCS_ECDSA_P521_SHA512,
        }
    }

    /// The JWS `alg` and COSE `alg` label the specification assigns this key.
    pub fn algorithm(self) -> (&'static str, i64) {
        match self {
            Self::Rsa2048 => ("PS256", -37),
            Self::Rsa3072 => ("PS384", -38),
            Self::Rsa4096 => ("PS512", -39),
            Self::EcP256 => ("ES256", -7),
            Self::EcP384 => ("ES384", -35),
            Self::EcP521 => ("ES512", -36),
        }
    }
}

// === impl NotationCa ===

impl NotationCa {
    /// A root and an intermediate valid from [`CA_EPOCH`] to ten years from now.
    pub fn generate(kind: KeyKind) -> NotationCa {
        let not_after = unix_now() + 10 * 365 * 86_400;
        let root_key = kind.generate();
        let root_params = ca_params("notation test root", not_after);
        let root_der = root_params.self_signed(&root_key).expect("self-sign").der().to_vec();
        let root = Issuer::new(root_params, root_key);
        let intermediate_key = kind.generate();
        let intermediate_params = ca_params("notation test intermediate", not_after);
        let intermediate_der = intermediate_params
            .signed_by(&intermediate_key, &root)
            .expect("sign the intermediate")
            .der()
            .to_vec();
        NotationCa {
            root_der,
            intermediate_der,
            intermediate: Issuer::new(intermediate_params, intermediate_key),
        }
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// A leaf as the request says, with keyUsage digitalSignature (critical), under the
    /// intermediate.
    pub fn issue(&self, request: &LeafRequest) -> NotationSigner {
        let key = request.kind.generate();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for (kind, value) in &request.subject {
            dn.push(kind.clone(), value.as_str());
        }
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = request.extended_key_usages.clone();
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, request.not_before, request.not_after);
        let leaf_der = params
            .signed_by(&key, &self.intermediate)
            .expect("sign the leaf")
            .der()
            .to_vec();
        NotationSigner {
            kind: request.kind,
            key_der: key.serialize_der(),
            chain: vec![leaf_der, self.intermediate_der.clone(), self.root_der.clone()],
        }
    }

    /// A code-signing leaf for [`LEAF_SUBJECT`], valid from a day ago for a year.
    pub fn signer(&self, kind: KeyKind) -> NotationSigner {
        self.issue(&LeafRequest::new(kind))
    }
}

// === impl LeafRequest ===

impl LeafRequest {
    pub fn new(kind: KeyKind) -> LeafRequest {
        let now = unix_now();
        LeafRequest {
            kind,
            subject: LEAF_SUBJECT.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
            not_before: now - 86_400,
            not_after: now + 365 * 86_400,
            extended_key_usages: vec![ExtendedKeyUsagePurpose::CodeSigning],
        }
    }
}

// === impl SignRequest ===

impl SignRequest {
    /// A `notary.x509` signature over `descriptor`, signed now.
    pub fn new(descriptor: Value) -> SignRequest {
        SignRequest {
            descriptor,
            scheme: "notary.x509".into(),
            signing_time: unix_now(),
            expiry: None,
            unknown_critical: None,
            timestamp_at: None,
            substitute_payload: None,
        }
    }

    fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({ "targetArtifact": self.descriptor })).expect("a JSON payload")
    }

    fn time_header(&self) -> &'static str {
        if self.scheme == "notary.x509.signingAuthority" {
            "io.cncf.notary.authenticSigningTime"
        } else {
            "io.cncf.notary.signingTime"
        }
    }

    fn critical(&self) -> Vec<String> {
        let mut critical = vec!["io.cncf.notary.signingScheme".to_string()];
        if self.time_header() == "io.cncf.notary.authenticSigningTime" {
            critical.push(self.time_header().to_string());
        }
        if self.expiry.is_some() {
            critical.push("io.cncf.notary.expiry".into());
        }
        critical.extend(self.unknown_critical.clone());
        critical
    }
}

// === impl NotationSigner ===

impl NotationSigner {
    /// A self-signed code-signing leaf and nothing else, the shape `notation cert
    /// generate-test` makes: no basicConstraints, keyUsage digitalSignature, EKU codeSigning.
    pub fn self_signed(request: &LeafRequest) -> NotationSigner {
        let key = request.kind.generate();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for (kind, value) in &request.subject {
            dn.push(kind.clone(), value.as_str());
        }
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = request.extended_key_usages.clone();
        set_validity(&mut params, request.not_before, request.not_after);
        let der = params.self_signed(&key).expect("self-sign the leaf").der().to_vec();
        NotationSigner {
            kind: request.kind,
            key_der: key.serialize_der(),
            chain: vec![der],
        }
    }

    /// A self-signed code-signing leaf for `request`, and a second leaf for `issued` signed by
    /// the first one's key as if it were a CA (chain: issued, self-signed): what the holder of
    /// a trusted self-signed certificate could mint.
    pub fn self_signed_issuing(request: &LeafRequest, issued: &LeafRequest) -> (NotationSigner, NotationSigner) {
        let key = request.kind.generate();
        let params = leaf_params(request);
        let der = params.self_signed(&key).expect("self-sign the leaf").der().to_vec();
        let key_der = key.serialize_der();
        let issuer = Issuer::new(params, key);
        let minted_key = issued.kind.generate();
        let minted = leaf_params(issued)
            .signed_by(&minted_key, &issuer)
            .expect("sign the minted leaf")
            .der()
            .to_vec();
        (
            NotationSigner {
                kind: request.kind,
                key_der,
                chain: vec![der.clone()],
            },
            NotationSigner {
                kind: issued.kind,
                key_der: minted_key.serialize_der(),
                chain: vec![minted, der],
            },
        )
    }

    /// The certificates of the envelope: leaf, intermediate, root (DER).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Signs `message` as the specification's algorithm for this key does.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        let ecdsa = |algorithm: &'static EcdsaSigningAlgorithm| {
            let key = EcdsaKeyPair::from_pkcs8(algorithm, &self.key_der).expect("load the EC key");
            key.sign(&rng, message).expect("sign").as_ref().to_vec()
        };
        let rsa = |padding| {
            let key = RsaKeyPair::from_pkcs8(&self.key_der).expect("load the RSA key");
            let mut signature = vec![0; key.public_modulus_len()];
            key.sign(padding, &rng, message, &mut signature).expect("sign");
            signature
        };
        match self.kind {
            KeyKind::Rsa2048 => rsa(&RSA_PSS_SHA256),
            KeyKind::Rsa3072 => rsa(&RSA_PSS_SHA384),
            KeyKind::Rsa4096 => rsa(&RSA_PSS_SHA512),
            KeyKind::EcP256 => ecdsa(&ECDSA_P256_SHA256_FIXED_SIGNING),
            KeyKind::EcP384 => ecdsa(&ECDSA_P384_SHA384_FIXED_SIGNING),
            KeyKind::EcP521 => ecdsa(&ECDSA_P521_SHA512_FIXED_SIGNING),
        }
    }

    /// The envelope `request` describes, countersigned by `tsa` when it asks for a timestamp.
    pub fn sign(&self, format: Format, request: &SignRequest, tsa: Option<&Tsa>) -> Vec<u8> {
        match format {
            Format::Jws => self.sign_jws(request, tsa),
            Format::Cose => self.sign_cose(request, tsa),
        }
    }

    fn countersignature(&self, request: &SignRequest, tsa: Option<&Tsa>, signature: &[u8]) -> Option<Vec<u8>> {
        let at = request.timestamp_at?;
        Some(tsa.expect("a TSA for the timestamp").stamp(signature, at, ""))
    }

    fn sign_jws(&self, request: &SignRequest, tsa: Option<&Tsa>) -> Vec<u8> {
        let mut protected = json!({
            "alg": self.kind.algorithm().0,
            "cty": PAYLOAD_MEDIA_TYPE,
            "io.cncf.notary.signingScheme": request.scheme,
            "crit": request.critical(),
        });
        protected[request.time_header()] = json!(rfc3339(request.signing_time));
        if let Some(expiry) = request.expiry {
            protected["io.cncf.notary.expiry"] = json!(rfc3339(expiry));
        }
        if let Some(unknown) = &request.unknown_critical {
            protected[unknown.as_str()] = json!("understood by nobody");
        }
        let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).expect("JSON"));
        let payload = URL_SAFE_NO_PAD.encode(request.payload());
        let signature = self.sign_bytes(format!("{protected}.{payload}").as_bytes());
        let mut header = json!({
            "x5c": self.chain.iter().map(|c| b64(c)).collect::<Vec<_>>(),
            "io.cncf.notary.signingAgent": "pullgate-tests",
        });
        if let Some(token) = self.countersignature(request, tsa, &signature) {
            header["io.cncf.notary.timestampSignature"] = json!(b64(&token));
        }
        let payload = match &request.substitute_payload {
            Some(other) => URL_SAFE_NO_PAD.encode(other),
            None => payload,
        };
        serde_json::to_vec(&json!({
            "payload": payload,
            "protected": protected,
            "header": header,
            "signature": URL_SAFE_NO_PAD.encode(&signature),
        }))
        .expect("JSON")
    }

    fn sign_cose(&self, request: &SignRequest, tsa: Option<&Tsa>) -> Vec<u8> {
        let critical = request.critical();
        let entries = 5 + u64::from(request.expiry.is_some()) + u64::from(request.unknown_critical.is_some());
        let mut e = Encoder::new(Vec::new());
        e.map(entries).unwrap();
        e.i64(1).unwrap().i64(self.kind.algorithm().1).unwrap();
        e.i64(2).unwrap().array(critical.len() as u64).unwrap();
        for c in &critical {
            e.str(c).unwrap();
        }
        e.i64(3).unwrap().str(PAYLOAD_MEDIA_TYPE).unwrap();
        e.str("io.cncf.notary.signingScheme")
            .unwrap()
            .str(&request.scheme)
            .unwrap();
        e.str(request.time_header()).unwrap();
        e.tag(Tag::new(1)).unwrap().i64(request.signing_time).unwrap();
        if let Some(expiry) = request.expiry {
            e.str("io.cncf.notary.expiry").unwrap();
            e.tag(Tag::new(1)).unwrap().i64(expiry).unwrap();
        }
        if let Some(unknown) = &request.unknown_critical {
            e.str(unknown).unwrap().str("understood by nobody").unwrap();
        }
        let protected = e.into_writer();
        let payload = request.payload();

        let mut to_be_signed = Encoder::new(Vec::new());
        to_be_signed.array(4).unwrap();
        to_be_signed.str("Signature1").unwrap();
        to_be_signed
            .bytes(&protected)
            .unwrap()
            .bytes(&[])
            .unwrap()
            .bytes(&payload)
            .unwrap();
        let signature = self.sign_bytes(&to_be_signed.into_writer());
        let token = self.countersignature(request, tsa, &signature);

        let mut e = Encoder::new(Vec::new());
        e.tag(Tag::new(18)).unwrap().array(4).unwrap();
        e.bytes(&protected).unwrap();
        e.map(2 + u64::from(token.is_some())).unwrap();
        e.i64(33).unwrap().array(self.chain.len() as u64).unwrap();
        for c in &self.chain {
            e.bytes(c).unwrap();
        }
        e.str("io.cncf.notary.signingAgent")
            .unwrap()
            .str("pullgate-tests")
            .unwrap();
        if let Some(token) = &token {
            e.str("io.cncf.notary.timestampSignature")
                .unwrap()
                .bytes(token)
                .unwrap();
        }
        e.bytes(request.substitute_payload.as_deref().unwrap_or(&payload))
            .unwrap();
        e.bytes(&signature).unwrap();
        e.into_writer()
    }
}

/// An OCI image manifest descriptor as the payload's `targetArtifact` names it.
pub fn descriptor(digest: &str, size: u64) -> Value {
    json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": size,
    })
}

/// The parameters of a code-signing leaf as `request` asks, keyUsage digitalSignature.
fn leaf_params(request: &LeafRequest) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for (kind, value) in &request.subject {
        dn.push(kind.clone(), value.as_str());
    }
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = request.extended_key_usages.clone();
    set_validity(&mut params, request.not_before, request.not_after);
    params
}

fn ca_params(common_name: &str, not_after: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "pullgate.test");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, CA_EPOCH, not_after);
    params
}

fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) {
    let epoch = date_time_ymd(1970, 1, 1);
    let secs = |t: i64| Duration::from_secs(u64::try_from(t).expect("a time after 1970"));
    params.not_before = epoch + secs(not_before);
    params.not_after = epoch + secs(not_after);
}

/// The media type of a JWS envelope layer, and of a COSE one.
pub const JWS_MEDIA_TYPE: &str = "application/jose+json";
pub const COSE_MEDIA_TYPE: &str = "application/cose";
/// What marks a Notary Project signature manifest: notation 1.3 writes it as the config's
/// media type (no `artifactType`), registries list it as the referrer's `artifactType`.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";

/// Attaches `envelope` (of `media_type`) to `subject` in `host/repo` as notation 1.3 does on a
/// registry without the referrers API: the empty config blob (media type
/// [`SIGNATURE_ARTIFACT_TYPE`]) and the envelope blob, a manifest with `subject`, and its
/// descriptor (with that `artifactType`) added to the referrers tag `sha256-<hex>`. Returns the
/// signature manifest's digest.
pub async fn attach(
    host: &str,
    repo: &str,
    subject: crate::sigstore::attach::Subject<'_>,
    envelope: &[u8],
    media_type: &str,
    auth: crate::distribution::Auth<'_>,
) -> Result<String, crate::distribution::RegistryError> {
    use crate::{
        distribution::{media_type as types, push_blob, put_manifest, sha256_digest},
        sigstore::attach::{read_referrers_tag, referrers_tag, EMPTY_BLOB},
    };
    let config = push_blob(host, repo, EMPTY_BLOB, auth).await?;
    let layer = push_blob(host, repo, envelope, auth).await?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": types::OCI_MANIFEST,
        "config": {"mediaType": SIGNATURE_ARTIFACT_TYPE, "digest": config, "size": EMPTY_BLOB.len()},
        "layers": [{"mediaType": media_type, "digest": layer, "size": envelope.len()}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    }))
    .expect("serialize a signature manifest");
    let digest = sha256_digest(&manifest);
    put_manifest(host, repo, &digest, &manifest, types::OCI_MANIFEST, auth).await?;
    let mut manifests = match read_referrers_tag(host, repo, subject.digest, auth).await? {
        Some(index) => index["manifests"].as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    };
    manifests.push(json!({
        "mediaType": types::OCI_MANIFEST,
        "digest": digest,
        "size": manifest.len(),
        "artifactType": SIGNATURE_ARTIFACT_TYPE,
    }));
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": types::OCI_INDEX, "manifests": manifests}))
        .expect("serialize a referrers index");
    put_manifest(
        host,
        repo,
        &referrers_tag(subject.digest),
        &index,
        types::OCI_INDEX,
        auth,
    )
    .await?;
    Ok(digest)
}

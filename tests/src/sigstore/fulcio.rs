//! A test Fulcio: a root CA (and optionally an intermediate) that issues short-lived code-signing
//! leaves shaped like Fulcio's: ECDSA P-256 key, KeyUsage digitalSignature, EKU codeSigning, the
//! identity as a critical SAN (email, URI or username; [`LeafRequest::sans`] writes others) over an empty subject, the OIDC issuer in both
//! `1.3.6.1.4.1.57264.1.8` (DER UTF8String) and the legacy `.1.1` (raw bytes), any CI claims
//! (`.1.9`–`.1.24`, DER UTF8String), and an embedded SCT from a [`CtLog`].
//!
//! The SCT covers the TBSCertificate *without* the SCT extension (RFC 6962 §3.2 precertificate
//! entry). rcgen cannot emit a precertificate, so a leaf is built twice with the same key, serial
//! and validity: once without the SCT extension (whose TBS the log signs), once with it as the
//! last extension. Taking that extension out of the final TBS gives back exactly the first TBS,
//! which [`FulcioCa::issue`] checks.

use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair as RcgenKeyPair, KeyUsagePurpose, OtherNameValue, PublicKeyData,
    SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use sigstore_crypto::KeyPair;

use super::{ctlog::sct_list_extension, der, pem, unix_now, CtLog, CA_EPOCH};

/// The arc of Fulcio's certificate extensions, `1.3.6.1.4.1.57264.1`.
pub const FULCIO_OID_ARC: [u64; 8] = [1, 3, 6, 1, 4, 1, 57264, 1];
/// `.1.1`: the OIDC issuer, raw bytes (deprecated).
pub const ISSUER_V1: u64 = 1;
/// `.1.7`: the username SAN's otherName type.
pub const USERNAME: u64 = 7;
/// `.1.8`: the OIDC issuer, DER UTF8String.
pub const ISSUER_V2: u64 = 8;
/// `.1.9`: Build Signer URI.
pub const BUILD_SIGNER_URI: u64 = 9;
/// `.1.11`: Runner Environment.
pub const RUNNER_ENVIRONMENT: u64 = 11;
/// `.1.12`: Source Repository URI.
pub const SOURCE_REPOSITORY_URI: u64 = 12;
/// `.1.13`: Source Repository Digest.
pub const SOURCE_REPOSITORY_DIGEST: u64 = 13;
/// `.1.14`: Source Repository Ref.
pub const SOURCE_REPOSITORY_REF: u64 = 14;
/// `.1.18`: Build Config URI.
pub const BUILD_CONFIG_URI: u64 = 18;
/// `.1.20`: Build Trigger.
pub const BUILD_TRIGGER: u64 = 20;
/// `.1.22`: Source Repository Visibility At Signing.
pub const SOURCE_REPOSITORY_VISIBILITY: u64 = 22;

/// RFC 6962's embedded SCT list extension, `1.3.6.1.4.1.11129.2.4.2`.
pub const SCT_LIST_OID: [u64; 10] = [1, 3, 6, 1, 4, 1, 11129, 2, 4, 2];

/// How long Fulcio's certificates live.
pub const LEAF_LIFETIME_SECS: i64 = 600;

/// The identity a leaf's SAN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanKind {
    /// A `uniformResourceIdentifier` (CI workloads: `https://github.com/o/r/.github/workflows/w.yml@refs/…`).
    Uri(String),
    /// An `rfc822Name` (people).
    Email(String),
    /// Fulcio's username: an `otherName` `1.3.6.1.4.1.57264.1.7` holding a UTF8String.
    Username(String),
    /// A `dNSName`, which Fulcio never issues.
    Dns(String),
}

// === impl SanKind ===

impl SanKind {
    pub fn value(&self) -> &str {
        match self {
            SanKind::Uri(v) | SanKind::Email(v) | SanKind::Username(v) | SanKind::Dns(v) => v,
        }
    }
}

/// What a leaf says and when it is valid (unix seconds). [`LeafRequest::new`] gives a Fulcio-like
/// 10-minute window that started a minute ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRequest {
    pub identity: SanKind,
    pub issuer: String,
    /// The SubjectAltName's names, in order: `[identity]` unless [`LeafRequest::sans`] says
    /// otherwise. Empty: no SubjectAltName extension at all.
    pub sans: Vec<SanKind>,
    /// (`N` of `1.3.6.1.4.1.57264.1.N`, value), written as DER UTF8String.
    pub claims: Vec<(u64, String)>,
    pub not_before: i64,
    pub not_after: i64,
}

// === impl LeafRequest ===

impl LeafRequest {
    pub fn new(identity: SanKind, issuer: &str) -> LeafRequest {
        let not_before = unix_now() - 60;
        LeafRequest {
            sans: vec![identity.clone()],
            identity,
            issuer: issuer.to_owned(),
            claims: Vec::new(),
            not_before,
            not_after: not_before + LEAF_LIFETIME_SECS,
        }
    }

    /// Adds the claim `1.3.6.1.4.1.57264.1.<suffix>` = `value`.
    pub fn claim(mut self, suffix: u64, value: &str) -> LeafRequest {
        self.claims.push((suffix, value.to_owned()));
        self
    }

    /// A SubjectAltName of exactly `sans` (none: no extension), where Fulcio writes one name.
    pub fn sans(mut self, sans: Vec<SanKind>) -> LeafRequest {
        self.sans = sans;
        self
    }

    /// Valid from `not_before` to `not_after` (unix seconds) instead.
    pub fn valid(mut self, not_before: i64, not_after: i64) -> LeafRequest {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// A code-signing leaf and its private key, with the chain above it.
#[derive(Debug)]
pub struct Leaf {
    key: KeyPair,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The certificates above the leaf, DER: the intermediate (if any), then the root.
    pub chain_der: Vec<Vec<u8>>,
    pub request: LeafRequest,
}

// === impl Leaf ===

impl Leaf {
    /// `-----BEGIN CERTIFICATE-----` PEM of the leaf, as cosign's certificate annotation holds it.
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    /// The PEM blocks of the chain above the leaf, as cosign's chain annotation holds them.
    pub fn chain_pem(&self) -> String {
        self.chain_der.iter().map(|der| pem("CERTIFICATE", der)).collect()
    }

    /// The leaf's public key, DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key
            .public_key_der()
            .expect("encode the leaf key")
            .as_bytes()
            .to_vec()
    }

    /// An ASN.1 DER ECDSA P-256 / SHA-256 signature over `data` with the leaf's key.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.key.sign(data).expect("sign with the leaf key").as_bytes().to_vec()
    }

    pub fn not_before(&self) -> i64 {
        self.request.not_before
    }

    pub fn not_after(&self) -> i64 {
        self.request.not_after
    }
}

/// One CA certificate and what it signs with.
#[derive(Debug)]
struct Authority {
    issuer: Issuer<'static, RcgenKeyPair>,
    der: Vec<u8>,
    spki: Vec<u8>,
}

/// The test Fulcio's CA: a self-signed root, and an intermediate under it if asked for; leaves
/// are signed by the intermediate when there is one.
#[derive(Debug)]
pub struct FulcioCa {
    root: Authority,
    intermediate: Option<Authority>,
    not_after: i64,
}

// === impl FulcioCa ===

impl FulcioCa {
    /// A new root (and intermediate) valid from [`CA_EPOCH`] to ten years from now.
    pub fn generate(with_intermediate: bool) -> FulcioCa {
        let not_after = unix_now() + 10 * 365 * 86_400;
        let root_key = RcgenKeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate the root key");
        let root_spki = root_key.subject_public_key_info();
        let root_params = ca_params("sigstore", IsCa::Ca(BasicConstraints::Unconstrained), not_after);
        let root_cert = root_params.self_signed(&root_key).expect("self-sign the root");
        let root = Authority {
            issuer: Issuer::new(root_params, root_key),
            der: root_cert.der().to_vec(),
            spki: root_spki,
        };
        let intermediate = with_intermediate.then(|| {
            let key = RcgenKeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate the intermediate key");
            let spki = key.subject_public_key_info();
            let mut params = ca_params(
                "sigstore-intermediate",
                IsCa::Ca(BasicConstraints::Constrained(0)),
                not_after,
            );
            params.use_authority_key_identifier_extension = true;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
            let cert = params.signed_by(&key, &root.issuer).expect("sign the intermediate");
            Authority {
                issuer: Issuer::new(params, key),
                der: cert.der().to_vec(),
                spki,
            }
        });
        FulcioCa {
            root,
            intermediate,
            not_after,
        }
    }

    /// When the root and intermediate certificates expire (unix seconds): the end of the CA's
    /// validity, since its `validFor` in the trusted root has none.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root.der
    }

    /// The intermediate certificate, DER, if there is one.
    pub fn intermediate_der(&self) -> Option<&[u8]> {
        self.intermediate.as_ref().map(|a| a.der.as_slice())
    }

    /// The certificates above a leaf, in chain order: the intermediate (if any), then the root.
    /// The same list is the trusted root's `certChain`.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        self.intermediate
            .iter()
            .chain(std::iter::once(&self.root))
            .map(|a| a.der.clone())
            .collect()
    }

    /// The DER SubjectPublicKeyInfo of the CA that signs leaves (the SCT's issuer key).
    pub fn signing_spki(&self) -> &[u8] {
        &self.signer().spki
    }

    fn signer(&self) -> &Authority {
        self.intermediate.as_ref().unwrap_or(&self.root)
    }

    /// Issues a leaf for `request`, with an SCT from `ctlog` embedded (none without a log).
    pub fn issue(&self, ctlog: Option<&CtLog>, request: &LeafRequest) -> Leaf {
        self.issue_with_sct_list(request, |issuer_spki, precert_tbs, timestamp_ms| {
            ctlog.map(|log| sct_list_extension(&[log.sign_precert(issuer_spki, precert_tbs, timestamp_ms)]))
        })
    }

    /// Issues a leaf for `request` whose SCT list extension holds what `sct_list` returns (the
    /// extension's DER content, see [`sct_list_extension`]) given the signing CA's DER
    /// SubjectPublicKeyInfo, the precertificate TBS and the SCT timestamp (ms); no extension for
    /// `None`. For SCTs that must not verify: from another log, over other bytes, malformed.
    pub fn issue_with_sct_list(
        &self,
        request: &LeafRequest,
        sct_list: impl FnOnce(&[u8], &[u8], u64) -> Option<Vec<u8>>,
    ) -> Leaf {
        let key = RcgenKeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate the leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.serial_number = Some(SerialNumber::from(random_serial()));
        set_validity(&mut params, request.not_before, request.not_after);
        params.subject_alt_names = request.sans.iter().map(san_type).collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions = vec![
            CustomExtension::from_oid_content(&fulcio_oid(ISSUER_V1), request.issuer.as_bytes().to_vec()),
            CustomExtension::from_oid_content(&fulcio_oid(ISSUER_V2), der::utf8_string(&request.issuer)),
        ];
        for (suffix, value) in &request.claims {
            params.custom_extensions.push(CustomExtension::from_oid_content(
                &fulcio_oid(*suffix),
                der::utf8_string(value),
            ));
        }

        let signer = self.signer();
        let mut cert = params.signed_by(&key, &signer.issuer).expect("sign the leaf");
        let precert_tbs = der::tbs_certificate(cert.der()).expect("a TBSCertificate").to_vec();
        let timestamp_ms = u64::try_from(request.not_before).expect("a time after 1970") * 1000;
        if let Some(content) = sct_list(&signer.spki, &precert_tbs, timestamp_ms) {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(&SCT_LIST_OID, content));
            cert = params
                .signed_by(&key, &signer.issuer)
                .expect("sign the leaf with its SCT");
            let final_tbs = der::tbs_certificate(cert.der()).expect("a TBSCertificate");
            assert_eq!(
                strip_extension(final_tbs, &SCT_LIST_OID).as_deref(),
                Some(precert_tbs.as_slice()),
                "the leaf's TBS without its SCT extension is the TBS the SCT signs"
            );
        }

        Leaf {
            key: KeyPair::from_pkcs8_der(&key.serialize_der()).expect("load the leaf key"),
            cert_der: cert.der().to_vec(),
            chain_der: self.chain_der(),
            request: request.clone(),
        }
    }
}

fn san_type(san: &SanKind) -> SanType {
    match san {
        SanKind::Uri(uri) => SanType::URI(uri.as_str().try_into().expect("an IA5 URI")),
        SanKind::Email(email) => SanType::Rfc822Name(email.as_str().try_into().expect("an IA5 email")),
        SanKind::Dns(name) => SanType::DnsName(name.as_str().try_into().expect("an IA5 name")),
        SanKind::Username(name) => SanType::OtherName((fulcio_oid(USERNAME), OtherNameValue::Utf8String(name.clone()))),
    }
}

pub(super) fn ca_params(common_name: &str, is_ca: IsCa, not_after: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "pullgate.test");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = is_ca;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, CA_EPOCH, not_after);
    params
}

/// Sets `params`' validity to [`not_before`, `not_after`] (unix seconds), without naming the
/// `time` crate's type that rcgen uses.
pub(super) fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) {
    let epoch = date_time_ymd(1970, 1, 1);
    let secs = |t: i64| Duration::from_secs(u64::try_from(t).expect("a time after 1970"));
    params.not_before = epoch + secs(not_before);
    params.not_after = epoch + secs(not_after);
}

fn fulcio_oid(suffix: u64) -> Vec<u64> {
    let mut oid = FULCIO_OID_ARC.to_vec();
    oid.push(suffix);
    oid
}

/// 20 random bytes with the top bit clear: a positive serial of at most 20 octets.
pub(super) fn random_serial() -> Vec<u8> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut serial = vec![0u8; 20];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut serial)
        .expect("random bytes");
    serial[0] = (serial[0] & 0x7f) | 0x01;
    serial
}

/// The DER of an OBJECT IDENTIFIER's content (X.690 §8.19).
pub fn oid_content(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |mut arc: u64| {
        let mut bytes = vec![(arc & 0x7f) as u8];
        arc >>= 7;
        while arc > 0 {
            bytes.push(0x80 | (arc & 0x7f) as u8);
            arc >>= 7;
        }
        out.extend(bytes.into_iter().rev());
    };
    push(arcs[0] * 40 + arcs[1]);
    arcs[2..].iter().copied().for_each(push);
    out
}

/// `tbs` (a TBSCertificate, DER) with the extension `oid` taken out; `None` if `tbs` does not
/// parse or has no such extension.
pub fn strip_extension(tbs: &[u8], oid: &[u64]) -> Option<Vec<u8>> {
    let (tbs, _) = der::split_element(tbs)?;
    let oid = der::tlv(0x06, &oid_content(oid));
    let mut found = false;
    let mut fields = Vec::new();
    for field in der::elements(tbs.content)? {
        if field.tag != 0xa3 {
            fields.extend_from_slice(field.whole);
            continue;
        }
        // [3] EXPLICIT Extensions ::= SEQUENCE OF Extension
        let (extensions, _) = der::split_element(field.content)?;
        let mut kept = Vec::new();
        for extension in der::elements(extensions.content)? {
            if extension.content.starts_with(&oid) {
                found = true;
            } else {
                kept.extend_from_slice(extension.whole);
            }
        }
        fields.extend(der::tlv(0xa3, &der::tlv(0x30, &kept)));
    }
    found.then(|| der::tlv(0x30, &fields))
}

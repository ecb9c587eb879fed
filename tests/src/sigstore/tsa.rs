//! A test RFC 3161 timestamp authority: a root and a TSA leaf (timeStamping EKU), and tokens
//! as a TSA answers them, with the genTime chosen by the caller, fractional seconds included.
//! [`Tsa::generate_notary`] makes one as the Notary Project requires (EKU critical), with an
//! RSA key if asked, as public TSAs have.
//!
//! Shapes (RFC 3161 §2.4.2, RFC 5652):
//! - token: `ContentInfo { id-signedData, [0] SignedData }`
//! - `SignedData { 3, {sha256}, { id-ct-TSTInfo, [0] OCTET STRING TSTInfo }, [0] leaf,
//!   { SignerInfo { 1, issuerAndSerial(leaf), sha256, [0] {contentType, messageDigest},
//!   ecdsa-with-SHA256, ECDSA over the DER SET of those attributes } } }`
//! - `TSTInfo { 1, policy, { {sha256}, sha256(signature) }, serial, genTime }`, genTime
//!   `YYYYMMDDHHMMSS[.fff]Z`

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair as RcgenKeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
};
use serde_json::{json, Value};
use sigstore_crypto::KeyPair;

use super::{
    b64, der,
    fulcio::{ca_params, oid_content, random_serial, set_validity},
    rfc3339, sha256, unix_now, CA_EPOCH,
};

const SIGNED_DATA: [u64; 7] = [1, 2, 840, 113549, 1, 7, 2];
const TST_INFO: [u64; 9] = [1, 2, 840, 113549, 1, 9, 16, 1, 4];
const CONTENT_TYPE: [u64; 7] = [1, 2, 840, 113549, 1, 9, 3];
const MESSAGE_DIGEST: [u64; 7] = [1, 2, 840, 113549, 1, 9, 4];
const SHA256: [u64; 9] = [2, 16, 840, 1, 101, 3, 4, 2, 1];
const ECDSA_WITH_SHA256: [u64; 7] = [1, 2, 840, 10045, 4, 3, 2];
const SIGNING_CERTIFICATE_V2: [u64; 9] = [1, 2, 840, 113549, 1, 9, 16, 2, 47];
const SHA256_WITH_RSA: [u64; 7] = [1, 2, 840, 113549, 1, 1, 11];
const EXTENDED_KEY_USAGE: [u64; 4] = [2, 5, 29, 37];
const TIME_STAMPING: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 8];
const POLICY: [u64; 9] = [1, 3, 6, 1, 4, 1, 57264, 2, 1];

/// The test TSA.
#[derive(Debug)]
pub struct Tsa {
    root_der: Vec<u8>,
    leaf_der: Vec<u8>,
    key: TsaKey,
    /// Whether tokens carry the signing-certificate-v2 attribute (RFC 5816) Notation requires.
    signing_certificate: bool,
    /// The leaf's issuer Name and serial INTEGER, DER: how a SignerInfo names its signer.
    issuer_and_serial: Vec<u8>,
}

/// The TSA's signing key: P-256 (ECDSA with SHA-256) or RSA (PKCS #1 v1.5 with SHA-256).
#[derive(Debug)]
enum TsaKey {
    Ec(KeyPair),
    Rsa(Vec<u8>),
}

// === impl Tsa ===

impl Tsa {
    /// A root and a TSA leaf under it, valid from [`CA_EPOCH`] to ten years from now.
    pub fn generate() -> Tsa {
        Self::generate_with(false, false)
    }

    /// A TSA as the Notary Project's certificate requirements want it: the leaf's EKU critical
    /// and time stamping alone; an RSA key when `rsa`.
    pub fn generate_notary(rsa: bool) -> Tsa {
        Self::generate_with(true, rsa)
    }

    /// This TSA, its tokens without the signing-certificate-v2 attribute.
    pub fn without_signing_certificate(mut self) -> Tsa {
        self.signing_certificate = false;
        self
    }

    fn generate_with(critical_eku: bool, rsa: bool) -> Tsa {
        let not_after = unix_now() + 10 * 365 * 86_400;
        let root_key = RcgenKeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate the TSA root key");
        let root_params = ca_params("tsa-root", IsCa::Ca(BasicConstraints::Unconstrained), not_after);
        let root_der = root_params.self_signed(&root_key).expect("self-sign").der().to_vec();
        let root = Issuer::new(root_params, root_key);

        let key = if rsa {
            RcgenKeyPair::generate_for(&PKCS_RSA_SHA256)
        } else {
            RcgenKeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        }
        .expect("generate the TSA key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "pullgate.test");
        dn.push(DnType::CommonName, "tsa");
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from(random_serial()));
        set_validity(&mut params, CA_EPOCH, not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if critical_eku {
            // rcgen writes its EKU non-critical; RFC 3161 §2.3 wants it critical.
            let content = seq(&[&oid(&TIME_STAMPING)]);
            let mut eku = CustomExtension::from_oid_content(&EXTENDED_KEY_USAGE, content);
            eku.set_criticality(true);
            params.custom_extensions = vec![eku];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::TimeStamping];
        }
        params.use_authority_key_identifier_extension = true;
        let leaf_der = params.signed_by(&key, &root).expect("sign the TSA leaf").der().to_vec();

        let tbs = der::tbs_certificate(&leaf_der).expect("a TBSCertificate");
        let (tbs, _) = der::split_element(tbs).expect("a TBSCertificate");
        let fields = der::elements(tbs.content).expect("TBSCertificate fields");
        // version [0], serialNumber, signature, issuer, …
        let issuer_and_serial = [fields[3].whole, fields[1].whole].concat();
        Tsa {
            root_der,
            leaf_der,
            key: if rsa {
                TsaKey::Rsa(key.serialize_der())
            } else {
                TsaKey::Ec(KeyPair::from_pkcs8_der(&key.serialize_der()).expect("load the TSA key"))
            },
            issuer_and_serial,
            signing_certificate: critical_eku,
        }
    }

    /// The TSA's root certificate (DER): what a Notation `tsa` trust store holds.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// A `timestampAuthorities` item of a trusted root naming this TSA (leaf, then root).
    pub fn trusted_root_entry(&self) -> Value {
        json!({
            "subject": { "organization": "pullgate.test", "commonName": "tsa" },
            "uri": "https://tsa.pullgate.test",
            "certChain": { "certificates": [{ "rawBytes": b64(&self.leaf_der) }, { "rawBytes": b64(&self.root_der) }] },
            "validFor": { "start": rfc3339(CA_EPOCH) },
        })
    }

    /// Adds this TSA to the trusted root `root` (a `trusted_root.json` value).
    pub fn trust_in(&self, root: &mut Value) {
        root["timestampAuthorities"]
            .as_array_mut()
            .expect("timestampAuthorities")
            .push(self.trusted_root_entry());
    }

    /// A timestamp token over `signature` at unix second `at`, with `fraction` (decimal digits,
    /// empty for none) after the seconds of its genTime.
    pub fn stamp(&self, signature: &[u8], at: i64, fraction: &str) -> Vec<u8> {
        let seconds: String = rfc3339(at).chars().filter(char::is_ascii_digit).collect();
        let gen_time = if fraction.is_empty() {
            format!("{seconds}Z")
        } else {
            format!("{seconds}.{fraction}Z")
        };
        let tst_info = seq(&[
            &[0x02, 0x01, 0x01],
            &oid(&POLICY),
            &seq(&[&algorithm(&SHA256), &der::octet_string(&sha256(signature))]),
            &der::tlv(0x02, &random_serial()[..8]),
            &der::tlv(0x18, gen_time.as_bytes()),
        ]);
        let mut attributes = [
            seq(&[&oid(&CONTENT_TYPE), &der::tlv(0x31, &oid(&TST_INFO))]),
            seq(&[
                &oid(&MESSAGE_DIGEST),
                &der::tlv(0x31, &der::octet_string(&sha256(&tst_info))),
            ]),
        ]
        .concat();
        if self.signing_certificate {
            // SigningCertificateV2 { certs { ESSCertIDv2 { certHash (SHA-256 by default) } } },
            // last: its encoding sorts after the other two in the DER SET OF.
            let id = seq(&[&der::octet_string(&sha256(&self.leaf_der))]);
            attributes.extend(seq(&[
                &oid(&SIGNING_CERTIFICATE_V2),
                &der::tlv(0x31, &seq(&[&seq(&[&id])])),
            ]));
        }
        let signature = self.key.sign(&der::tlv(0x31, &attributes));
        let signer_info = seq(&[
            &[0x02, 0x01, 0x01],
            &der::tlv(0x30, &self.issuer_and_serial),
            &algorithm(&SHA256),
            &der::tlv(0xa0, &attributes),
            &self.key.algorithm(),
            &der::octet_string(&signature),
        ]);
        let signed_data = seq(&[
            &[0x02, 0x01, 0x03],
            &der::tlv(0x31, &algorithm(&SHA256)),
            &seq(&[&oid(&TST_INFO), &der::tlv(0xa0, &der::octet_string(&tst_info))]),
            &der::tlv(0xa0, &self.leaf_der),
            &der::tlv(0x31, &signer_info),
        ]);
        seq(&[&oid(&SIGNED_DATA), &der::tlv(0xa0, &signed_data)])
    }
}

// === impl TsaKey ===

impl TsaKey {
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Ec(key) => key.sign(data).expect("sign the attributes").as_bytes().to_vec(),
            Self::Rsa(pkcs8) => {
                let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(pkcs8).expect("load the TSA key");
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    data,
                    &mut signature,
                )
                .expect("sign the attributes");
                signature
            }
        }
    }

    /// The SignerInfo's signatureAlgorithm.
    fn algorithm(&self) -> Vec<u8> {
        match self {
            Self::Ec(_) => algorithm(&ECDSA_WITH_SHA256),
            Self::Rsa(_) => seq(&[&oid(&SHA256_WITH_RSA), &[0x05, 0x00]]),
        }
    }
}

fn seq(fields: &[&[u8]]) -> Vec<u8> {
    der::tlv(0x30, &fields.concat())
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    der::tlv(0x06, &oid_content(arcs))
}

fn algorithm(arcs: &[u64]) -> Vec<u8> {
    seq(&[&oid(arcs)])
}

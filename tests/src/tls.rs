//! A throwaway certificate authority for registries that serve TLS: a self-signed CA made with
//! `rcgen`, and a server certificate it signs for `127.0.0.1` (IP SAN) and `localhost` (DNS SAN),
//! both ECDSA P-256. Nothing is trusted system-wide: every client that must trust the CA is given
//! its PEM file (the rig's own HTTP client, containerd's `ca_file`, pullgate's `caFile`).

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

/// The files of one TLS-serving registry: the CA that clients trust, and the certificate chain
/// and key the server presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate (PEM): what `caFile` / `ca_file` point at.
    pub ca: PathBuf,
    /// The server certificate (PEM), signed by the CA: distribution's `http.tls.certificate`.
    pub certificate: PathBuf,
    /// The server's PKCS#8 private key (PEM): distribution's `http.tls.key`.
    pub key: PathBuf,
}

/// A freshly generated CA and a server certificate signed by it, as PEM text.
#[derive(Debug, Clone)]
pub struct TestCa {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

// === impl TestCa ===

impl TestCa {
    /// A new CA (never used for anything else) and a server certificate for `127.0.0.1` and
    /// `localhost`, valid for server authentication.
    pub fn generate() -> TestCa {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate the CA key");
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("pullgate test registry CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate the server key");
        let mut server_params = CertificateParams::default();
        server_params.distinguished_name = name("pullgate test registry");
        server_params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into().expect("an IA5 name")),
        ];
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.use_authority_key_identifier_extension = true;
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("sign the server certificate");

        TestCa {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`, `server.pem` and `server-key.pem` into `dir` (created if missing).
    pub fn write_to(&self, dir: &Path) -> TlsFiles {
        fs::create_dir_all(dir).expect("create the TLS dir");
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            certificate: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        fs::write(&files.ca, &self.ca_pem).expect("write ca.pem");
        fs::write(&files.certificate, &self.server_cert_pem).expect("write server.pem");
        fs::write(&files.key, &self.server_key_pem).expect("write server-key.pem");
        files
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_and_a_server_certificate_that_reqwest_accepts() {
        let ca = TestCa::generate();
        assert!(ca.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.server_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(ca.ca_pem, ca.server_cert_pem);
        reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).expect("the CA parses");
        reqwest::Certificate::from_pem(ca.server_cert_pem.as_bytes()).expect("the server certificate parses");

        let dir = tempfile::tempdir().unwrap();
        let files = ca.write_to(dir.path());
        assert_eq!(fs::read_to_string(&files.ca).unwrap(), ca.ca_pem);
        assert_eq!(fs::read_to_string(&files.certificate).unwrap(), ca.server_cert_pem);
        assert_eq!(fs::read_to_string(&files.key).unwrap(), ca.server_key_pem);
    }
}

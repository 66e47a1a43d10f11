//! Certificates made at test time (rcgen) for the TLS tests: a root, and
//! leaves it signs.
#![allow(dead_code)] // each test binary uses part of it

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

/// A certificate authority made for a test.
pub struct Ca {
    pub cert: Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a root");
        Ca { cert, key }
    }

    /// The root's certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names`, for `purpose`, valid now unless `expired`:
    /// (certificate PEM, key PEM).
    pub fn leaf(
        &self,
        names: &[&str],
        purpose: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![purpose];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    /// A server leaf for `localhost` and `127.0.0.1`.
    pub fn server_leaf(&self, expired: bool) -> (String, String) {
        self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            expired,
        )
    }

    /// A client leaf.
    pub fn client_leaf(&self) -> (String, String) {
        self.leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth, false)
    }
}

//! TLS trust for `wss://`: the bundled web PKI roots, the certificates of the CA file
//! (`--ca-cert`, [`SyncConfig::ca_pem`](super::SyncConfig::ca_pem)), and pinning.
//!
//! Each certificate of the CA file is trusted two ways:
//!
//! - as a root: a server certificate that chains to it is checked as usual (names, dates, key
//!   usage), which is what a private CA needs;
//! - as a pinned certificate: a server that presents exactly that certificate (byte for byte) as
//!   its own is trusted without chain, CA-flag or name checks. That is what a self-signed
//!   certificate needs, such as the one `openssl req -x509 ... -nodes` makes, which is marked
//!   `CA:TRUE` (refused as a server certificate by the web PKI rules) and often has no
//!   subjectAltName.
//!
//! A pinned certificate's validity dates are still checked, and the handshake signatures always
//! are, with the crypto provider's algorithms: only the holder of the certificate's private key
//! passes.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

/// A certificate of the CA file, trusted as the server's own.
#[derive(Debug)]
struct Pinned {
    der: CertificateDer<'static>,
    /// Its validity, in seconds since the Unix epoch (0 for a date before 1970).
    not_before: u64,
    not_after: u64,
}

/// Trusts a server whose certificate is one of the pinned ones, and otherwise asks the web PKI
/// verifier (the bundled roots plus the CA file's certificates).
#[derive(Debug)]
pub(super) struct PinningVerifier {
    pinned: Vec<Pinned>,
    webpki: Arc<WebPkiServerVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinningVerifier {
    /// `roots` must already hold `pinned` (as trust anchors). Errors are messages about the CA
    /// file.
    pub(super) fn new(
        roots: rustls::RootCertStore,
        pinned: Vec<CertificateDer<'static>>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<PinningVerifier, String> {
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let pinned = pinned
            .into_iter()
            .enumerate()
            .map(|(i, der)| {
                let (not_before, not_after) = validity(&der).ok_or_else(|| {
                    format!(
                        "certificate {} of the CA file has no validity dates that parse",
                        i + 1
                    )
                })?;
                Ok(Pinned {
                    der,
                    not_before,
                    not_after,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(PinningVerifier {
            pinned,
            webpki,
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

fn unix_time(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(pin) = self
            .pinned
            .iter()
            .find(|p| p.der.as_ref() == end_entity.as_ref())
        else {
            return self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        };
        // The same comparisons as webpki's.
        if now.as_secs() < pin.not_before {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before: unix_time(pin.not_before),
            }
            .into());
        }
        if now.as_secs() > pin.not_after {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after: unix_time(pin.not_after),
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// webpki's `CaUsedAsEndEntity`, which rustls passes on as it is (named by its `Debug`).
fn ca_as_end_entity(error: &CertificateError) -> bool {
    matches!(error, CertificateError::Other(other) if other.to_string() == "CaUsedAsEndEntity")
}

/// Why the client refused a certificate, in words.
pub(super) fn reason(error: &CertificateError) -> String {
    match error {
        CertificateError::UnknownIssuer => {
            "it is not signed by a trusted certificate authority".to_owned()
        }
        CertificateError::BadSignature => "a signature does not verify".to_owned(),
        CertificateError::BadEncoding => "it does not parse".to_owned(),
        CertificateError::Expired => "it has expired".to_owned(),
        CertificateError::NotValidYet => "it is not valid yet".to_owned(),
        CertificateError::NotValidForName => "it is not made for this host name".to_owned(),
        e if ca_as_end_entity(e) => {
            "it is marked CA:TRUE, and a CA certificate is not accepted as a server's own \
             unless it is pinned"
                .to_owned()
        }
        // The others with context have a readable `Display` in rustls.
        other => other.to_string(),
    }
}

/// What to do about a certificate the client refused.
pub(super) fn hint(error: &CertificateError, ca_given: bool) -> String {
    let pass = "pass the server's certificate (a self-signed one is then pinned), or the CA \
                certificate that signed it, with --ca-cert FILE (SyncConfig::ca_cert_file)";
    match error {
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => {
            "renew the server's certificate, or check this machine's clock".to_owned()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "connect with a host name the certificate is made for (its subjectAltName), or \
                 {pass}"
            )
        }
        CertificateError::BadSignature => "the server does not prove that it holds the private \
             key of the certificate it presents, or a certificate's signature is forged: check \
             the server's --tls-cert and --tls-key, and the --ca-cert file"
            .to_owned(),
        // Neither pinned nor signed by a CA of the file.
        e if ca_given && (*e == CertificateError::UnknownIssuer || ca_as_end_entity(e)) => {
            format!("{pass}; the file given holds neither")
        }
        _ => pass.to_owned(),
    }
}

/// The validity (`notBefore`, `notAfter`) of a DER certificate, in seconds since the Unix epoch
/// (0 for a date before it). Only the path to the dates is read: Certificate, TBSCertificate,
/// then version, serial number, signature algorithm and issuer skipped.
fn validity(cert: &[u8]) -> Option<(u64, u64)> {
    let (cert, _) = element(cert, 0x30)?;
    let (tbs, _) = element(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = element(rest, 0xa0)?.1; // [0] version
    }
    rest = element(rest, 0x02)?.1; // serialNumber
    rest = element(rest, 0x30)?.1; // signature
    rest = element(rest, 0x30)?.1; // issuer
    let (validity, _) = element(rest, 0x30)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, rest) = time(rest)?;
    rest.is_empty().then_some((not_before, not_after))
}

/// The first DER element of `input`, which must have the tag `tag`: its contents, and what
/// follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        (usize::try_from(len).ok()?, rest)
    };
    rest.split_at_checked(len)
}

/// A DER `UTCTime` (`YYMMDDHHMMSSZ`, years 1950 to 2049) or `GeneralizedTime`
/// (`YYYYMMDDHHMMSSZ`) as seconds since the Unix epoch (0 before it), and what follows it.
fn time(input: &[u8]) -> Option<(u64, &[u8])> {
    let (text, rest, year_digits) = match input.first()? {
        0x17 => {
            let (text, rest) = element(input, 0x17)?;
            (text, rest, 2)
        }
        0x18 => {
            let (text, rest) = element(input, 0x18)?;
            (text, rest, 4)
        }
        _ => return None,
    };
    let digits = text.strip_suffix(b"Z")?;
    if digits.len() != year_digits + 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |from: usize, len: usize| {
        digits[from..from + len]
            .iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'))
    };
    let mut year = num(0, year_digits);
    if year_digits == 2 {
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let at = year_digits;
    let (month, day) = (num(at, 2), num(at + 2, 2));
    let (hour, minute, second) = (num(at + 4, 2), num(at + 6, 2), num(at + 8, 2));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((u64::try_from(secs).unwrap_or(0), rest))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (negative before).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Years counted from March, so that a leap day ends its year; eras of 400 years.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A self-signed certificate as `openssl req -x509 -nodes -subj /CN=localhost` makes one:
    /// CA:TRUE, no subjectAltName.
    fn openssl_like(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> rcgen::CertifiedKey {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key_pair = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key_pair).expect("cert");
        rcgen::CertifiedKey { cert, key_pair }
    }

    fn verifier(pinned: &[&rcgen::CertifiedKey]) -> PinningVerifier {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let ders: Vec<CertificateDer<'static>> =
            pinned.iter().map(|c| c.cert.der().clone()).collect();
        for der in &ders {
            roots.add(der.clone()).expect("root");
        }
        PinningVerifier::new(roots, ders, &provider()).expect("verifier")
    }

    fn at(year: i32, month: u8, day: u8) -> UnixTime {
        let secs = rcgen::date_time_ymd(year, month, day).unix_timestamp();
        unix_time(u64::try_from(secs).expect("after 1970"))
    }

    fn check(
        v: &PinningVerifier,
        cert: &rcgen::CertifiedKey,
        name: &str,
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let name = ServerName::try_from(name.to_owned()).expect("name");
        v.verify_server_cert(cert.cert.der(), &[], &name, &[], now)
    }

    #[test]
    fn dates_are_read_from_the_der() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280).
        for (from, to) in [
            ((2001, 2, 28), (2049, 12, 31)),
            ((1999, 1, 1), (2050, 1, 1)),
            ((2024, 2, 29), (9999, 12, 31)),
        ] {
            let cert = openssl_like(from, to);
            let expect = |d: (i32, u8, u8)| {
                u64::try_from(rcgen::date_time_ymd(d.0, d.1, d.2).unix_timestamp()).expect("secs")
            };
            assert_eq!(
                validity(cert.cert.der()),
                Some((expect(from), expect(to))),
                "{from:?} {to:?}"
            );
        }
        // A date before 1970 counts as 0.
        let old = openssl_like((1960, 1, 1), (2030, 1, 1));
        assert_eq!(validity(old.cert.der()).map(|v| v.0), Some(0));
        // Truncated or not a certificate.
        let der = openssl_like((2020, 1, 1), (2030, 1, 1)).cert.der().to_vec();
        for end in [0, 1, 10, 40, der.len() / 2] {
            assert_eq!(validity(&der[..end]), None, "{end}");
        }
        assert_eq!(validity(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(time(b"\x17\x0d2402300000000Z"), None); // 30 February
        assert_eq!(time(b"\x17\x0d24022900000aZ"), None);
    }

    #[test]
    fn a_pinned_certificate_is_trusted_without_chain_ca_or_name_checks_but_with_dates() {
        let pinned = openssl_like((2020, 1, 1), (2040, 1, 1));
        let v = verifier(&[&pinned]);
        let now = at(2030, 6, 1);
        for name in ["localhost", "127.0.0.1", "other.example"] {
            assert!(check(&v, &pinned, name, now).is_ok(), "{name}");
        }
        assert!(matches!(
            check(&v, &pinned, "localhost", at(2041, 1, 1)),
            Err(Error::InvalidCertificate(
                CertificateError::ExpiredContext { .. }
            ))
        ));
        assert!(matches!(
            check(&v, &pinned, "localhost", at(2019, 1, 1)),
            Err(Error::InvalidCertificate(
                CertificateError::NotValidYetContext { .. }
            ))
        ));
    }

    #[test]
    fn another_certificate_than_the_pinned_one_is_refused() {
        let pinned = openssl_like((2020, 1, 1), (2040, 1, 1));
        let other = openssl_like((2020, 1, 1), (2040, 1, 1));
        let v = verifier(&[&pinned]);
        let now = at(2030, 6, 1);
        let err = check(&v, &other, "localhost", now).expect_err("not pinned");
        assert!(
            matches!(err, Error::InvalidCertificate(_)),
            "{err:?}: a certificate error"
        );
        // Without pins, the openssl-like certificate is what the web PKI rules refuse, and
        // the reason says why.
        let v = verifier(&[]);
        let Err(Error::InvalidCertificate(err)) = check(&v, &pinned, "localhost", now) else {
            panic!("refused as a certificate error");
        };
        assert!(reason(&err).contains("CA:TRUE"), "{err:?}");
        assert!(hint(&err, false).contains("--ca-cert FILE"));
    }

    #[test]
    fn a_private_ca_in_the_file_still_vouches_for_its_certificates_by_name() {
        let ca = openssl_like((2020, 1, 1), (2040, 1, 1));
        let key_pair = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["bigpeer.test".to_owned()])
            .expect("params")
            .signed_by(&key_pair, &ca.cert, &ca.key_pair)
            .expect("leaf");
        let leaf = rcgen::CertifiedKey { cert, key_pair };
        let v = verifier(&[&ca]);
        let now = at(2030, 6, 1);
        assert!(check(&v, &leaf, "bigpeer.test", now).is_ok());
        let err = check(&v, &leaf, "other.test", now).expect_err("another name");
        assert!(
            matches!(
                err,
                Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
            ),
            "{err:?}"
        );
    }

    /// Serves one TLS handshake on a local port with this certificate and this signing key
    /// (which need not match), and closes the connection after it.
    fn tls_server(
        cert: &rcgen::CertifiedKey,
        key: &rcgen::KeyPair,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> std::net::SocketAddr {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use std::io::Read as _;

        #[derive(Debug)]
        struct Fixed(Arc<rustls::sign::CertifiedKey>);
        impl rustls::server::ResolvesServerCert for Fixed {
            fn resolve(
                &self,
                _: rustls::server::ClientHello<'_>,
            ) -> Option<Arc<rustls::sign::CertifiedKey>> {
                Some(self.0.clone())
            }
        }

        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).expect("signing key");
        let certified = rustls::sign::CertifiedKey::new(vec![cert.cert.der().clone()], signer);
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let Ok((socket, _)) = listener.accept() else {
                return;
            };
            let Ok(conn) = rustls::ServerConnection::new(Arc::new(config)) else {
                return;
            };
            let mut stream = rustls::StreamOwned::new(conn, socket);
            // The handshake, then the first bytes of the request (if the client trusted
            // it); then the connection is closed.
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
        });
        addr
    }

    /// A server presenting the pinned certificate without its private key (its handshake
    /// signature made with another key) is refused, in TLS 1.3 and 1.2, as a certificate error
    /// that ends the client; with the right key, the handshake passes.
    #[tokio::test]
    async fn a_pinned_certificate_without_its_private_key_is_refused() {
        let pinned = openssl_like((2020, 1, 1), (2040, 1, 1));
        let other_key = rcgen::KeyPair::generate().expect("key");
        let timeout = std::time::Duration::from_secs(10);
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let addr = tls_server(&pinned, &other_key, version);
            let target = super::super::connect::Target::parse(
                &format!("wss://{addr}"),
                Some(&pinned.cert.pem()),
            )
            .expect("target");
            let err = target
                .connect(timeout)
                .await
                .expect_err("a forged signature");
            assert_eq!(
                err.code, "sync/untrusted-certificate",
                "{version:?}: {err:?}"
            );
            assert!(err.message.contains("private key"), "{err:?}");

            // The control: the certificate's own key. The TLS handshake passes; the server then
            // answers no WebSocket upgrade, which is not a certificate error.
            let addr = tls_server(&pinned, &pinned.key_pair, version);
            let target = super::super::connect::Target::parse(
                &format!("wss://{addr}"),
                Some(&pinned.cert.pem()),
            )
            .expect("target");
            let err = target.connect(timeout).await.expect_err("no upgrade");
            assert_eq!(err.code, "sync/unreachable", "{version:?}: {err:?}");
        }
    }
}

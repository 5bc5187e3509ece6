//! Webhook signatures the Standard Webhooks way (<https://www.standardwebhooks.com/>), so that a
//! receiver verifies them with any of the published `standardwebhooks` libraries:
//!
//! - the secret is `whsec_` followed by the base64 of its key bytes;
//! - each request carries `webhook-id` (the delivery's id, the same on every retry),
//!   `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`;
//! - the signature is `v1,` and the base64 of HMAC-SHA256 over `"{id}.{timestamp}.{body}"`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::RngExt as _;
use sha2::Sha256;

/// The prefix of every webhook secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key bytes of a new secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A webhook's signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a text is not a webhook secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is \"whsec_\" followed by the base64 of 24 to 64 bytes")]
pub struct BadSecret;

impl Secret {
    /// A new random secret.
    pub fn generate() -> Secret {
        let mut key = vec![0u8; SECRET_BYTES];
        rand::rng().fill(&mut key[..]);
        Secret(key)
    }

    /// Reads `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Secret, BadSecret> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?;
        let key = B64.decode(encoded).map_err(|_| BadSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(BadSecret);
        }
        Ok(Secret(key))
    }

    /// The secret as text, `whsec_<base64>`.
    pub fn encode(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(&self.0))
    }

    /// The `webhook-signature` header value for one request.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", B64.encode(self.mac(id, timestamp, body)))
    }

    /// Whether `header` (space-separated `version,signature` pairs) holds a valid `v1` signature
    /// of the request, compared in constant time.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').any(|pair| {
            let Some(sig) = pair.strip_prefix("v1,") else {
                return false;
            };
            let Ok(sig) = B64.decode(sig) else {
                return false;
            };
            self.hmac(id, timestamp, body).verify_slice(&sig).is_ok()
        })
    }

    fn hmac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC-SHA256 accepts a key of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        self.hmac(id, timestamp, body)
            .finalize()
            .into_bytes()
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its reference libraries' tests).
    #[test]
    fn signs_the_specification_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign(id, 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify(id, 1614265330, body, &format!("v1,bogus= {sig}")));
        assert!(
            !secret.verify(id, 1614265331, body, &sig),
            "the timestamp is signed"
        );
        assert!(
            !secret.verify("msg_other", 1614265330, body, &sig),
            "the id is signed"
        );
        assert!(
            !secret.verify(id, 1614265330, b"{}", &sig),
            "the body is signed"
        );
        assert!(!secret.verify(id, 1614265330, body, "v2,abc"));
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = Secret::generate();
        let text = s.encode();
        assert!(text.starts_with(SECRET_PREFIX));
        assert_eq!(Secret::parse(&text), Ok(s.clone()));
        assert_ne!(Secret::generate(), s);
        for bad in [
            "",
            "whsec_",
            "whsec_!!!",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_AAAA",
        ] {
            assert_eq!(Secret::parse(bad), Err(BadSecret), "{bad:?}");
        }
        assert!(
            !format!("{s:?}").contains(&text[6..]),
            "Debug hides the key"
        );
    }
}

//! Credentials: the constant-time comparison of secrets (the admission itself is
//! [`super::extract`]'s).

/// Constant-time comparison, so that timing reveals neither how much of a secret matched nor
/// its length: both sides are hashed (SHA-256) first, and the digests compared with `subtle`.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    use subtle::ConstantTimeEq as _;
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare() {
        assert!(super::secrets_equal("abc", "abc"));
        assert!(!super::secrets_equal("abc", "abd"));
        assert!(!super::secrets_equal("abc", "abcd"));
        assert!(!super::secrets_equal("", "a"));
        assert!(super::secrets_equal("", ""));
    }

    /// The class of bug: a handler that extracts a JSON body (`web::Json<T>` as an argument)
    /// reads it before it can check the credentials (actix polls a handler's extractors
    /// together). Every handler takes one extractor of `extract` that admits the request first,
    /// then reads the body.
    #[test]
    fn no_handler_reads_a_body_before_admission() {
        let sources = [
            ("store.rs", include_str!("store.rs")),
            ("legacy.rs", include_str!("legacy.rs")),
            ("write.rs", include_str!("write.rs")),
            ("admin.rs", include_str!("admin.rs")),
            ("metrics.rs", include_str!("metrics.rs")),
            ("health.rs", include_str!("health.rs")),
            ("openapi.rs", include_str!("openapi.rs")),
            ("sync.rs", include_str!("sync.rs")),
            ("extract.rs", include_str!("extract.rs")),
            ("ws.rs", include_str!("../sync/ws.rs")),
        ];
        let extractor = ["web::Json", "<"].concat();
        for (name, text) in sources {
            assert!(!text.contains(&extractor), "{name} extracts a JSON body");
        }
    }
}

//! RFC 3339 timestamps (`2027-01-31T12:00:00Z`, `...+02:00`, fractional seconds ignored) to and
//! from unix seconds, for key expiries (the `time` crate's RFC 3339 format).

use ::time::format_description::well_known::Rfc3339;
use ::time::OffsetDateTime;

/// Parses an RFC 3339 timestamp to unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (beyond the years 0000 to 9999, which RFC
/// 3339 cannot write, as the number of seconds).
pub fn format_rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T12:30:15Z"), Some(951_827_415));
        assert_eq!(
            parse_rfc3339("2000-02-29T14:30:15.123+02:00"),
            Some(951_827_415)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T10:30:15-02:00"),
            Some(951_827_415)
        );
        assert_eq!(format_rfc3339(951_827_415), "2000-02-29T12:30:15Z");
        for t in [0, 1, 86_399, 1_700_000_000, 4_102_444_800, -86_400] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2021-02-29T00:00:00Z",
            "2021-13-01T00:00:00Z",
            "2021-01-01 00:00:00",
            "2021-01-01T00:00:00+2:00",
            "yesterday",
            "2021-01-01T00:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}

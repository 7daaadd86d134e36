//! Time as the gateway counts and shows it: unix seconds, and RFC 3339 in
//! UTC for people and JSON.

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 UTC for unix seconds (`""` for a time `time` cannot show).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Unix seconds of an RFC 3339 time (any offset; fractions dropped), or
/// `None` when `text` is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2025-11-24T17:00:00+01:00"),
            Some(1_764_000_000)
        );
        assert_eq!(parse_rfc3339("2025-11-24T16:00:00.9Z"), Some(1_764_000_000));
        for bad in [
            "",
            "yesterday",
            "2025-11-24",
            "2025-11-24 16:00:00",
            "1764000000",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_000_000), "2025-11-24T16:00:00Z");
    }

    #[test]
    fn now_is_after_2026() {
        assert!(unix_now() > 1_767_225_600);
    }
}

//! Kubernetes-style duration strings (`720h`, `90m`, `1h30m`, `45s`, `500ms`).
//!
//! The CRD schema accepts the same grammar (see [`PATTERN`]), so a value that reached the controller
//! parses; the parser still returns an error rather than panicking on anything else.

use std::time::Duration;

/// Regular expression used in the CRD schema for every duration field.
pub const PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// Error for a duration string that does not follow [`PATTERN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a duration: use a number followed by h, m, s or ms, for example 720h, 90m or 1h30m"
)]
pub struct ParseDurationError {
    /// The rejected input.
    pub value: String,
}

/// Parses `1h30m`-style strings.
pub fn parse(value: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError {
        value: value.to_string(),
    };
    if value.is_empty() {
        return Err(err());
    }
    let mut total: u128 = 0;
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(err());
        }
        let number: u128 = value[start..i].parse().map_err(|_| err())?;
        let unit_ms: u128 = if value[i..].starts_with("ms") {
            i += 2;
            1
        } else {
            let unit = match bytes.get(i) {
                Some(b'h') => 3_600_000,
                Some(b'm') => 60_000,
                Some(b's') => 1_000,
                _ => return Err(err()),
            };
            i += 1;
            unit
        };
        total = number
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(err)?;
    }
    let total = u64::try_from(total).map_err(|_| err())?;
    Ok(Duration::from_millis(total))
}

/// Formats a duration in the shortest `1h30m`-style form (whole seconds; milliseconds below one second).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse("720h").unwrap(), Duration::from_secs(720 * 3600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("1m1s").unwrap(), Duration::from_secs(61));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "h",
            "10",
            "1d",
            "1.5h",
            "-1h",
            "1h 30m",
            "30x",
            "99999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_shortest_form() {
        assert_eq!(format(Duration::from_secs(720 * 3600)), "720h");
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_secs(61)), "1m1s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::ZERO), "0s");
    }

    #[test]
    fn format_round_trips() {
        for s in ["720h", "1h30m", "24h", "10m", "30s", "1h0m1s"] {
            let d = parse(s).unwrap();
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}

//! Values in the forms Go's standard library reads them, for the commands that replace Go
//! programs: `strconv.ParseBool` (pflag's `--flag=value`) and `time.ParseDuration`.

use crate::error::{Error, Result};

/// Go's `strconv.ParseBool`, which pflag uses for `--flag=value`: `1`, `t`, `T`, `true`,
/// `TRUE`, `True` and `0`, `f`, `F`, `false`, `FALSE`, `False`; nothing else (not `yes`,
/// not `on`).
pub fn go_bool(s: &str) -> std::result::Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("expected true or false, got {s:?}")),
    }
}

/// The longest interval accepted (1e9 s): longer ones are typos, and it keeps every
/// deadline computed from it far from `Instant` overflow.
pub(super) const MAX_DURATION_SECS: f64 = 1e9;

/// A Go-style duration (`time.ParseDuration`): `1m`, `30s`, `1m30s`, `1.5h`, `500ms`.
/// Must be positive.
pub fn go_duration(what: &str, raw: &str) -> Result<std::time::Duration> {
    duration_or(what, raw, "expected a duration such as 30s, 1m or 1m30s")
}

/// [`go_duration`], saying `expected` when `raw` is not a duration at all.
pub(super) fn duration_or(what: &str, raw: &str, expected: &str) -> Result<std::time::Duration> {
    let bad = || Error::invalid(what, raw, expected);
    let mut rest = raw.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total >= MAX_DURATION_SECS {
        return Err(Error::invalid(
            what,
            raw,
            "duration too large: at most 277777h (about 31 years)",
        ));
    }
    if total <= 0.0 {
        return Err(Error::invalid(what, raw, "duration must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_too_large_say_so() {
        use super::go_duration;
        for raw in [
            "1h99999999999999999h",
            "300000h",
            "99999999999999999999999h",
        ] {
            let e = go_duration("--x", raw).unwrap_err();
            assert!(e.to_string().contains("too large"), "{raw}: {e}");
        }
        assert!(
            go_duration("--x", "0s")
                .unwrap_err()
                .to_string()
                .contains("positive")
        );
        assert_eq!(
            go_duration("--x", "277777h").unwrap().as_secs(),
            277777 * 3600
        );
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(go_duration("D", "1m").unwrap(), Duration::from_secs(60));
        assert_eq!(go_duration("D", "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            go_duration("D", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(go_duration("D", "1.5h").unwrap(), Duration::from_secs(5400));
        for bad in ["", "10", "1x", "m", "-1s", "0s", "1m 30s", "s1"] {
            assert!(
                go_duration("--sync-interval", bad)
                    .unwrap_err()
                    .to_string()
                    .contains("--sync-interval"),
                "{bad}"
            );
        }
    }
}

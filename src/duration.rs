//! Durations in the OKMS/Vault form (`0`, `30s`, `5m`, `1h30m`, `1d`), one type for every field
//! and flag that takes one: parse, display, serde, JSON schema and `FromStr` (clap).
//!
//! Each use fixes its bound and whether it accepts milliseconds in the type, so the schema refuses
//! what OKMS would refuse (`250ms` for `deactivateVersionAfter`) and no value can overflow the
//! arithmetic done with it (a requeue of `99999999999999999d` once panicked the operator).
//! Deserialising never fails: an object stored before a bound was tightened still decodes (a
//! decode error would fail the whole watch), and its value is refused by [`Bounded::get`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest duration text accepted (`10d10h10m10s` is 12).
pub const MAX_TEXT_LEN: usize = 32;

/// `refreshInterval` and the operator's default: at most one year, no milliseconds.
pub type RefreshInterval = Bounded<{ 365 * DAY }, false>;
/// A connection's per-request `timeout`: at most 10 minutes; milliseconds allowed.
pub type Timeout = Bounded<{ 10 * 60 }, true>;
/// `remote.deactivateVersionAfter`: OKMS's Vault units (`s`, `m`, `h`, `d`), at most 10 years
/// (OKMS publishes no bound; this one only keeps the value far from overflow).
pub type VersionTtl = Bounded<{ 3650 * DAY }, false>;
/// `rotation.interval`: at most 10 years (at least a minute, checked where it is used).
pub type RotationInterval = Bounded<{ 3650 * DAY }, false>;
/// Operator flags such as `--lease-duration`: at most one day, milliseconds allowed.
pub type FlagDuration = Bounded<DAY, true>;

const DAY: u64 = 86_400;

/// A duration string of at most `MAX_SECS` seconds, with `ms` only when `MILLIS`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bounded<const MAX_SECS: u64, const MILLIS: bool> {
    text: String,
    marker: PhantomData<()>,
}

impl<const MAX_SECS: u64, const MILLIS: bool> Bounded<MAX_SECS, MILLIS> {
    /// The largest value accepted.
    pub const MAX: Duration = Duration::from_secs(MAX_SECS);

    /// A value from its text, unchecked (checked by [`Bounded::get`]).
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            marker: PhantomData,
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value, or why it is refused (wrong form, unit not allowed here, over the bound).
    pub fn get(&self) -> Result<Duration, String> {
        let value = parse(&self.text, MILLIS)?;
        if value > Self::MAX {
            return Err(format!(
                "{:?} is longer than the maximum of {}",
                self.text,
                display(Self::MAX)
            ));
        }
        Ok(value)
    }

    /// The schema pattern: the units of this field, at most 9 digits per component.
    pub fn pattern() -> &'static str {
        if MILLIS {
            r"^(0|([0-9]{1,9}(ms|s|m|h|d))+)$"
        } else {
            r"^(0|([0-9]{1,9}[smhd])+)$"
        }
    }
}

impl<const MAX_SECS: u64, const MILLIS: bool> fmt::Display for Bounded<MAX_SECS, MILLIS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<const MAX_SECS: u64, const MILLIS: bool> fmt::Debug for Bounded<MAX_SECS, MILLIS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl<const MAX_SECS: u64, const MILLIS: bool> From<&str> for Bounded<MAX_SECS, MILLIS> {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

/// For flags: parsed and bounded at once.
impl<const MAX_SECS: u64, const MILLIS: bool> FromStr for Bounded<MAX_SECS, MILLIS> {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let value = Self::new(text);
        value.get()?;
        Ok(value)
    }
}

impl<const MAX_SECS: u64, const MILLIS: bool> Serialize for Bounded<MAX_SECS, MILLIS> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, const MAX_SECS: u64, const MILLIS: bool> Deserialize<'de> for Bounded<MAX_SECS, MILLIS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl<const MAX_SECS: u64, const MILLIS: bool> JsonSchema for Bounded<MAX_SECS, MILLIS> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        Cow::Owned(format!("Duration{MAX_SECS}{MILLIS}"))
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": MAX_TEXT_LEN,
            "pattern": Self::pattern(),
        })
    }
}

/// Parses `0`, `30s`, `5m`, `1h30m`, `1d` (and `250ms` when `millis`), at most 9 digits a
/// component; saturating, so nothing overflows. The caller bounds the result.
pub fn parse(text: &str, millis: bool) -> Result<Duration, String> {
    let form = || {
        let units = if millis {
            "ms, s, m, h, d"
        } else {
            "s, m, h, d"
        };
        format!("{text:?} is not a duration like 30s, 5m, 1h30m or 1d (units: {units})")
    };
    if text.len() > MAX_TEXT_LEN {
        return Err(format!("a duration has at most {MAX_TEXT_LEN} characters"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(form());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        // at most 9 digits a component, as the schema pattern says: nothing can overflow
        if digits == 0 || digits > 9 {
            return Err(form());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| form())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" if millis => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(DAY)),
            _ => return Err(form()),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// The shortest text of a whole number of seconds in the largest unit that divides it.
pub fn display(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => "0".into(),
        s if s % DAY == 0 => format!("{}d", s / DAY),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_units() {
        let ok = |t: &str| RefreshInterval::new(t).get().unwrap();
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("10d10h10m10s"), Duration::from_secs(10 * DAY + 36_610));
        for bad in ["", "1", "s", "1x", "-1s", "1.5h", "1h ", "250ms", "1 h"] {
            assert!(RefreshInterval::new(bad).get().is_err(), "{bad:?}");
        }
        assert_eq!(
            Timeout::new("250ms").get().unwrap(),
            Duration::from_millis(250)
        );
        assert!(VersionTtl::new("250ms").get().is_err());
    }

    #[test]
    fn bounds_hold_and_nothing_overflows() {
        assert!(RefreshInterval::new("365d").get().is_ok());
        let err = RefreshInterval::new("366d").get().unwrap_err();
        assert!(err.contains("maximum of 365d"), "{err}");
        assert!(RefreshInterval::new("99999999999999999d").get().is_err());
        assert!(RefreshInterval::new("18446744073709551616s").get().is_err());
        assert!(Timeout::new("11m").get().is_err());
        assert!(Timeout::new("10m").get().is_ok());
        let long = "1s".repeat(40);
        assert!(Timeout::new(long).get().is_err());
    }

    #[test]
    fn patterns_agree_with_the_parser() {
        // what the API server refuses, the parser refuses too (and the reverse, within the bound)
        let cases = [
            "0",
            "30s",
            "5m",
            "1h30m",
            "1d",
            "250ms",
            "1",
            "",
            "1x",
            "1.5h",
            "s",
            "0s",
            "1h ",
            "1234567890s",
        ];
        for (pattern, millis) in [
            (RefreshInterval::pattern(), false),
            (Timeout::pattern(), true),
        ] {
            let re = regex::Regex::new(pattern).unwrap();
            for case in cases {
                assert_eq!(
                    re.is_match(case),
                    parse(case, millis).is_ok(),
                    "{pattern} vs parser on {case:?}"
                );
            }
        }
    }

    #[test]
    fn serde_is_a_plain_string_and_never_fails() {
        let v: RefreshInterval = serde_json::from_value(serde_json::json!("9999999999d")).unwrap();
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!("9999999999d")
        );
        assert!(v.get().is_err());
        assert!("366d".parse::<RefreshInterval>().is_err());
        assert_eq!(
            "2h".parse::<RefreshInterval>().unwrap().get().unwrap(),
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn display_picks_the_largest_unit() {
        assert_eq!(display(Duration::from_secs(365 * DAY)), "365d");
        assert_eq!(display(Duration::from_secs(5400)), "90m");
        assert_eq!(display(Duration::from_secs(61)), "61s");
        assert_eq!(display(Duration::ZERO), "0");
    }
}

//! Generated values (`spec.source.generate`): passwords, random bytes as hex or Base64, UUIDs,
//! drawn from the OS's cryptographic random source. Pure apart from the randomness; nothing here
//! logs, and a generated value leaves only as the return value.

use std::collections::BTreeMap;

use base64::Engine;
use rand::rngs::OsRng;
use rand::{Rng, TryRngCore};
use serde_json::{Map, Value};

use crate::crd::{Generator, GeneratorKind};
use crate::error::Error;

/// The symbols of a `Password`: safe unescaped in a URL's user information (a DSN), in YAML and in
/// a shell word.
pub const PASSWORD_SYMBOLS: &str = "-_.~!*";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";

/// Most data keys one object may generate.
pub const MAX_KEYS: usize = 64;

/// Checks the generators (the schema's rules, again in code for objects stored before them).
pub fn validate(generate: &BTreeMap<String, Generator>) -> Result<(), Error> {
    if generate.is_empty() || generate.len() > MAX_KEYS {
        return Err(Error::InvalidSpec(format!(
            "spec.source.generate needs 1 to {MAX_KEYS} keys"
        )));
    }
    for (key, g) in generate {
        let valid_key = !key.is_empty()
            && key.len() <= 253
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_key {
            return Err(Error::InvalidSpec(format!(
                "spec.source.generate: {key:?} is not a valid Secret data key"
            )));
        }
        length(g)
            .map_err(|why| Error::InvalidSpec(format!("spec.source.generate.{key}: {why}")))?;
    }
    Ok(())
}

/// The length a generator uses, or why its `length` is refused.
fn length(g: &Generator) -> Result<usize, String> {
    let (range, default) = match g.kind {
        GeneratorKind::Uuid => {
            return match g.length {
                None => Ok(36),
                Some(_) => Err("a Uuid has no length".into()),
            };
        }
        GeneratorKind::Password => (8..=256, 32),
        GeneratorKind::Hex | GeneratorKind::Base64 => (16..=1024, 32),
    };
    let n = g.length.unwrap_or(default);
    if range.contains(&n) {
        Ok(n as usize)
    } else {
        Err(format!(
            "length {n} is outside {}..={} for {:?}",
            range.start(),
            range.end(),
            g.kind
        ))
    }
}

/// Fresh values for every key, as the JSON object written to OKMS.
pub fn values(generate: &BTreeMap<String, Generator>) -> Result<Map<String, Value>, Error> {
    validate(generate)?;
    let mut rng = OsRng.unwrap_err();
    let mut out = Map::new();
    for (key, g) in generate {
        let n = length(g).map_err(Error::InvalidSpec)?;
        let value = match g.kind {
            GeneratorKind::Password => password(&mut rng, n),
            GeneratorKind::Hex => {
                let bytes = random_bytes(&mut rng, n);
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            }
            GeneratorKind::Base64 => {
                base64::engine::general_purpose::STANDARD.encode(random_bytes(&mut rng, n))
            }
            GeneratorKind::Uuid => uuid_v4(&mut rng),
        };
        out.insert(key.clone(), Value::String(value));
    }
    Ok(out)
}

fn random_bytes(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rng.fill(bytes.as_mut_slice());
    bytes
}

/// `n` characters, uniform over letters, digits and symbols, with at least one of each class
/// (drawn again until it has: about two draws on average at length 8, one at 32).
fn password(rng: &mut impl Rng, n: usize) -> String {
    let alphabet: Vec<char> = [LOWER, UPPER, DIGITS, PASSWORD_SYMBOLS]
        .concat()
        .chars()
        .collect();
    loop {
        let candidate: String = (0..n)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        let has = |class: &str| candidate.chars().any(|c| class.contains(c));
        if has(LOWER) && has(UPPER) && has(DIGITS) && has(PASSWORD_SYMBOLS) {
            return candidate;
        }
    }
}

/// A random (version 4, RFC 9562) UUID.
fn uuid_v4(rng: &mut impl Rng) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(kind: GeneratorKind, length: Option<u32>) -> Generator {
        Generator { kind, length }
    }

    #[test]
    fn each_kind_has_its_form_and_length() {
        let spec: BTreeMap<String, Generator> = [
            (
                "password".to_string(),
                generator(GeneratorKind::Password, None),
            ),
            (
                "short".to_string(),
                generator(GeneratorKind::Password, Some(8)),
            ),
            ("hex".to_string(), generator(GeneratorKind::Hex, Some(16))),
            ("b64".to_string(), generator(GeneratorKind::Base64, None)),
            ("id".to_string(), generator(GeneratorKind::Uuid, None)),
        ]
        .into();
        for _ in 0..200 {
            let v = values(&spec).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            for (key, len) in [("password", 32), ("short", 8)] {
                let p = s(key);
                assert_eq!(p.chars().count(), len);
                for class in [LOWER, UPPER, DIGITS, PASSWORD_SYMBOLS] {
                    assert!(p.chars().any(|c| class.contains(c)), "{key} lacks a class");
                }
                assert!(p.chars().all(|c| {
                    [LOWER, UPPER, DIGITS, PASSWORD_SYMBOLS]
                        .iter()
                        .any(|class| class.contains(c))
                }));
            }
            let hex = s("hex");
            assert_eq!(hex.len(), 32);
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
            let b64 = base64::engine::general_purpose::STANDARD
                .decode(s("b64"))
                .unwrap();
            assert_eq!(b64.len(), 32);
            let id = s("id");
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "4", "{id}");
            assert!("89ab".contains(&id[19..20]), "{id}");
        }
        // fresh every time
        let a = values(&spec).unwrap();
        let b = values(&spec).unwrap();
        for key in ["password", "hex", "b64", "id"] {
            assert_ne!(a[key], b[key], "{key} repeated");
        }
    }

    #[test]
    fn bad_generators_are_refused() {
        let one = |g: Generator| values(&[("k".to_string(), g)].into());
        assert!(one(generator(GeneratorKind::Uuid, Some(36))).is_err());
        assert!(one(generator(GeneratorKind::Password, Some(7))).is_err());
        assert!(one(generator(GeneratorKind::Password, Some(257))).is_err());
        assert!(one(generator(GeneratorKind::Hex, Some(15))).is_err());
        assert!(one(generator(GeneratorKind::Base64, Some(1025))).is_err());
        assert!(one(generator(GeneratorKind::Hex, Some(1024))).is_ok());
        assert!(values(&BTreeMap::new()).is_err());
        let many: BTreeMap<String, Generator> = (0..65)
            .map(|i| (format!("k{i}"), generator(GeneratorKind::Uuid, None)))
            .collect();
        assert!(values(&many).is_err());
        let bad_key: BTreeMap<String, Generator> =
            [("a/b".to_string(), generator(GeneratorKind::Uuid, None))].into();
        assert!(values(&bad_key).is_err());
    }
}

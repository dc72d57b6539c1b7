//! Spec validation: what the schema checks too (objects may predate the schema, or come from a
//! server that skips validation) and what only code can check. Pure: plain data in, `InvalidSpec`
//! (or `PathImmutable`, `NotAllowed`) out, before anything is read or written. The one
//! exception, [`renders`], renders the target off the async runtime (bounded, see `render`).

use crate::controller::plan::{Desired, OWNER_KEY};
use crate::crd::{
    ConnectionSpec, DeletionPolicy, OkmsSecret, OkmsSecretSpec, OkmsSecretStatus, RemoteSettings,
    UpdatePolicy,
};
use crate::error::Error;
use crate::isolation;

/// Longest OKMS path.
pub const MAX_PATH_LEN: usize = 255;

/// `spec.remote.customMetadata` entries: OKMS's 64 less the owner record.
pub const MAX_CUSTOM_METADATA: usize = 63;

/// Checks what the schema checks too (objects may predate the schema, or come from a server
/// that skips validation) and what only code can check.
pub fn okms_secret(spec: &OkmsSecretSpec, status: Option<&OkmsSecretStatus>) -> Result<(), Error> {
    path(&spec.path)?;
    if let Some(bound) = status.and_then(|s| s.path.as_deref())
        && bound != spec.path
    {
        return Err(Error::PathImmutable {
            bound: bound.to_string(),
            requested: spec.path.clone(),
        });
    }
    if spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Delete && spec.source.is_none() {
        return Err(Error::InvalidSpec(
            "deletionPolicy Delete needs a source: a mirror-only object never deletes what it did not write".into(),
        ));
    }
    if spec.version.is_some() && spec.source.is_some() {
        return Err(Error::InvalidSpec(
            "spec.version pins a mirrored version and cannot be combined with spec.source".into(),
        ));
    }
    if let Some(source) = &spec.source {
        if let Some(crate::crd::InlineData::Invalid(why)) = &source.inline {
            return Err(Error::InvalidSpec(why.clone()));
        }
        let set = [
            source.secret_ref.is_some(),
            source.inline.is_some(),
            source.generate.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(Error::InvalidSpec(
                "spec.source needs exactly one of secretRef, inline or generate".into(),
            ));
        }
        if let Some(g) = &source.generate {
            crate::generate::validate(g)?;
        }
    }
    if spec.rotation.is_some() && spec.source.as_ref().is_none_or(|s| s.generate.is_none()) {
        return Err(Error::InvalidSpec(
            "spec.rotation needs spec.source.generate: only generated values are rotated".into(),
        ));
    }
    crate::controller::rotation::settings(spec.rotation.as_ref())?;
    if let Some(v) = spec.version
        && !(1..=24000).contains(&v)
    {
        return Err(Error::InvalidSpec(format!(
            "spec.version {v} is outside 1..24000"
        )));
    }
    if let Some(interval) = &spec.refresh_interval {
        interval
            .get()
            .map_err(|e| Error::InvalidSpec(format!("spec.refreshInterval: {e}")))?;
    }
    if let Some(remote) = &spec.remote {
        remote_settings(remote)?;
    }
    if let Some(target) = &spec.target {
        crate::render::check_templates(target)?;
    }
    Ok(())
}

/// The target cannot be the object's own source Secret: every write of the target would change
/// the source and write another version (once 1 062 versions in 30 s).
pub fn target_name(spec: &OkmsSecretSpec, target_name: &str) -> Result<(), Error> {
    if let Some(source) = spec.source.as_ref().and_then(|s| s.secret_ref.as_ref())
        && source.name == target_name
    {
        return Err(Error::InvalidSpec(format!(
            "the target Secret {target_name:?} is also the source (spec.source.secretRef.name): use another target name"
        )));
    }
    Ok(())
}

/// OKMS path rules: charset `a-zA-Z0-9_.:/=@-`, 1–255 characters, no leading/trailing `/`, no `//`.
pub fn path(path: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::InvalidSpec(format!("spec.path {path:?} {why}")));
    if path.is_empty() {
        return bad("is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("is longer than 255 characters");
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:/=@-".contains(*c)))
    {
        return bad(&format!(
            "contains {c:?}; allowed are a-zA-Z0-9 and _.:/=@-"
        ));
    }
    if path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        return bad("must not start or end with '/' nor contain '//'");
    }
    if path.split('/').any(isolation::is_dot_segment) {
        return bad("must not contain a '.' or '..' segment");
    }
    Ok(())
}

fn remote_settings(remote: &RemoteSettings) -> Result<(), Error> {
    if let Some(m) = remote.max_versions
        && m > 24000
    {
        return Err(Error::InvalidSpec(format!(
            "spec.remote.maxVersions {m} is over 24000"
        )));
    }
    if let Some(d) = &remote.deactivate_version_after {
        d.get()
            .map_err(|e| Error::InvalidSpec(format!("spec.remote.deactivateVersionAfter: {e}")))?;
    }
    if let Some(meta) = &remote.custom_metadata {
        if meta.len() > MAX_CUSTOM_METADATA {
            return Err(Error::InvalidSpec(format!(
                "spec.remote.customMetadata has more than {MAX_CUSTOM_METADATA} entries (OKMS allows 64, one is the owner record)"
            )));
        }
        if meta.contains_key(OWNER_KEY) {
            return Err(Error::InvalidSpec(format!(
                "spec.remote.customMetadata[{OWNER_KEY:?}] is reserved for the operator's owner record"
            )));
        }
        for (k, v) in meta {
            let ok = !v.is_empty()
                && v.len() <= 512
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:/=@%-".contains(c));
            if !ok {
                return Err(Error::InvalidSpec(format!(
                    "spec.remote.customMetadata[{k:?}]: values are 1-512 characters of a-zA-Z0-9_.:/=@%-"
                )));
            }
        }
    }
    Ok(())
}

/// The target must render from the data the sync will mirror, and that is checked before
/// anything is written: with a source (and `Overwrite`) the mirrored data is the desired data,
/// known now, so a template naming a missing key or undecodable Base64 is refused now instead of
/// after the data was written to OKMS. Generated values render like any others: checked on a
/// throwaway draw.
pub async fn renders(obj: &OkmsSecret, desired: Option<&Desired>) -> Result<(), Error> {
    let target = obj.spec.target.clone().unwrap_or_default();
    if let Some(desired) = desired
        && obj.spec.update_policy.unwrap_or_default() == UpdatePolicy::Overwrite
    {
        crate::render::render_target_off_runtime(desired.data.as_map(), &target).await?;
    }
    if let Some(g) = obj.spec.source.as_ref().and_then(|s| s.generate.as_ref()) {
        crate::render::render_target_off_runtime(&crate::generate::values(g)?, &target).await?;
    }
    Ok(())
}

/// Checks a connection's spec before anything is read or sent: its endpoint (form and the
/// operator's allow-list, [`isolation::check_endpoint`]) and its `allowedPaths` entries. Returns
/// the endpoint as the client will use it.
pub fn connection(
    spec: &ConnectionSpec,
    allowed: &isolation::AllowedEndpoints,
    display: &str,
) -> Result<url::Url, Error> {
    let endpoint = isolation::check_endpoint(&spec.endpoint, allowed).map_err(|why| match why {
        isolation::EndpointRefusal::Invalid(why) => Error::InvalidSpec(format!("{display}: {why}")),
        isolation::EndpointRefusal::NotAllowed(why) => {
            Error::NotAllowed(format!("{display}: {why}"))
        }
    })?;
    if let Some(entries) = &spec.allowed_paths {
        isolation::check_allowed_paths(entries)
            .map_err(|why| Error::InvalidSpec(format!("{display}: {why}")))?;
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::connection::tests::spec as connection_spec;
    use crate::controller::plan::{create_settings, jittered, owner_record, settings_drift};
    use crate::crd::{ConnectionRef, Source, SourceSecretRef};
    use crate::okms::SecretMetadata;
    use crate::reason::Reason;
    use serde_json::json;

    /// Why `okms_secret` refuses `s` (no status), if it does.
    fn refusal(s: &OkmsSecretSpec) -> Option<Reason> {
        okms_secret(s, None).err().map(|e| e.reason())
    }

    fn spec(path: &str) -> OkmsSecretSpec {
        serde_json::from_value(json!({"connectionRef": {"name": "c"}, "path": path})).unwrap()
    }

    #[test]
    fn path_rules() {
        let pattern = regex::Regex::new(crate::crd::schema::PATH_PATTERN).unwrap();
        for ok in [
            "a",
            "team-a/db",
            "x:y=z@w.v_u-1",
            ".a",
            "...",
            "a/..b",
            "a./b",
            "a/.x",
        ] {
            assert!(path(ok).is_ok(), "{ok}");
            assert!(pattern.is_match(ok), "schema refuses {ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a b",
            "a+b",
            "é",
            long.as_str(),
            ".",
            "..",
            "team-a/../team-b/x",
            "team-a/./x",
            "a/..",
        ] {
            assert_eq!(
                path(bad).unwrap_err().reason(),
                Reason::InvalidSpec,
                "{bad}"
            );
            if bad.len() <= MAX_PATH_LEN {
                assert!(!pattern.is_match(bad), "schema accepts {bad}");
            }
        }
    }

    #[test]
    fn path_is_bound_by_status() {
        let status = OkmsSecretStatus {
            path: Some("old".into()),
            ..Default::default()
        };
        assert_eq!(
            okms_secret(&spec("new"), Some(&status))
                .unwrap_err()
                .reason(),
            Reason::PathImmutable
        );
        assert!(okms_secret(&spec("old"), Some(&status)).is_ok());
    }

    #[test]
    fn version_with_source_and_double_source_are_invalid() {
        let mut s = spec("p");
        s.version = Some(2);
        s.source = Some(Source {
            secret_ref: Some(SourceSecretRef {
                name: "x".into(),
                keys: None,
                encoding: None,
            }),
            inline: None,
            generate: None,
        });
        assert_eq!(refusal(&s), Some(Reason::InvalidSpec));
        s.version = None;
        s.source.as_mut().unwrap().inline = Some(Default::default());
        assert_eq!(refusal(&s), Some(Reason::InvalidSpec));
        let _ = ConnectionRef {
            kind: None,
            name: "c".into(),
        };
    }

    #[test]
    fn durations_are_bounded() {
        let mut s = spec("p");
        s.refresh_interval = Some("99999999999999999d".into());
        assert_eq!(refusal(&s), Some(Reason::InvalidSpec));
        s.refresh_interval = Some("366d".into());
        assert_eq!(refusal(&s), Some(Reason::InvalidSpec));
        s.refresh_interval = Some("365d".into());
        assert!(okms_secret(&s, None).is_ok());
        s.remote = Some(RemoteSettings {
            deactivate_version_after: Some("250ms".into()),
            ..Default::default()
        });
        assert_eq!(refusal(&s), Some(Reason::InvalidSpec));
    }

    #[test]
    fn the_owner_record_cannot_be_spoofed() {
        let other_cluster = owner_record("cluster-2", "team-a", "db");
        let mut s = spec("p");
        s.remote = Some(RemoteSettings {
            custom_metadata: Some(std::collections::BTreeMap::from([(
                OWNER_KEY.to_string(),
                other_cluster.clone(),
            )])),
            ..Default::default()
        });
        assert_eq!(refusal(&s), Some(Reason::InvalidSpec));
    }

    #[test]
    fn connections_are_refused_before_anything_is_read() {
        let allowed = isolation::AllowedEndpoints::default();
        let check = |endpoint: &str, extra: serde_json::Value| {
            connection(
                &connection_spec(endpoint, extra),
                &allowed,
                "OkmsConnection a/b",
            )
            .map_err(|e| e.reason())
        };
        let none = serde_json::json!({});
        assert!(check("https://eu-west-rbx.okms.ovh.net", none.clone()).is_ok());
        assert!(check("http://127.0.0.1:8080", none.clone()).is_ok());
        assert!(check("http://localhost:8080", none.clone()).is_ok());
        for (endpoint, reason) in [
            ("http://eu-west-rbx.okms.ovh.net", Reason::InvalidSpec),
            ("ftp://eu-west-rbx.okms.ovh.net", Reason::InvalidSpec),
            ("https://u:p@eu-west-rbx.okms.ovh.net", Reason::InvalidSpec),
            ("https://eu-west-rbx.okms.ovh.net/?x=1", Reason::InvalidSpec),
            ("https://eu-west-rbx.okms.ovh.net/#x", Reason::InvalidSpec),
            ("not a url", Reason::InvalidSpec),
            ("https://evil.example", Reason::NotAllowed),
            (
                "https://eu-west-rbx.okms.ovh.net.evil.example",
                Reason::NotAllowed,
            ),
            ("http://evil.example", Reason::InvalidSpec),
        ] {
            assert_eq!(check(endpoint, none.clone()), Err(reason), "{endpoint}");
        }
        for bad in [serde_json::json!(["/"]), serde_json::json!(["a/../b"])] {
            assert_eq!(
                check(
                    "https://eu-west-rbx.okms.ovh.net",
                    serde_json::json!({ "allowedPaths": bad })
                ),
                Err(Reason::InvalidSpec)
            );
        }
    }

    /// Arbitrary specs (whatever the schema lets through, and what it would not) go through
    /// validation and the pure decisions without a panic: no user input reaches one.
    #[test]
    fn arbitrary_specs_never_panic() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(16);
        let atoms = [
            "",
            "0",
            "1",
            "-1",
            "30s",
            "250ms",
            "99999999999999999d",
            "1h30m",
            "365d",
            "366d",
            "18446744073709551616",
            "a",
            "..",
            ".",
            "/",
            "//",
            "team-a/../b",
            "é",
            "Delete",
            "Merge",
            "Owner",
            "IfNotExists",
            "okms-operator-owner",
            "{{ x }}",
            "{% for %}",
            "\u{0}",
            "x\ny",
        ];
        let word = |rng: &mut StdRng| atoms[rng.random_range(0..atoms.len())].to_string();
        let number = |rng: &mut StdRng| match rng.random_range(0..4) {
            0 => serde_json::json!(rng.random::<u32>()),
            1 => serde_json::json!(rng.random::<i64>()),
            2 => serde_json::json!(f64::MAX),
            _ => serde_json::json!(0),
        };
        let mut decoded = 0;
        for _ in 0..5000 {
            let value = |rng: &mut StdRng| -> serde_json::Value {
                if rng.random_bool(0.6) {
                    serde_json::Value::String(word(rng))
                } else {
                    number(rng)
                }
            };
            let spec = serde_json::json!({
                "connectionRef": {"name": word(&mut rng), "kind": if rng.random_bool(0.5) { "ClusterOkmsConnection" } else { "OkmsConnection" }},
                "path": word(&mut rng) + &word(&mut rng),
                "refreshInterval": word(&mut rng),
                "version": value(&mut rng),
                "deletionPolicy": if rng.random_bool(0.5) { "Delete" } else { "Retain" },
                "source": if rng.random_bool(0.5) {
                    serde_json::json!({"inline": {word(&mut rng): value(&mut rng)}})
                } else {
                    serde_json::json!({"secretRef": {"name": word(&mut rng)}})
                },
                "remote": {"maxVersions": value(&mut rng), "deactivateVersionAfter": word(&mut rng),
                           "customMetadata": {word(&mut rng): word(&mut rng)}},
                "target": {"name": word(&mut rng), "template": {word(&mut rng): word(&mut rng)}},
            });
            let Ok(spec) = serde_json::from_value::<OkmsSecretSpec>(spec) else {
                continue;
            };
            decoded += 1;
            let status = OkmsSecretStatus {
                path: Some(word(&mut rng)),
                ..Default::default()
            };
            let _ = okms_secret(&spec, Some(&status));
            let _ = target_name(&spec, &word(&mut rng));
            let actual = SecretMetadata {
                deactivate_version_after: Some(word(&mut rng)),
                max_versions: Some(rng.random()),
                ..Default::default()
            };
            let _ = settings_drift(spec.remote.as_ref(), &actual, &word(&mut rng));
            let _ = create_settings(spec.remote.as_ref(), &word(&mut rng));
            if let Some(Ok(interval)) = spec.refresh_interval.as_ref().map(|i| i.get()) {
                let _ = jittered(interval, rng.random());
            }
            let _ = crate::isolation::path_allowed(&spec.path, Some(&[word(&mut rng)]));
        }
        assert!(
            decoded > 100,
            "only {decoded} specs decoded: the generator tests little"
        );
    }
}

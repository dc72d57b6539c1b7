//! The Secret Manager state machine shared by the REST v2 and the Vault KV2 surfaces.
//!
//! Pure: no I/O, the clock is a parameter. Every HTTP handler is a thin translation onto one of
//! these methods, so the semantics (version lifecycle, pruning, expiry, CAS, limits) are
//! unit-tested here without a server.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A version's key/value payload (always a JSON object).
pub type Data = serde_json::Map<String, Value>;

/// Highest version id and highest `maxVersions` the API accepts.
pub const MAX_VERSION: u32 = 24_000;
/// Serialized size limit of a version's data.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Longest accepted secret path.
pub const MAX_PATH_LEN: usize = 255;
/// Most custom metadata entries on one secret.
pub const MAX_CUSTOM_METADATA: usize = 64;
/// Domain `maxVersions` 0 means this.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    Active,
    Deactivated,
    Deleted,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Active => "active",
            VersionState::Deactivated => "deactivated",
            VersionState::Deleted => "deleted",
        }
    }

    /// Parses the regional (lowercase) spelling; the centralized uppercase one is tolerated.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "active" => Some(VersionState::Active),
            "deactivated" => Some(VersionState::Deactivated),
            "deleted" => Some(VersionState::Deleted),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Version {
    pub id: u32,
    pub state: VersionState,
    pub created_at: DateTime<Utc>,
    pub deactivated_at: Option<DateTime<Utc>>,
    /// `None` once the version is `deleted` (erased).
    pub data: Option<Data>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Secret {
    pub path: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Raw per-secret values as stored (0 / "0s" / false mean "use the domain's").
    pub cas_required: bool,
    pub max_versions: u32,
    pub deactivate_version_after: String,
    pub custom_metadata: BTreeMap<String, String>,
    pub current_version: u32,
    /// 0 until a version has been pruned (Vault semantics), then the lowest remaining id.
    pub oldest_version: u32,
    pub versions: BTreeMap<u32, Version>,
}

impl Secret {
    pub fn current(&self) -> Option<&Version> {
        self.versions.get(&self.current_version)
    }
}

/// Domain-wide defaults (`/v2/secretConfig`, `/v1/secret/config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    pub cas_required: bool,
    pub deactivate_version_after: String,
    pub max_versions: u32,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            cas_required: false,
            deactivate_version_after: "0s".to_owned(),
            max_versions: DEFAULT_MAX_VERSIONS,
        }
    }
}

/// Fields a client may change on a secret; `None` leaves the stored value alone.
#[derive(Clone, Debug, Default)]
pub struct MetadataUpdate {
    pub cas_required: Option<bool>,
    pub max_versions: Option<u32>,
    pub deactivate_version_after: Option<String>,
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

/// Fields a client may change on the domain configuration.
#[derive(Clone, Debug, Default)]
pub struct ConfigUpdate {
    pub cas_required: Option<bool>,
    pub deactivate_version_after: Option<String>,
    pub max_versions: Option<u32>,
}

/// What the KV2 `delete`/`undelete`/`destroy` endpoints do to a list of versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvVersionOp {
    Delete,
    Undelete,
    Destroy,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("secret not found")]
    SecretNotFound,
    #[error("version {0} not found")]
    VersionNotFound(u32),
    #[error("a secret already exists at this path")]
    AlreadyExists,
    #[error("{0}")]
    Invalid(String),
    #[error("check-and-set (cas) parameter {given} did not match the current version {current}")]
    CasMismatch { given: u32, current: u32 },
    #[error("check-and-set (cas) parameter required for this secret but missing")]
    CasRequired,
}

type Result<T> = std::result::Result<T, StoreError>;

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn path_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '=' | '@' | '-')
}

/// `^[a-zA-Z0-9_.:/=@-]+$`, at most 255 characters, no leading/trailing `/` and no `//`.
pub fn validate_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(invalid("SecretFieldRequired: path is required"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(invalid(format!(
            "SecretPathMaxExceeded: path is {} characters, at most {MAX_PATH_LEN} allowed",
            path.len()
        )));
    }
    if !path.chars().all(path_char_ok) {
        return Err(invalid(
            "SecretPathInvalidCharacter: path must match ^[a-zA-Z0-9_.:/=@-]+$",
        ));
    }
    if path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        return Err(invalid(
            "SecretPathInvalidCharacter: path must not start or end with '/' nor contain '//'",
        ));
    }
    Ok(())
}

/// Data must be a JSON object whose serialization fits in 64 KB.
pub fn validate_data(data: &Data) -> Result<()> {
    let size = serde_json::to_vec(data)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_DATA_BYTES {
        return Err(invalid(format!(
            "SecretDataMaxExceeded: data is {size} bytes, at most {MAX_DATA_BYTES} allowed"
        )));
    }
    Ok(())
}

/// Turns an arbitrary JSON value into `Data`, rejecting non-objects.
pub fn data_from_value(value: Value) -> Result<Data> {
    match value {
        Value::Object(map) => {
            validate_data(&map)?;
            Ok(map)
        }
        _ => Err(invalid(
            "SecretDataInvalidKeyValueJson: data must be a JSON object in key value format",
        )),
    }
}

fn meta_char_ok(c: char) -> bool {
    path_char_ok(c) || c == '%'
}

pub fn validate_custom_metadata(meta: &BTreeMap<String, String>) -> Result<()> {
    if meta.len() > MAX_CUSTOM_METADATA {
        return Err(invalid(format!(
            "SecretCustomMetadataMaxExceeded: {} entries, at most {MAX_CUSTOM_METADATA} allowed",
            meta.len()
        )));
    }
    for (k, v) in meta {
        if k.is_empty() {
            return Err(invalid(
                "SecretCustomMetadataKeyMinRequired: key must not be empty",
            ));
        }
        if k.len() > 128 {
            return Err(invalid(
                "SecretCustomMetadataKeyMaxExceeded: key longer than 128 characters",
            ));
        }
        if !k.chars().all(meta_char_ok) {
            return Err(invalid(
                "SecretCustomMetadataKeyInvalidCharacter: key must match ^[a-zA-Z0-9_.:/=@%-]+$",
            ));
        }
        if v.is_empty() || v.len() > 512 || !v.chars().all(meta_char_ok) {
            return Err(invalid(
                "SecretCustomMetadataValueInvalid: value must be 1-512 characters matching ^[a-zA-Z0-9_.:/=@%-]+$",
            ));
        }
    }
    Ok(())
}

pub fn validate_max_versions(n: u32) -> Result<()> {
    if n > MAX_VERSION {
        return Err(invalid(format!(
            "SecretMaxVersionsMaxExceeded: maxVersions {n} above {MAX_VERSION}"
        )));
    }
    Ok(())
}

/// Parses a Vault duration (`1d`, `1h30m`, `10h30m10s`, `0s`, or a bare number of seconds)
/// into seconds.
pub fn parse_duration(s: &str) -> Result<u64> {
    let err = || {
        invalid(format!(
            "SecretDeactivateVersionAfterInvalidDuration: {s:?} is not a duration like 1d, 1h30m or 0s"
        ))
    };
    if s.is_empty() {
        return Err(err());
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return s.parse().map_err(|_| err());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n: u64 = num.parse().map_err(|_| err())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    if !num.is_empty() {
        return Err(err());
    }
    Ok(total)
}

fn validate_metadata_update(m: &MetadataUpdate) -> Result<()> {
    if let Some(n) = m.max_versions {
        validate_max_versions(n)?;
    }
    if let Some(d) = &m.deactivate_version_after {
        parse_duration(d)?;
    }
    if let Some(c) = &m.custom_metadata {
        validate_custom_metadata(c)?;
    }
    Ok(())
}

fn validate_version_id(n: u32) -> Result<()> {
    if n == 0 {
        return Err(invalid(
            "SecretVersionMinRequired: version must be at least 1",
        ));
    }
    if n > MAX_VERSION {
        return Err(invalid(format!(
            "SecretVersionMaxExceeded: version must be at most {MAX_VERSION}"
        )));
    }
    Ok(())
}

fn check_cas(required: bool, cas: Option<u32>, current: u32) -> Result<()> {
    match cas {
        None if required => Err(StoreError::CasRequired),
        None => Ok(()),
        Some(c) if c > MAX_VERSION => Err(invalid(format!(
            "SecretCasMaxExceeded: cas must be at most {MAX_VERSION}"
        ))),
        Some(c) if c == current => Ok(()),
        Some(c) => Err(StoreError::CasMismatch { given: c, current }),
    }
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Store {
    pub config: DomainConfig,
    pub secrets: BTreeMap<String, Secret>,
}

impl Store {
    pub fn new() -> Self {
        Store::default()
    }

    // --- effective settings -------------------------------------------------------------------

    pub fn effective_cas_required(&self, s: &Secret) -> bool {
        s.cas_required || self.config.cas_required
    }

    pub fn effective_max_versions(&self, s: &Secret) -> u32 {
        if s.max_versions != 0 {
            s.max_versions
        } else if self.config.max_versions != 0 {
            self.config.max_versions
        } else {
            DEFAULT_MAX_VERSIONS
        }
    }

    /// Seconds after creation at which a version is deactivated; 0 = never.
    pub fn effective_deactivate_after(&self, s: &Secret) -> u64 {
        match parse_duration(&s.deactivate_version_after) {
            Ok(n) if n > 0 => n,
            _ => parse_duration(&self.config.deactivate_version_after).unwrap_or(0),
        }
    }

    // --- lazy expiry --------------------------------------------------------------------------

    /// Deactivates versions older than the effective `deactivateVersionAfter`, including the
    /// current one (Vault-like). Evaluated on access so no timer is needed.
    fn expire(&mut self, path: &str, now: DateTime<Utc>) {
        let Some(secret) = self.secrets.get(path) else {
            return;
        };
        let after = self.effective_deactivate_after(secret);
        if after == 0 {
            return;
        }
        let after = chrono::Duration::seconds(i64::try_from(after).unwrap_or(i64::MAX / 2_000));
        if let Some(secret) = self.secrets.get_mut(path) {
            for v in secret.versions.values_mut() {
                if v.state == VersionState::Active {
                    let at = v.created_at + after;
                    if at <= now {
                        v.state = VersionState::Deactivated;
                        v.deactivated_at = Some(at);
                    }
                }
            }
        }
    }

    fn secret_mut(&mut self, path: &str, now: DateTime<Utc>) -> Result<&mut Secret> {
        self.expire(path, now);
        self.secrets.get_mut(path).ok_or(StoreError::SecretNotFound)
    }

    /// Reads a secret (after applying expiry).
    pub fn get(&mut self, path: &str, now: DateTime<Utc>) -> Result<&Secret> {
        self.secret_mut(path, now).map(|s| &*s)
    }

    /// Reads one version of a secret (after applying expiry).
    pub fn get_version(&mut self, path: &str, id: u32, now: DateTime<Utc>) -> Result<&Version> {
        validate_version_id(id)?;
        let s = self.secret_mut(path, now)?;
        s.versions.get(&id).ok_or(StoreError::VersionNotFound(id))
    }

    /// One page of secrets in path order, starting after `after`; `true` if more follow.
    pub fn list(
        &mut self,
        after: Option<&str>,
        size: usize,
        now: DateTime<Utc>,
    ) -> (Vec<&Secret>, bool) {
        let paths: Vec<String> = match after {
            Some(a) => self
                .secrets
                .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                .take(size + 1)
                .map(|(k, _)| k.clone())
                .collect(),
            None => self.secrets.keys().take(size + 1).cloned().collect(),
        };
        let more = paths.len() > size;
        for p in paths.iter().take(size) {
            self.expire(p, now);
        }
        let page = paths
            .iter()
            .take(size)
            .filter_map(|p| self.secrets.get(p))
            .collect();
        (page, more)
    }

    /// One page of a secret's versions in id order, starting after `after`.
    pub fn list_versions(
        &mut self,
        path: &str,
        after: Option<u32>,
        size: usize,
        now: DateTime<Utc>,
    ) -> Result<(Vec<&Version>, bool)> {
        let s = self.secret_mut(path, now)?;
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut page: Vec<&Version> = s
            .versions
            .range(start..)
            .map(|(_, v)| v)
            .take(size + 1)
            .collect();
        let more = page.len() > size;
        page.truncate(size);
        Ok((page, more))
    }

    // --- writes --------------------------------------------------------------------------------

    /// `POST /v2/secret`: creates a secret with version 1. Fails if the path exists.
    pub fn create(
        &mut self,
        path: &str,
        data: Data,
        meta: MetadataUpdate,
        now: DateTime<Utc>,
    ) -> Result<&Secret> {
        validate_path(path)?;
        validate_data(&data)?;
        validate_metadata_update(&meta)?;
        if self.secrets.contains_key(path) {
            return Err(StoreError::AlreadyExists);
        }
        let mut secret = new_secret(path, now);
        apply_metadata(&mut secret, meta);
        push_version(&mut secret, data, now)?;
        self.secrets.insert(path.to_owned(), secret);
        self.prune(path);
        self.get(path, now)
    }

    /// `PUT /v2/secret/{path}`: metadata and/or a new version. Metadata is applied before the
    /// CAS check (so switching `casRequired` off lets the same call write without `cas`), but
    /// the whole call is atomic: nothing changes when it fails.
    pub fn update(
        &mut self,
        path: &str,
        meta: Option<MetadataUpdate>,
        data: Option<Data>,
        cas: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<&Secret> {
        if let Some(m) = &meta {
            validate_metadata_update(m)?;
        }
        if let Some(d) = &data {
            validate_data(d)?;
        }
        let mut secret = self.secret_mut(path, now)?.clone();
        if let Some(m) = meta {
            apply_metadata(&mut secret, m);
            secret.updated_at = now;
        }
        let required = data.is_some() && self.effective_cas_required(&secret);
        check_cas(required, cas, secret.current_version)?;
        if let Some(d) = data {
            push_version(&mut secret, d, now)?;
        }
        self.secrets.insert(path.to_owned(), secret);
        self.prune(path);
        self.get(path, now)
    }

    /// Adds a version (`POST /v2/secret/{path}/version`, KV2 `data` writes). With
    /// `create_if_missing` (KV2) an absent secret is created; `cas` 0 then means "only if absent".
    pub fn add_version(
        &mut self,
        path: &str,
        data: Data,
        cas: Option<u32>,
        create_if_missing: bool,
        now: DateTime<Utc>,
    ) -> Result<&Version> {
        validate_data(&data)?;
        self.expire(path, now);
        let mut secret = match self.secrets.get(path) {
            Some(s) => s.clone(),
            None if create_if_missing => {
                validate_path(path)?;
                new_secret(path, now)
            }
            None => return Err(StoreError::SecretNotFound),
        };
        check_cas(
            self.effective_cas_required(&secret),
            cas,
            secret.current_version,
        )?;
        let id = push_version(&mut secret, data, now)?;
        self.secrets.insert(path.to_owned(), secret);
        self.prune(path);
        self.get_version(path, id, now)
    }

    /// `PUT /v2/secret/{path}/version/{n}`: state change. `deleted` is final.
    pub fn set_version_state(
        &mut self,
        path: &str,
        id: u32,
        state: VersionState,
        now: DateTime<Utc>,
    ) -> Result<&Version> {
        validate_version_id(id)?;
        let s = self.secret_mut(path, now)?;
        let v = s
            .versions
            .get_mut(&id)
            .ok_or(StoreError::VersionNotFound(id))?;
        transition(v, state, now)?;
        s.updated_at = now;
        self.get_version(path, id, now)
    }

    /// `DELETE /v2/secret/{path}`, KV2 `DELETE metadata/{path}`.
    pub fn delete(&mut self, path: &str) -> Result<()> {
        self.secrets
            .remove(path)
            .map(|_| ())
            .ok_or(StoreError::SecretNotFound)
    }

    /// KV2 `POST metadata/{path}`: updates metadata, creating a version-less secret if absent.
    pub fn upsert_metadata(
        &mut self,
        path: &str,
        meta: MetadataUpdate,
        now: DateTime<Utc>,
    ) -> Result<&Secret> {
        validate_path(path)?;
        validate_metadata_update(&meta)?;
        self.expire(path, now);
        let secret = self
            .secrets
            .entry(path.to_owned())
            .or_insert_with(|| new_secret(path, now));
        apply_metadata(secret, meta);
        secret.updated_at = now;
        self.prune(path);
        self.get(path, now)
    }

    /// KV2 `delete`/`undelete`/`destroy` of listed versions. Unknown versions are ignored, as
    /// are undeletes of destroyed versions (Vault behaviour).
    pub fn kv_versions(
        &mut self,
        path: &str,
        ids: &[u32],
        op: KvVersionOp,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let s = self.secret_mut(path, now)?;
        for id in ids {
            let Some(v) = s.versions.get_mut(id) else {
                continue;
            };
            let target = match (op, v.state) {
                (_, VersionState::Deleted) => continue,
                (KvVersionOp::Delete, _) => VersionState::Deactivated,
                (KvVersionOp::Undelete, _) => VersionState::Active,
                (KvVersionOp::Destroy, _) => VersionState::Deleted,
            };
            transition(v, target, now)?;
        }
        s.updated_at = now;
        Ok(())
    }

    /// Child names one level below `prefix` (`""` = root); folders end with `/`. Sorted, unique.
    pub fn kv_list(&self, prefix: &str) -> Vec<String> {
        let base = if prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.trim_end_matches('/'))
        };
        let mut keys = std::collections::BTreeSet::new();
        for path in self
            .secrets
            .range::<str, _>((
                std::ops::Bound::Included(base.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&base))
        {
            let rest = &path[base.len()..];
            let key = match rest.find('/') {
                Some(i) => format!("{}/", &rest[..i]),
                None => rest.to_owned(),
            };
            keys.insert(key);
        }
        keys.into_iter().collect()
    }

    // --- domain configuration -----------------------------------------------------------------

    pub fn config(&self) -> &DomainConfig {
        &self.config
    }

    pub fn put_config(&mut self, update: ConfigUpdate) -> Result<&DomainConfig> {
        if let Some(n) = update.max_versions {
            validate_max_versions(n)?;
        }
        if let Some(d) = &update.deactivate_version_after {
            parse_duration(d)?;
        }
        if let Some(b) = update.cas_required {
            self.config.cas_required = b;
        }
        if let Some(d) = update.deactivate_version_after {
            self.config.deactivate_version_after = d;
        }
        if let Some(n) = update.max_versions {
            self.config.max_versions = n;
        }
        Ok(&self.config)
    }

    /// Removes the oldest versions beyond the effective `maxVersions`.
    fn prune(&mut self, path: &str) {
        let Some(secret) = self.secrets.get(path) else {
            return;
        };
        let max = self.effective_max_versions(secret) as usize;
        let Some(secret) = self.secrets.get_mut(path) else {
            return;
        };
        let mut pruned = false;
        while secret.versions.len() > max {
            secret.versions.pop_first();
            pruned = true;
        }
        if pruned {
            secret.oldest_version = secret.versions.keys().next().copied().unwrap_or(0);
        }
    }
}

fn new_secret(path: &str, now: DateTime<Utc>) -> Secret {
    Secret {
        path: path.to_owned(),
        created_at: now,
        updated_at: now,
        cas_required: false,
        max_versions: 0,
        deactivate_version_after: "0s".to_owned(),
        custom_metadata: BTreeMap::new(),
        current_version: 0,
        oldest_version: 0,
        versions: BTreeMap::new(),
    }
}

fn apply_metadata(s: &mut Secret, m: MetadataUpdate) {
    if let Some(b) = m.cas_required {
        s.cas_required = b;
    }
    if let Some(n) = m.max_versions {
        s.max_versions = n;
    }
    if let Some(d) = m.deactivate_version_after {
        s.deactivate_version_after = d;
    }
    if let Some(c) = m.custom_metadata {
        s.custom_metadata = c;
    }
}

fn push_version(s: &mut Secret, data: Data, now: DateTime<Utc>) -> Result<u32> {
    let id = s.current_version + 1;
    if id > MAX_VERSION {
        return Err(invalid(format!(
            "SecretVersionMaxExceeded: a secret holds at most {MAX_VERSION} versions"
        )));
    }
    s.versions.insert(
        id,
        Version {
            id,
            state: VersionState::Active,
            created_at: now,
            deactivated_at: None,
            data: Some(data),
        },
    );
    s.current_version = id;
    s.updated_at = now;
    Ok(id)
}

fn transition(v: &mut Version, to: VersionState, now: DateTime<Utc>) -> Result<()> {
    match (v.state, to) {
        (VersionState::Deleted, VersionState::Deleted) => Ok(()),
        (VersionState::Deleted, _) => Err(invalid(format!(
            "version {} is deleted and cannot be restored",
            v.id
        ))),
        (_, VersionState::Active) => {
            v.state = VersionState::Active;
            v.deactivated_at = None;
            Ok(())
        }
        (from, VersionState::Deactivated) => {
            if from != VersionState::Deactivated {
                v.state = VersionState::Deactivated;
                v.deactivated_at = Some(now);
            }
            Ok(())
        }
        (_, VersionState::Deleted) => {
            v.state = VersionState::Deleted;
            v.deactivated_at.get_or_insert(now);
            v.data = None;
            Ok(())
        }
    }
}

/// Replaces every leaf of `data` by `null`, descending `depth` levels (0 = unlimited).
pub fn subkeys(data: &Data, depth: u32) -> Data {
    fn walk(map: &Data, level: u32, depth: u32) -> Data {
        map.iter()
            .map(|(k, v)| {
                let sub = match v {
                    Value::Object(inner) if depth == 0 || level < depth => {
                        Value::Object(walk(inner, level + 1, depth))
                    }
                    _ => Value::Null,
                };
                (k.clone(), sub)
            })
            .collect()
    }
    walk(data, 1, depth)
}

/// RFC 7386 JSON merge patch of `patch` onto `target`.
pub fn merge_patch(target: &mut Data, patch: &Data) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Data::new()));
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                } else {
                    let mut fresh = Data::new();
                    merge_patch(&mut fresh, p);
                    *entry = Value::Object(fresh);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn d(v: Value) -> Data {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn create_then_conflict() {
        let mut s = Store::new();
        let sec = s
            .create("a/b", d(json!({"k":"v"})), MetadataUpdate::default(), t(0))
            .unwrap();
        assert_eq!(sec.current_version, 1);
        assert_eq!(sec.oldest_version, 0);
        assert_eq!(
            s.create("a/b", d(json!({})), MetadataUpdate::default(), t(1))
                .unwrap_err(),
            StoreError::AlreadyExists
        );
    }

    #[test]
    fn prunes_oldest_beyond_max_versions() {
        let mut s = Store::new();
        let meta = MetadataUpdate {
            max_versions: Some(3),
            ..Default::default()
        };
        s.create("p", d(json!({"v":1})), meta, t(0)).unwrap();
        for i in 2..=5 {
            s.add_version("p", d(json!({"v":i})), None, false, t(i))
                .unwrap();
        }
        let sec = s.get("p", t(10)).unwrap();
        assert_eq!(sec.current_version, 5);
        assert_eq!(
            sec.versions.keys().copied().collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(sec.oldest_version, 3);
    }

    #[test]
    fn domain_max_versions_applies_when_secret_has_zero() {
        let mut s = Store::new();
        s.put_config(ConfigUpdate {
            max_versions: Some(2),
            ..Default::default()
        })
        .unwrap();
        s.create("p", d(json!({})), MetadataUpdate::default(), t(0))
            .unwrap();
        s.update("p", None, Some(d(json!({"a":1}))), None, t(1))
            .unwrap();
        s.update("p", None, Some(d(json!({"a":1}))), None, t(2))
            .unwrap();
        let sec = s.get("p", t(3)).unwrap();
        assert_eq!(sec.versions.len(), 2);
        assert_eq!(
            sec.current_version, 3,
            "identical data still makes a version"
        );
    }

    #[test]
    fn deleted_version_cannot_be_restored() {
        let mut s = Store::new();
        s.create("p", d(json!({"a":1})), MetadataUpdate::default(), t(0))
            .unwrap();
        let v = s
            .set_version_state("p", 1, VersionState::Deleted, t(1))
            .unwrap();
        assert!(v.data.is_none());
        assert!(matches!(
            s.set_version_state("p", 1, VersionState::Active, t(2)),
            Err(StoreError::Invalid(_))
        ));
        let v = s
            .set_version_state("p", 1, VersionState::Deleted, t(2))
            .unwrap();
        assert_eq!(v.state, VersionState::Deleted);
    }

    #[test]
    fn deactivate_and_reactivate_keeps_data() {
        let mut s = Store::new();
        s.create("p", d(json!({"a":1})), MetadataUpdate::default(), t(0))
            .unwrap();
        let v = s
            .set_version_state("p", 1, VersionState::Deactivated, t(1))
            .unwrap();
        assert_eq!(v.deactivated_at, Some(t(1)));
        assert_eq!(s.get("p", t(2)).unwrap().current_version, 1);
        let v = s
            .set_version_state("p", 1, VersionState::Active, t(3))
            .unwrap();
        assert_eq!(v.data, Some(d(json!({"a":1}))));
        assert_eq!(v.deactivated_at, None);
    }

    #[test]
    fn cas_rules() {
        let mut s = Store::new();
        let meta = MetadataUpdate {
            cas_required: Some(true),
            ..Default::default()
        };
        s.create("p", d(json!({})), meta, t(0)).unwrap();
        assert_eq!(
            s.update("p", None, Some(d(json!({}))), None, t(1))
                .unwrap_err(),
            StoreError::CasRequired
        );
        assert_eq!(
            s.update("p", None, Some(d(json!({}))), Some(7), t(1))
                .unwrap_err(),
            StoreError::CasMismatch {
                given: 7,
                current: 1
            }
        );
        assert!(
            s.get("p", t(1)).unwrap().cas_required,
            "failed call changed nothing"
        );
        s.update("p", None, Some(d(json!({}))), Some(1), t(1))
            .unwrap();
        // Metadata in the same call is applied before the CAS check.
        let off = MetadataUpdate {
            cas_required: Some(false),
            ..Default::default()
        };
        let sec = s
            .update("p", Some(off), Some(d(json!({}))), None, t(2))
            .unwrap();
        assert_eq!(sec.current_version, 3);
        // Domain CAS makes it required again.
        s.put_config(ConfigUpdate {
            cas_required: Some(true),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            s.add_version("p", d(json!({})), None, false, t(3))
                .unwrap_err(),
            StoreError::CasRequired
        );
    }

    #[test]
    fn kv_cas_zero_means_only_if_absent() {
        let mut s = Store::new();
        s.add_version("k", d(json!({"a":1})), Some(0), true, t(0))
            .unwrap();
        assert_eq!(
            s.add_version("k", d(json!({"a":2})), Some(0), true, t(1))
                .unwrap_err(),
            StoreError::CasMismatch {
                given: 0,
                current: 1
            }
        );
    }

    #[test]
    fn expiry_is_lazy_and_includes_current() {
        let mut s = Store::new();
        let meta = MetadataUpdate {
            deactivate_version_after: Some("1h".into()),
            ..Default::default()
        };
        s.create("p", d(json!({})), meta, t(0)).unwrap();
        s.add_version("p", d(json!({})), None, false, t(1800))
            .unwrap();
        let sec = s.get("p", t(3600)).unwrap();
        assert_eq!(sec.versions[&1].state, VersionState::Deactivated);
        assert_eq!(sec.versions[&1].deactivated_at, Some(t(3600)));
        assert_eq!(sec.versions[&2].state, VersionState::Active);
        let sec = s.get("p", t(5400)).unwrap();
        assert_eq!(sec.versions[&2].state, VersionState::Deactivated);
    }

    #[test]
    fn path_validation() {
        for ok in ["a", "a/b", "A-z_0.9:x=y@z"] {
            validate_path(ok).unwrap();
        }
        let long = "a".repeat(256);
        for bad in ["", "/a", "a/", "a//b", "a b", "a%2Fb", "a+b", long.as_str()] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn data_limits() {
        let big = d(json!({"k": "x".repeat(MAX_DATA_BYTES)}));
        assert!(validate_data(&big).is_err());
        let fits = d(json!({"k": "x".repeat(MAX_DATA_BYTES - 10)}));
        validate_data(&fits).unwrap();
        assert!(data_from_value(json!("str")).is_err());
        assert!(data_from_value(json!([1])).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s").unwrap(), 0);
        assert_eq!(parse_duration("1d").unwrap(), 86_400);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400);
        assert_eq!(parse_duration("10h30m10s").unwrap(), 37_810);
        assert_eq!(parse_duration("90").unwrap(), 90);
        for bad in ["", "1x", "h", "1h3", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn custom_metadata_rules() {
        let mut m = BTreeMap::new();
        m.insert("team".to_owned(), "core".to_owned());
        validate_custom_metadata(&m).unwrap();
        m.insert("bad".to_owned(), "has space".to_owned());
        assert!(validate_custom_metadata(&m).is_err());
        let many: BTreeMap<_, _> = (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(validate_custom_metadata(&many).is_err());
    }

    #[test]
    fn list_pages_in_path_order() {
        let mut s = Store::new();
        for i in 0..25 {
            s.create(
                &format!("s{i:02}"),
                d(json!({})),
                MetadataUpdate::default(),
                t(0),
            )
            .unwrap();
        }
        let (p1, more) = s.list(None, 10, t(1));
        assert!(more);
        let last = p1.last().unwrap().path.clone();
        assert_eq!(last, "s09");
        let (p2, _) = s.list(Some(&last), 10, t(1));
        assert_eq!(p2[0].path, "s10");
        let (p3, more) = s.list(Some("s19"), 10, t(1));
        assert_eq!(p3.len(), 5);
        assert!(!more);
    }

    #[test]
    fn kv_list_one_level() {
        let mut s = Store::new();
        for p in ["a", "a/b", "a/c/d", "b/x", "c"] {
            s.add_version(p, d(json!({})), None, true, t(0)).unwrap();
        }
        assert_eq!(s.kv_list(""), vec!["a", "a/", "b/", "c"]);
        assert_eq!(s.kv_list("a"), vec!["b", "c/"]);
        assert_eq!(s.kv_list("a/"), vec!["b", "c/"]);
        assert!(s.kv_list("zzz").is_empty());
    }

    #[test]
    fn kv_version_ops() {
        let mut s = Store::new();
        s.add_version("p", d(json!({"a":1})), None, true, t(0))
            .unwrap();
        s.add_version("p", d(json!({"a":2})), None, true, t(1))
            .unwrap();
        s.kv_versions("p", &[1, 2, 99], KvVersionOp::Delete, t(2))
            .unwrap();
        assert_eq!(
            s.get_version("p", 2, t(2)).unwrap().state,
            VersionState::Deactivated
        );
        s.kv_versions("p", &[2], KvVersionOp::Undelete, t(3))
            .unwrap();
        assert_eq!(
            s.get_version("p", 2, t(3)).unwrap().state,
            VersionState::Active
        );
        s.kv_versions("p", &[1], KvVersionOp::Destroy, t(4))
            .unwrap();
        s.kv_versions("p", &[1], KvVersionOp::Undelete, t(5))
            .unwrap();
        assert_eq!(
            s.get_version("p", 1, t(5)).unwrap().state,
            VersionState::Deleted
        );
    }

    #[test]
    fn subkeys_and_merge() {
        let data = d(json!({"a":1,"n":{"x":true,"y":{"z":1}}}));
        assert_eq!(
            Value::Object(subkeys(&data, 0)),
            json!({"a":null,"n":{"x":null,"y":{"z":null}}})
        );
        assert_eq!(Value::Object(subkeys(&data, 1)), json!({"a":null,"n":null}));
        let mut target = data.clone();
        merge_patch(&mut target, &d(json!({"a":null,"n":{"x":false},"b":"new"})));
        assert_eq!(
            Value::Object(target),
            json!({"n":{"x":false,"y":{"z":1}},"b":"new"})
        );
    }
}

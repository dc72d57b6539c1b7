//! `OkmsClient`: one method per REST v2 operation of the regional Secret API
//! (`https://{host}/api/{okmsId}/v2/…`, API.md §6), with retries, a shared rate limit and a
//! per-attempt observer hook for metrics.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use url::Url;
use zeroize::Zeroizing;

use super::error::{ErrorCategory, ErrorCode, ErrorKind, OkmsError, sanitize_messages};
use super::model::{
    CreateSecretBody, ErrorBody, MetadataEnvelope, MetadataSpec, Page, Secret, SecretConfig,
    SecretData, SecretMetadata, SecretVersion, StateBody, UpdateSecretBody, VersionBody,
    VersionState,
};
use super::retry::{
    Idempotency, RateLimit, RateLimiter, RetryPolicy, may_have_reached_server, parse_retry_after,
    should_retry,
};
use super::tls;
use crate::fence::Fence;
use crate::isolation::{self, EndpointForm};

pub type Result<T, E = OkmsError> = std::result::Result<T, E>;

const PAGE_SIZE_HEADER: &str = "X-Pagination-Size";
const CURSOR_HEADER: &str = "X-Pagination-Cursor";
const NEXT_CURSOR_HEADER: &str = "X-Pagination-Cursor-Next";
/// Page size bounds of the API (API.md §4.7).
const MIN_PAGE_SIZE: u32 = 10;
const MAX_PAGE_SIZE: u32 = 100;
/// Most versions OKMS keeps of one secret (API.md §4.7: version ids are 1–24000): the bound on
/// `list_all_versions`, against a server that never stops paginating.
pub const MAX_VERSIONS: usize = 24_000;
/// Bound on `list_all_secrets` (the operator itself never lists a whole domain).
pub const MAX_LISTED_SECRETS: usize = 100_000;
/// Longest pagination cursor accepted (it is sent back as a header).
const MAX_CURSOR_BYTES: usize = 4096;
/// Largest response body read (a full page of 100 secrets with 64 KB of data each fits).
const MAX_BODY_BYTES: usize = 16 << 20;

/// How the client authenticates.
#[derive(Clone)]
pub enum Auth {
    /// An OKMS access certificate (PEM chain) and its private key (PEM).
    Mtls {
        cert_pem: Vec<u8>,
        key_pem: Zeroizing<Vec<u8>>,
    },
    /// A personal access token or OAuth2 token, sent as `Authorization: Bearer`.
    Token(Zeroizing<String>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Mtls { cert_pem, .. } => f
                .debug_struct("Mtls")
                .field("cert_pem", &format_args!("<{} bytes>", cert_pem.len()))
                .field("key_pem", &format_args!("<redacted>"))
                .finish(),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// What the observer learns about each HTTP attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// Stable operation name, the same as the emulator's counters: `secret.get`,
    /// `secret.getData`, `secret.create`, `secret.update`, `secret.delete`, `secret.list`,
    /// `version.list`, `version.get`, `version.getData`, `version.create`, `version.update`,
    /// `config.get`, `config.put`.
    pub operation: &'static str,
    /// HTTP status, `None` when no answer arrived (timeout, transport error).
    pub status: Option<u16>,
    pub duration: Duration,
    /// 1 for the first try, 2 for the first retry, …
    pub attempt: u32,
}

/// Called once per HTTP attempt (e.g. to feed Prometheus metrics).
pub type Observer = Arc<dyn Fn(&RequestRecord) + Send + Sync>;

/// Everything needed to build an [`OkmsClient`].
#[derive(Clone)]
pub struct ClientConfig {
    /// Regional REST endpoint, e.g. `https://eu-west-rbx.okms.ovh.net` (no `/api` suffix).
    pub endpoint: Url,
    pub okms_id: String,
    pub auth: Auth,
    /// PEM bundle trusted in addition to the OS roots.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Per-request timeout (the whole exchange, body included).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Shared by all clones of the client.
    pub rate_limit: Option<RateLimit>,
    pub observer: Option<Observer>,
    /// Checked before every attempt: while it is closed or lapsed nothing is sent.
    pub fence: Option<Fence>,
}

impl ClientConfig {
    pub fn new(endpoint: Url, okms_id: impl Into<String>, auth: Auth) -> Self {
        Self {
            endpoint,
            okms_id: okms_id.into(),
            auth,
            extra_roots_pem: None,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate_limit: None,
            observer: None,
            fence: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("okms_id", &self.okms_id)
            .field("auth", &self.auth)
            .field(
                "extra_roots_pem",
                &self.extra_roots_pem.as_ref().map(|p| p.len()),
            )
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("rate_limit", &self.rate_limit)
            .field("observer", &self.observer.is_some())
            .field("fence", &self.fence.is_some())
            .finish()
    }
}

/// Client of one OKMS domain. Cheap to clone; clones share the connection pool and rate limit.
///
/// Each call is tried at most `retry.max_attempts` times, each attempt bounded by `timeout`.
/// Reads, deletes, metadata-only updates, version-state and config updates are retried on 429,
/// 500, 502, 503, 504, timeouts and transport errors. Calls that create a version
/// (`create_secret`, `update_secret` with data, `create_version`) are retried only after a
/// connect error, 429 or 503, when the server certainly did not write: replaying them after a
/// timeout or a 500 could create a duplicate version, so that error is returned and the caller
/// (which re-reads before writing) decides. The observer is called synchronously after every
/// attempt and must be cheap.
#[derive(Clone)]
pub struct OkmsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: Url,
    okms_id: String,
    /// `{endpoint}/api/{okmsId}/v2`, without trailing slash.
    base: String,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    retry: RetryPolicy,
    limiter: Option<RateLimiter>,
    observer: Option<Observer>,
    fence: Option<Fence>,
    /// The `Date` of the last answer and when it arrived: OKMS's clock, for schedules that must
    /// not depend on this host's clock.
    server_clock: parking_lot::Mutex<Option<(chrono::DateTime<chrono::Utc>, Instant)>>,
}

impl fmt::Debug for OkmsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OkmsClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .field("okms_id", &self.inner.okms_id)
            .finish_non_exhaustive()
    }
}

/// One logical call, possibly sent several times.
struct Call<'a> {
    operation: &'static str,
    metric: &'static str,
    path: Option<&'a str>,
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    headers: HeaderMap,
    idempotency: Idempotency,
    cas_sent: bool,
}

struct Answer {
    status: StatusCode,
    version: reqwest::Version,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl OkmsClient {
    /// Validates the configuration and builds the HTTP client (TLS, pool). No request is sent.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let ClientConfig {
            endpoint,
            okms_id,
            auth,
            extra_roots_pem,
            timeout,
            retry,
            rate_limit,
            observer,
            fence,
        } = config;

        let plain_http = check_endpoint(&endpoint).map_err(OkmsError::invalid_config)?;
        if plain_http && matches!(auth, Auth::Mtls { .. }) {
            return Err(OkmsError::invalid_config(
                "mTLS authentication needs an https endpoint",
            ));
        }
        if okms_id.trim().is_empty() {
            return Err(OkmsError::invalid_config("okms_id must not be empty"));
        }
        if timeout.is_zero() {
            return Err(OkmsError::invalid_config(
                "timeout must be greater than zero",
            ));
        }
        if retry.max_attempts == 0 {
            return Err(OkmsError::invalid_config(
                "retry.max_attempts must be at least 1",
            ));
        }
        let limiter = match rate_limit {
            None => None,
            Some(limit) => Some(RateLimiter::new(limit).ok_or_else(|| {
                OkmsError::invalid_config("rate_limit.requests_per_second must be > 0")
            })?),
        };
        let authorization = match &auth {
            Auth::Token(token) => {
                let value = Zeroizing::new(format!("Bearer {}", token.as_str()));
                let mut header = HeaderValue::from_str(&value).map_err(|_| {
                    OkmsError::invalid_config("token contains characters invalid in an HTTP header")
                })?;
                header.set_sensitive(true);
                Some(header)
            }
            Auth::Mtls { .. } => None,
        };
        let tls = tls::client_config(&auth, extra_roots_pem.as_deref(), !plain_http)
            .map_err(OkmsError::invalid_config)?;

        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(!plain_http)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            // Detect a dead HTTP/2 connection before a request waits a whole timeout on it.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            // Never follow redirects: a redirect would carry the bearer token to another URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("okms-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OkmsError::invalid_config(format!("HTTP client: {}", chain(&e))))?;

        let base = format!(
            "{}/api/{}/v2",
            endpoint.as_str().trim_end_matches('/'),
            path_escape(&okms_id)
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoint,
                okms_id,
                base,
                authorization,
                timeout,
                retry,
                limiter,
                observer,
                fence,
                server_clock: parking_lot::Mutex::new(None),
            }),
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.inner.endpoint
    }

    pub fn okms_id(&self) -> &str {
        &self.inner.okms_id
    }

    /// OKMS's current time: the `Date` header of its last answer (to the second), plus the time
    /// elapsed since it arrived. `None` until a server sent one.
    pub fn server_now(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let (date, at) = (*self.inner.server_clock.lock())?;
        Some(date + chrono::Duration::from_std(at.elapsed()).unwrap_or_default())
    }

    // ---- secrets ------------------------------------------------------------------------------

    /// `GET /v2/secret`: one page of secrets. `page_size` is clamped to 10–100.
    pub async fn list_secrets(
        &self,
        page_size: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Secret>> {
        const OP: &str = "list secrets";
        let url = self.url(OP, None, "/secret", &[])?;
        let mut call = self.call(OP, "secret.list", None, Method::GET, url);
        set_pagination(&mut call.headers, page_size, cursor).map_err(|k| self.err(OP, None, k))?;
        let answer = self.execute(call).await?;
        self.page(OP, None, answer)
    }

    /// All secrets, following the cursors (at most [`MAX_LISTED_SECRETS`]).
    pub async fn list_all_secrets(&self) -> Result<Vec<Secret>> {
        self.walk(
            "list secrets",
            None,
            MAX_LISTED_SECRETS,
            |cursor| async move {
                self.list_secrets(Some(MAX_PAGE_SIZE), cursor.as_deref())
                    .await
            },
        )
        .await
    }

    /// `POST /v2/secret`: creates the secret with version 1.
    /// Retried only on connect errors, 429 and 503 (see `retry`).
    pub async fn create_secret(
        &self,
        path: &str,
        data: &SecretData,
        metadata: Option<&MetadataSpec>,
    ) -> Result<SecretMetadata> {
        const OP: &str = "create secret";
        check_path(path).map_err(|k| self.err(OP, Some(path), k))?;
        let url = self.url(OP, Some(path), "/secret", &[])?;
        let mut call = self.call(OP, "secret.create", Some(path), Method::POST, url);
        call.idempotency = Idempotency::CreatesVersion;
        call.body = Some(self.json_body(
            OP,
            Some(path),
            &CreateSecretBody {
                path,
                version: VersionBody { data },
                metadata,
            },
        )?);
        let answer = self.execute(call).await?;
        let envelope: MetadataEnvelope = self.decode(OP, Some(path), &answer.body)?;
        Ok(envelope.metadata)
    }

    /// `GET /v2/secret/{path}[?version=n][&includeData=true]`.
    pub async fn get_secret(
        &self,
        path: &str,
        version: Option<u32>,
        include_data: bool,
    ) -> Result<Secret> {
        const OP: &str = "get secret";
        check_path(path).map_err(|k| self.err(OP, Some(path), k))?;
        let version = version.map(|v| v.to_string());
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(v) = &version {
            query.push(("version", v));
        }
        if include_data {
            query.push(("includeData", "true"));
        }
        let url = self.url(OP, Some(path), &secret_path(path), &query)?;
        let metric = if include_data {
            "secret.getData"
        } else {
            "secret.get"
        };
        let answer = self
            .execute(self.call(OP, metric, Some(path), Method::GET, url))
            .await?;
        self.decode(OP, Some(path), &answer.body)
    }

    /// `PUT /v2/secret/{path}[?cas=n]`: updates metadata and/or adds a version (when `data`).
    /// With `data` the call is retried only on connect errors, 429 and 503.
    pub async fn update_secret(
        &self,
        path: &str,
        cas: Option<u32>,
        metadata: Option<&MetadataSpec>,
        data: Option<&SecretData>,
    ) -> Result<SecretMetadata> {
        const OP: &str = "update secret";
        check_path(path).map_err(|k| self.err(OP, Some(path), k))?;
        let cas_text = cas.map(|c| c.to_string());
        let query: Vec<(&str, &str)> = cas_text.iter().map(|c| ("cas", c.as_str())).collect();
        let url = self.url(OP, Some(path), &secret_path(path), &query)?;
        let mut call = self.call(OP, "secret.update", Some(path), Method::PUT, url);
        call.cas_sent = cas.is_some();
        if data.is_some() {
            call.idempotency = Idempotency::CreatesVersion;
        }
        call.body = Some(self.json_body(
            OP,
            Some(path),
            &UpdateSecretBody {
                metadata,
                version: data.map(|data| VersionBody { data }),
            },
        )?);
        let answer = self.execute(call).await?;
        let envelope: MetadataEnvelope = self.decode(OP, Some(path), &answer.body)?;
        Ok(envelope.metadata)
    }

    /// `DELETE /v2/secret/{path}`: the secret and all its versions.
    ///
    /// A 404 is returned as an error, except after a retry whose earlier attempt may have
    /// deleted the secret already (timeout, 5xx): then the delete is reported as done.
    pub async fn delete_secret(&self, path: &str) -> Result<()> {
        const OP: &str = "delete secret";
        check_path(path).map_err(|k| self.err(OP, Some(path), k))?;
        let url = self.url(OP, Some(path), &secret_path(path), &[])?;
        match self
            .execute(self.call(OP, "secret.delete", Some(path), Method::DELETE, url))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() && e.after_ambiguous_attempt => Ok(()),
            Err(e) => Err(e),
        }
    }

    // ---- versions -----------------------------------------------------------------------------

    /// `GET /v2/secret/{path}/version`: one page of versions (without data).
    pub async fn list_versions(
        &self,
        path: &str,
        page_size: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<SecretVersion>> {
        const OP: &str = "list versions";
        check_path(path).map_err(|k| self.err(OP, Some(path), k))?;
        let url = self.url(
            OP,
            Some(path),
            &format!("{}/version", secret_path(path)),
            &[],
        )?;
        let mut call = self.call(OP, "version.list", Some(path), Method::GET, url);
        set_pagination(&mut call.headers, page_size, cursor)
            .map_err(|k| self.err(OP, Some(path), k))?;
        let answer = self.execute(call).await?;
        self.page(OP, Some(path), answer)
    }

    /// All versions of a secret, following the cursors (at most [`MAX_VERSIONS`], the most
    /// OKMS keeps of one secret).
    pub async fn list_all_versions(&self, path: &str) -> Result<Vec<SecretVersion>> {
        self.walk(
            "list versions",
            Some(path),
            MAX_VERSIONS,
            |cursor| async move {
                self.list_versions(path, Some(MAX_PAGE_SIZE), cursor.as_deref())
                    .await
            },
        )
        .await
    }

    /// Follows the cursors of a paginated list, bounded against a server that never stops: a
    /// cursor seen before (a loop, however long its period), more than `max_items` items or more
    /// pages than `max_items` needs at the smallest page size, or an oversized cursor, fails the
    /// walk with a `Decode` error naming the bound. Cursors are remembered as 64-bit hashes.
    async fn walk<T, F, Fut>(
        &self,
        operation: &'static str,
        path: Option<&str>,
        max_items: usize,
        mut page: F,
    ) -> Result<Vec<T>>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: Future<Output = Result<Page<T>>>,
    {
        let max_pages = max_items / MIN_PAGE_SIZE as usize + 1;
        let hasher = std::collections::hash_map::RandomState::new();
        let mut seen = std::collections::HashSet::new();
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..max_pages {
            let got = page(cursor.take()).await?;
            if items.len() + got.items.len() > max_items {
                return Err(self.unbounded_list(
                    operation,
                    path,
                    format!("the server listed more than {max_items} items"),
                ));
            }
            items.extend(got.items);
            let Some(next) = got.next_cursor else {
                return Ok(items);
            };
            if next.len() > MAX_CURSOR_BYTES {
                return Err(self.unbounded_list(
                    operation,
                    path,
                    format!(
                        "the server sent a pagination cursor longer than {MAX_CURSOR_BYTES} bytes"
                    ),
                ));
            }
            if !seen.insert(std::hash::BuildHasher::hash_one(&hasher, &next)) {
                return Err(self.unbounded_list(
                    operation,
                    path,
                    "the server sent a pagination cursor it had sent before (a loop)".into(),
                ));
            }
            cursor = Some(next);
        }
        Err(self.unbounded_list(
            operation,
            path,
            format!("the server kept paginating past {max_pages} pages"),
        ))
    }

    /// `GET /v2/secret/{path}/version/{version}[?includeData=true]`.
    pub async fn get_version(
        &self,
        path: &str,
        version: u32,
        include_data: bool,
    ) -> Result<SecretVersion> {
        const OP: &str = "get version";
        check_path(path).map_err(|k| self.err(OP, Some(path), k))?;
        let query: &[(&str, &str)] = if include_data {
            &[("includeData", "true")]
        } else {
            &[]
        };
        let url = self.url(
            OP,
            Some(path),
            &format!("{}/version/{version}", secret_path(path)),
            query,
        )?;
        let metric = if include_data {
            "version.getData"
        } else {
            "version.get"
        };
        let answer = self
            .execute(self.call(OP, metric, Some(path), Method::GET, url))
            .await?;
        self.decode(OP, Some(path), &answer.body)
    }

    /// `POST /v2/secret/{path}/version[?cas=n]`: adds a version.
    /// Retried only on connect errors, 429 and 503.
    pub async fn create_version(
        &self,
        path: &str,
        cas: Option<u32>,
        data: &SecretData,
    ) -> Result<SecretVersion> {
        const OP: &str = "create version";
        check_path(path).map_err(|k| self.err(OP, Some(path), k))?;
        let cas_text = cas.map(|c| c.to_string());
        let query: Vec<(&str, &str)> = cas_text.iter().map(|c| ("cas", c.as_str())).collect();
        let url = self.url(
            OP,
            Some(path),
            &format!("{}/version", secret_path(path)),
            &query,
        )?;
        let mut call = self.call(OP, "version.create", Some(path), Method::POST, url);
        call.cas_sent = cas.is_some();
        call.idempotency = Idempotency::CreatesVersion;
        call.body = Some(self.json_body(OP, Some(path), &VersionBody { data })?);
        let answer = self.execute(call).await?;
        self.decode(OP, Some(path), &answer.body)
    }

    /// `PUT /v2/secret/{path}/version/{version}`: activate, deactivate or delete a version.
    pub async fn update_version_state(
        &self,
        path: &str,
        version: u32,
        state: VersionState,
    ) -> Result<SecretVersion> {
        const OP: &str = "update version state";
        check_path(path).map_err(|k| self.err(OP, Some(path), k))?;
        let url = self.url(
            OP,
            Some(path),
            &format!("{}/version/{version}", secret_path(path)),
            &[],
        )?;
        let mut call = self.call(OP, "version.update", Some(path), Method::PUT, url);
        call.body = Some(self.json_body(OP, Some(path), &StateBody { state })?);
        let answer = self.execute(call).await?;
        self.decode(OP, Some(path), &answer.body)
    }

    // ---- domain configuration -----------------------------------------------------------------

    /// `GET /v2/secretConfig`.
    pub async fn get_secret_config(&self) -> Result<SecretConfig> {
        const OP: &str = "get secret config";
        let url = self.url(OP, None, "/secretConfig", &[])?;
        let answer = self
            .execute(self.call(OP, "config.get", None, Method::GET, url))
            .await?;
        self.decode(OP, None, &answer.body)
    }

    /// `PUT /v2/secretConfig`: only the `Some` fields are sent.
    pub async fn put_secret_config(&self, config: &SecretConfig) -> Result<SecretConfig> {
        const OP: &str = "put secret config";
        let url = self.url(OP, None, "/secretConfig", &[])?;
        let mut call = self.call(OP, "config.put", None, Method::PUT, url);
        call.body = Some(self.json_body(OP, None, config)?);
        let answer = self.execute(call).await?;
        self.decode(OP, None, &answer.body)
    }

    // ---- plumbing -----------------------------------------------------------------------------

    fn call<'a>(
        &self,
        operation: &'static str,
        metric: &'static str,
        path: Option<&'a str>,
        method: Method,
        url: Url,
    ) -> Call<'a> {
        Call {
            operation,
            metric,
            path,
            method,
            url,
            body: None,
            headers: HeaderMap::new(),
            idempotency: Idempotency::Idempotent,
            cas_sent: false,
        }
    }

    fn err(&self, operation: &'static str, path: Option<&str>, kind: ErrorKind) -> OkmsError {
        OkmsError::new(operation, path, kind)
    }

    fn unbounded_list(
        &self,
        operation: &'static str,
        path: Option<&str>,
        detail: String,
    ) -> OkmsError {
        self.err(operation, path, ErrorKind::Decode { detail })
    }

    /// `{base}{suffix}?{query}`; `suffix` is already percent-encoded.
    fn url(
        &self,
        operation: &'static str,
        path: Option<&str>,
        suffix: &str,
        query: &[(&str, &str)],
    ) -> Result<Url> {
        let mut url = Url::parse(&format!("{}{suffix}", self.inner.base)).map_err(|e| {
            self.err(
                operation,
                path,
                ErrorKind::InvalidConfig {
                    detail: format!("cannot build request URL: {e}"),
                },
            )
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    fn json_body<T: Serialize>(
        &self,
        operation: &'static str,
        path: Option<&str>,
        body: &T,
    ) -> Result<Vec<u8>> {
        // Serialising our own types into a Vec cannot fail in practice; the error text of
        // serde_json would not contain values anyway, but is not echoed to be safe.
        serde_json::to_vec(body).map_err(|_| {
            self.err(
                operation,
                path,
                ErrorKind::InvalidConfig {
                    detail: "request body could not be serialised".into(),
                },
            )
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: Option<&str>,
        body: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| {
            self.err(
                operation,
                path,
                ErrorKind::Decode {
                    detail: describe_json_error(&e),
                },
            )
        })
    }

    fn page<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: Option<&str>,
        answer: Answer,
    ) -> Result<Page<T>> {
        let items = self.decode(operation, path, &answer.body)?;
        let next_cursor = answer
            .headers
            .get(NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        Ok(Page { items, next_cursor })
    }

    /// Sends the call, retrying as its idempotency allows. Returns only 2xx answers.
    async fn execute(&self, call: Call<'_>) -> Result<Answer> {
        let span = tracing::debug_span!(
            "okms",
            op = call.metric,
            path = call.path.unwrap_or(""),
            status = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        self.execute_inner(call, span.clone())
            .instrument(span)
            .await
    }

    async fn execute_inner(&self, call: Call<'_>, span: tracing::Span) -> Result<Answer> {
        let inner = &*self.inner;
        let mut ambiguous = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(limiter) = &inner.limiter {
                limiter.acquire().await;
            }
            // after any wait, just before sending: a replica that stopped leading sends nothing
            if let Some(Err(why)) = inner.fence.as_ref().map(Fence::check) {
                let mut error = OkmsError::new(call.operation, call.path, ErrorKind::Fenced(why));
                error.attempts = attempt - 1;
                error.after_ambiguous_attempt = ambiguous;
                return Err(error);
            }
            let started = Instant::now();
            let outcome = match &inner.fence {
                Some(fence) => crate::fence::while_open(fence, self.send_once(&call)).await,
                None => self.send_once(&call).await,
            };
            let duration = started.elapsed();
            let status = outcome.as_ref().ok().map(|a| a.status.as_u16());
            if let Some(observer) = &inner.observer {
                observer(&RequestRecord {
                    operation: call.metric,
                    status,
                    duration,
                    attempt,
                });
            }
            span.record("attempts", attempt);
            if let Some(s) = status {
                span.record("status", s);
            }
            let kind = match outcome {
                Ok(answer) if answer.status.is_success() => {
                    tracing::debug!(
                        attempt,
                        ?duration,
                        status,
                        http = ?answer.version,
                        "OKMS request done"
                    );
                    return Ok(answer);
                }
                Ok(answer) => api_error(&answer),
                Err(kind) => kind,
            };
            if attempt < inner.retry.max_attempts && should_retry(&kind, call.idempotency) {
                let retry_after = match &kind {
                    ErrorKind::Api { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let delay = inner.retry.delay(attempt, retry_after);
                tracing::debug!(attempt, ?delay, error = %kind, "OKMS request failed, retrying");
                ambiguous |= may_have_reached_server(&kind);
                tokio::time::sleep(delay).await;
                continue;
            }
            let mut error = OkmsError::new(call.operation, call.path, kind);
            error.cas_sent = call.cas_sent;
            error.attempts = attempt;
            error.after_ambiguous_attempt = ambiguous;
            tracing::debug!(attempt, error = %error, "OKMS request failed");
            return Err(error);
        }
    }

    async fn send_once(&self, call: &Call<'_>) -> Result<Answer, ErrorKind> {
        let inner = &*self.inner;
        let mut request = inner
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(call.headers.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(auth) = &inner.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some(body) = &call.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&e, inner.timeout))?;
        let status = response.status();
        let version = response.version();
        let headers = response.headers().clone();
        if let Some(date) = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
        {
            *inner.server_clock.lock() = Some((date.with_timezone(&chrono::Utc), Instant::now()));
        }
        let body = read_limited(response, MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                Some(e) => transport_error(&e, inner.timeout),
                None => ErrorKind::Decode {
                    detail: format!("response body larger than {MAX_BODY_BYTES} bytes"),
                },
            })?;
        Ok(Answer {
            status,
            version,
            headers,
            body,
        })
    }
}

/// Reads the body, failing (`None`) when it exceeds `limit` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, Option<reqwest::Error>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Some)? {
        if body.len() + chunk.len() > limit {
            return Err(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Builds the `Api` error of a non-2xx answer from the OKMS error body (if it is one) and the
/// `Retry-After` header. Only `errors[]`, `error_code` and `request_id` are kept.
fn api_error(answer: &Answer) -> ErrorKind {
    let body: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
    let retry_after = answer
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    ErrorKind::Api {
        status: answer.status.as_u16(),
        code: body.error_code,
        category: body
            .error_code
            .map_or(ErrorCategory::Unspecified, |c| ErrorCode(c).category()),
        messages: sanitize_messages(body.errors.unwrap_or_default()),
        request_id: body
            .request_id
            .map(|id| id.chars().filter(|c| !c.is_control()).take(100).collect()),
        retry_after,
    }
}

fn transport_error(e: &reqwest::Error, timeout: Duration) -> ErrorKind {
    // A connect timeout is a connect error first: the request was certainly not sent, which is
    // what decides whether a write may be replayed.
    if e.is_connect() {
        ErrorKind::Transport {
            connect: true,
            detail: chain(e),
        }
    } else if e.is_timeout() {
        ErrorKind::Timeout { after: timeout }
    } else {
        ErrorKind::Transport {
            connect: false,
            detail: chain(e),
        }
    }
}

/// The error and its causes on one line, without the URL (it is in the `OkmsError` already).
fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    if let Some(url) = e.url() {
        out = out.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Names the position and class of a JSON decoding error. The serde message itself is not
/// echoed because it can quote the offending value, which could be secret data.
fn describe_json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let what = if message.starts_with("missing field") {
        message
            .split(" at line")
            .next()
            .unwrap_or("missing field")
            .to_owned()
    } else {
        format!("{:?} error", e.classify()).to_lowercase()
    };
    format!(
        "invalid JSON body ({what} at line {} column {})",
        e.line(),
        e.column()
    )
}

fn set_pagination(
    headers: &mut HeaderMap,
    page_size: Option<u32>,
    cursor: Option<&str>,
) -> Result<(), ErrorKind> {
    if let Some(size) = page_size {
        headers.insert(
            PAGE_SIZE_HEADER,
            HeaderValue::from(size.clamp(MIN_PAGE_SIZE, MAX_PAGE_SIZE)),
        );
    }
    if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
        let value = HeaderValue::from_str(cursor).map_err(|_| ErrorKind::InvalidConfig {
            detail: "pagination cursor is not a valid header value".into(),
        })?;
        headers.insert(CURSOR_HEADER, value);
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), ErrorKind> {
    if path.is_empty() {
        return Err(ErrorKind::InvalidConfig {
            detail: "secret path must not be empty".into(),
        });
    }
    Ok(())
}

fn secret_path(path: &str) -> String {
    format!("/secret/{}", path_escape(path))
}

/// Checks the endpoint's form ([`isolation::endpoint_form`]); returns whether it is plain http
/// (allowed only for loopback hosts).
fn check_endpoint(endpoint: &Url) -> Result<bool, String> {
    isolation::endpoint_form(endpoint).map_err(|why| match why {
        EndpointForm::Credentials => "endpoint must not contain credentials".into(),
        EndpointForm::QueryOrFragment => "endpoint must not have a query or fragment".into(),
        EndpointForm::NoHost => format!("endpoint `{endpoint}` has no host"),
        EndpointForm::PlainHttp => format!(
            "endpoint `{endpoint}` must use https (plain http is allowed only for loopback hosts \
             such as 127.0.0.1, ::1 or localhost)"
        ),
        EndpointForm::Scheme(other) => {
            format!("endpoint `{endpoint}` has scheme `{other}`; https is required")
        }
    })
}

/// Percent-encodes `s` as ONE path segment exactly like Go's `url.PathEscape` (what OVH's SDK,
/// Terraform provider and console do): unreserved characters and `$&+:=@` stay, everything
/// else, `/` included, becomes `%XX` with uppercase hex.
pub fn path_escape(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'~' | b'$' | b'&' | b'+' | b':' | b'=' | b'@'
            );
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_paths_like_go_path_escape() {
        // Expected values follow Go's `shouldEscape(c, encodePathSegment)` (net/url).
        let cases = [
            ("team-a/db", "team-a%2Fdb"),
            ("a/b/c", "a%2Fb%2Fc"),
            ("prod/db:main=1@x", "prod%2Fdb:main=1@x"),
            ("a b", "a%20b"),
            ("50%", "50%25"),
            ("a?b#c;d,e", "a%3Fb%23c%3Bd%2Ce"),
            ("$&+", "$&+"),
            ("~_.-", "~_.-"),
            ("!*'()", "%21%2A%27%28%29"),
            ("é", "%C3%A9"),
        ];
        for (input, want) in cases {
            assert_eq!(path_escape(input), want, "{input}");
        }
    }

    fn client(endpoint: &str, auth: Auth) -> Result<OkmsClient> {
        let url = Url::parse(endpoint).unwrap_or_else(|e| panic!("{e}"));
        OkmsClient::new(ClientConfig::new(
            url,
            "8a3e5b6c-0000-4000-8000-000000000001",
            auth,
        ))
    }

    fn token() -> Auth {
        Auth::Token(Zeroizing::new("eyJ-super-secret-token".into()))
    }

    #[test]
    fn builds_urls_with_one_encoded_segment() {
        let c = client("http://127.0.0.1:8080/", token()).unwrap_or_else(|e| panic!("{e}"));
        let url = c
            .url(
                "get secret",
                None,
                &secret_path("team-a/db"),
                &[("includeData", "true")],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/api/8a3e5b6c-0000-4000-8000-000000000001/v2/secret/\
             team-a%2Fdb?includeData=true"
        );
        let url = c
            .url(
                "x",
                None,
                &format!("{}/version/3", secret_path("a/b c")),
                &[],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            url.as_str().ends_with("/v2/secret/a%2Fb%20c/version/3"),
            "{url}"
        );
    }

    #[test]
    fn https_is_required_except_on_loopback() {
        for ok in [
            "http://127.0.0.1:1",
            "http://localhost:1",
            "http://[::1]:1",
            "http://127.3.2.1",
        ] {
            assert!(client(ok, token()).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1",
            "http://okms.example.com",
            "ftp://127.0.0.1",
        ] {
            let err = client(bad, token())
                .err()
                .unwrap_or_else(|| panic!("{bad}"));
            assert!(
                matches!(*err.kind, ErrorKind::InvalidConfig { .. }),
                "{bad}"
            );
            assert!(err.to_string().contains("https"), "{err}");
        }
        let err = client("https://user:pw@example.com", token())
            .err()
            .unwrap_or_else(|| panic!("credentials accepted"));
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn rejects_unusable_settings() {
        let base = || {
            ClientConfig::new(
                Url::parse("http://127.0.0.1:1").unwrap_or_else(|e| panic!("{e}")),
                "id",
                token(),
            )
        };
        let mut bad = Vec::new();
        let mut c = base();
        c.okms_id = " ".into();
        bad.push(c);
        let mut c = base();
        c.timeout = Duration::ZERO;
        bad.push(c);
        let mut c = base();
        c.retry.max_attempts = 0;
        bad.push(c);
        let mut c = base();
        c.rate_limit = Some(RateLimit {
            requests_per_second: f64::NAN,
            burst: 1,
        });
        bad.push(c);
        let mut c = base();
        c.auth = Auth::Token(Zeroizing::new("line\nbreak-secret".into()));
        bad.push(c);
        let mut c = base();
        c.extra_roots_pem = Some(b"not a pem".to_vec());
        bad.push(c);
        for cfg in bad {
            let shown = format!("{cfg:?}");
            let err = OkmsClient::new(cfg)
                .err()
                .unwrap_or_else(|| panic!("accepted {shown}"));
            assert!(
                matches!(*err.kind, ErrorKind::InvalidConfig { .. }),
                "{err}"
            );
            assert!(!err.to_string().contains("break-secret"), "{err}");
        }
        assert!(OkmsClient::new(base()).is_ok());
    }

    #[test]
    fn mtls_needs_https_and_a_valid_key_and_errors_do_not_echo_keys() {
        let auth = Auth::Mtls {
            cert_pem: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
            key_pem: Zeroizing::new(
                b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"
                    .to_vec(),
            ),
        };
        let err = client("http://127.0.0.1:1", auth.clone())
            .err()
            .unwrap_or_else(|| panic!("mtls over http accepted"));
        assert!(err.to_string().contains("https"), "{err}");
        let err = client("https://127.0.0.1:1", auth)
            .err()
            .unwrap_or_else(|| panic!("garbage cert accepted"));
        let text = format!("{err} {err:?}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }

    #[test]
    fn debug_never_shows_credentials() {
        let auth = token();
        let cfg = ClientConfig::new(
            Url::parse("https://eu-west-rbx.okms.ovh.net").unwrap_or_else(|e| panic!("{e}")),
            "id",
            auth.clone(),
        );
        let text = format!("{auth:?} {cfg:?} {cfg:#?}");
        assert!(!text.contains("super-secret"), "{text}");
        assert!(text.contains("redacted"), "{text}");

        let mtls = Auth::Mtls {
            cert_pem: b"CERTDATA".to_vec(),
            key_pem: Zeroizing::new(b"KEYMATERIAL-xyz".to_vec()),
        };
        let text = format!("{mtls:?}");
        assert!(!text.contains("KEYMATERIAL"), "{text}");
        assert!(!text.contains("75, 69, 89"), "{text}"); // not even as a byte list

        let c = client("http://127.0.0.1:1", token()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("super-secret"));
    }

    #[test]
    fn api_errors_keep_only_code_messages_and_request_id() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let answer = Answer {
            status: StatusCode::NOT_FOUND,
            version: reqwest::Version::HTTP_2,
            headers,
            body: br#"{"error_code":17125377,"error_id":"e","errors":["secret not found"],
                      "request_id":"rid","data":{"password":"hunter2"}}"#
                .to_vec(),
        };
        let kind = api_error(&answer);
        assert_eq!(
            kind,
            ErrorKind::Api {
                status: 404,
                code: Some(17125377),
                category: ErrorCategory::NotFound,
                messages: vec!["secret not found".into()],
                request_id: Some("rid".into()),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
        assert!(!kind.to_string().contains("hunter2"));

        let html = Answer {
            status: StatusCode::BAD_GATEWAY,
            version: reqwest::Version::HTTP_11,
            headers: HeaderMap::new(),
            body: b"<html>password=hunter2</html>".to_vec(),
        };
        let kind = api_error(&html);
        assert!(!kind.to_string().contains("hunter2"), "{kind}");
        assert!(kind.to_string().contains("502"), "{kind}");
    }

    #[test]
    fn decode_errors_do_not_quote_values() {
        let e = serde_json::from_slice::<SecretVersion>(
            br#"{"id":1,"state":"active","data":"hunter2"}"#,
        )
        .err()
        .unwrap_or_else(|| panic!("decoded"));
        let text = describe_json_error(&e);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("line 1"), "{text}");
        let e = serde_json::from_slice::<SecretVersion>(br#"{"state":"active"}"#)
            .err()
            .unwrap_or_else(|| panic!("decoded"));
        assert!(describe_json_error(&e).contains("missing field `id`"));
    }

    #[test]
    fn pagination_headers_are_clamped() {
        let mut h = HeaderMap::new();
        assert!(set_pagination(&mut h, Some(5), Some("abc")).is_ok());
        assert_eq!(
            h.get(PAGE_SIZE_HEADER).and_then(|v| v.to_str().ok()),
            Some("10")
        );
        assert_eq!(
            h.get(CURSOR_HEADER).and_then(|v| v.to_str().ok()),
            Some("abc")
        );
        let mut h = HeaderMap::new();
        assert!(set_pagination(&mut h, Some(1000), Some("")).is_ok());
        assert_eq!(
            h.get(PAGE_SIZE_HEADER).and_then(|v| v.to_str().ok()),
            Some("100")
        );
        assert!(h.get(CURSOR_HEADER).is_none());
        assert!(set_pagination(&mut h, None, Some("bad\ncursor")).is_err());
    }
}

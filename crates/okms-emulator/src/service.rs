//! The request pipeline: route → count → authenticate → inject faults → dispatch → count.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Notify;

use crate::error::{ApiError, codes, empty};
use crate::faults::{Faults, Injection};
use crate::route::{self, Route};
use crate::stats::Counters;
use crate::store::Store;
use crate::{kv2, v2};

/// Largest request body read (data itself is limited to 64 KB by the store).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// State shared by all connections.
pub(crate) struct Shared {
    pub okms_id: String,
    pub token: Option<String>,
    pub store: Mutex<Store>,
    pub faults: RwLock<Faults>,
    pub counters: Counters,
    /// Wakes the snapshot writer after a successful mutation (`--persist`).
    pub persist: Option<Arc<Notify>>,
    /// Seconds added to the wall clock (`/_emulator/clock`), to test expiry without waiting.
    pub clock_offset_secs: AtomicI64,
}

impl Shared {
    /// The emulator's notion of "now": wall clock plus the test offset.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.clock_offset_secs.load(Ordering::Relaxed))
    }
}

/// What the TLS handshake told us about the client.
#[derive(Debug, Default)]
pub(crate) struct ConnInfo {
    /// The OKMS domain of a verified client certificate (`*` = any).
    pub cert_domain: Option<String>,
    pub has_cert: bool,
    /// Cancelled to close the whole connection (HTTP/1.1 and HTTP/2) on an injected drop.
    pub kill: tokio_util::sync::CancellationToken,
}

/// Returned to hyper to close the connection without any response (fault injection).
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// A request with its body read.
pub(crate) struct Req {
    pub method: Method,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn param(&self, key: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    pub fn flag(&self, key: &str) -> bool {
        self.param(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }

    /// A numeric query parameter; absent or empty → `None`.
    pub fn u32_param(&self, key: &str) -> Result<Option<u32>, ApiError> {
        match self.param(key) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("{key} must be an integer 0-24000"))),
        }
    }

    /// The JSON body; an empty body reads as `{}`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn ok_json(value: &Value) -> Response {
    json_response(StatusCode::OK, value)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim());
        }
    }
    headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Comparison whose time does not depend on where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn authorize(
    shared: &Shared,
    conn: &ConnInfo,
    route: &Route,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let url_id = match route {
        Route::V2 { okms_id, .. } | Route::Kv { okms_id, .. } => Some(okms_id.as_str()),
        _ => None,
    };
    let domain_not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::DOMAIN_NOT_FOUND,
            "OKMS domain not found",
        )
    };
    let mut cert_error = None;
    if let Some(domain) = conn.cert_domain.as_deref() {
        if domain == "*" {
            return match url_id {
                Some(id) if id != shared.okms_id => Err(domain_not_found()),
                _ => Ok(()),
            };
        }
        if domain == shared.okms_id && url_id.is_none_or(|id| id == domain) {
            return Ok(());
        }
        cert_error = Some(ApiError::unauthorized(
            "the client certificate is not valid for this OKMS domain",
        ));
    }
    if let (Some(expected), Some(given)) = (shared.token.as_deref(), bearer(headers))
        && same(expected, given)
    {
        return match url_id {
            Some(id) if id != shared.okms_id => Err(domain_not_found()),
            _ => Ok(()),
        };
    }
    if let Some(e) = cert_error {
        return Err(e);
    }
    Err(ApiError::unauthorized(if conn.has_cert {
        "the client certificate carries no OKMS domain"
    } else {
        "authentication required: present an access certificate or a valid bearer token"
    }))
}

pub(crate) async fn handle<B>(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<B>,
) -> Result<Response, Dropped>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let route = route::parse(req.uri().path());
    let op = route::operation(&route, req.method(), req.uri().query());
    let admin = matches!(route, Route::Faults | Route::Stats | Route::Clock);
    if !admin {
        shared.counters.request(op);
    }
    let resp = match process(&shared, &conn, route, op, admin, req).await {
        Ok(r) => r,
        Err(Some(e)) => e.into_response(),
        Err(None) => {
            tracing::debug!(operation = op, "fault injection: dropping connection");
            conn.kill.cancel();
            return Err(Dropped);
        }
    };
    if !admin {
        shared.counters.response(resp.status().as_u16());
    }
    let mut resp = resp;
    // the emulator's clock is OKMS's clock: every answer's `Date` follows it (test clock included),
    // as `createdAt` and expiry do; clients that schedule on OKMS time read it here
    let date = shared.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = hyper::header::HeaderValue::from_str(&date) {
        resp.headers_mut().insert(hyper::header::DATE, value);
    }
    Ok(resp)
}

/// `Err(None)` = drop the connection.
async fn process<B>(
    shared: &Shared,
    conn: &ConnInfo,
    route: Route,
    op: &'static str,
    admin: bool,
    req: Request<B>,
) -> Result<Response, Option<ApiError>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    authorize(shared, conn, &route, req.headers()).map_err(Some)?;
    if !admin {
        let faults = shared.faults.read().clone();
        if !faults.is_empty() && faults.applies_to(op) {
            if faults.latency_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
            }
            match faults.decide(op, rand::random::<f64>(), rand::random::<f64>()) {
                Injection::Proceed => {}
                Injection::Drop => return Err(None),
                Injection::Error {
                    status,
                    retry_after,
                } => {
                    let code = match status {
                        429 => codes::RATE_LIMITED,
                        503 => codes::UNAVAILABLE,
                        _ => codes::INTERNAL,
                    };
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let mut e = ApiError::new(status, code, "injected fault");
                    e.retry_after = retry_after;
                    return Err(Some(e));
                }
            }
        }
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(Body::new(body), MAX_BODY)
        .await
        .map_err(|_| {
            Some(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::BAD_ARGUMENT,
                "request body unreadable or larger than 4 MiB",
            ))
        })?;
    let req = Req {
        method: parts.method,
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    let mutating = !matches!(req.method.as_str(), "GET" | "LIST" | "HEAD");
    let result = match route {
        Route::Faults => faults_endpoint(shared, &req),
        Route::Stats => stats_endpoint(shared, &req),
        Route::Clock => clock_endpoint(shared, &req),
        Route::V2 { ep, .. } => v2::handle(shared, ep, &req),
        Route::Kv { ep, .. } => kv2::handle(shared, ep, &req),
        Route::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NO_ROUTE,
            "no such endpoint",
        )),
        Route::BadPath => Err(ApiError::bad_request(
            "the path is not valid percent-encoded UTF-8",
        )),
    };
    if mutating
        && !admin
        && result.is_ok()
        && let Some(n) = &shared.persist
    {
        n.notify_one();
    }
    if !admin {
        let rate = shared.faults.read().drop_response_rate;
        if rate > 0.0 && shared.faults.read().applies_to(op) && rand::random::<f64>() < rate {
            // the call took effect; its answer is lost
            return Err(None);
        }
    }
    result.map_err(Some)
}

fn faults_endpoint(shared: &Shared, req: &Req) -> Result<Response, ApiError> {
    match req.method.as_str() {
        "GET" => {}
        "PUT" | "POST" => {
            let f: Faults = req.json()?;
            f.validate().map_err(ApiError::bad_request)?;
            tracing::info!(?f, "faults set");
            *shared.faults.write() = f;
        }
        "DELETE" => {
            *shared.faults.write() = Faults::default();
            return Ok(empty(StatusCode::NO_CONTENT));
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    let f = shared.faults.read().clone();
    Ok(ok_json(&serde_json::to_value(f).unwrap_or_default()))
}

#[derive(serde::Deserialize)]
struct ClockBody {
    advance_secs: i64,
}

fn clock_endpoint(shared: &Shared, req: &Req) -> Result<Response, ApiError> {
    match req.method.as_str() {
        "GET" => {}
        "PUT" | "POST" => {
            let body: ClockBody = req.json()?;
            if body.advance_secs < 0 {
                return Err(ApiError::bad_request("advance_secs must not be negative"));
            }
            shared
                .clock_offset_secs
                .fetch_add(body.advance_secs, Ordering::Relaxed);
        }
        "DELETE" => shared.clock_offset_secs.store(0, Ordering::Relaxed),
        _ => return Err(ApiError::method_not_allowed()),
    }
    Ok(ok_json(&serde_json::json!({
        "now": shared.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "offset_secs": shared.clock_offset_secs.load(Ordering::Relaxed),
    })))
}

fn stats_endpoint(shared: &Shared, req: &Req) -> Result<Response, ApiError> {
    match req.method.as_str() {
        "GET" => Ok(ok_json(
            &serde_json::to_value(shared.counters.snapshot()).unwrap_or_default(),
        )),
        "DELETE" => {
            shared.counters.reset();
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(token: Option<&str>) -> Shared {
        Shared {
            okms_id: "dom".into(),
            token: token.map(str::to_owned),
            store: Mutex::new(Store::new()),
            faults: RwLock::new(Faults::default()),
            counters: Counters::default(),
            persist: None,
            clock_offset_secs: AtomicI64::new(0),
        }
    }

    fn route(id: &str) -> Route {
        route::parse(&format!("/api/{id}/v2/secretConfig"))
    }

    fn cert(domain: &str) -> ConnInfo {
        ConnInfo {
            cert_domain: Some(domain.into()),
            has_cert: true,
            ..ConnInfo::default()
        }
    }

    #[test]
    fn authorization_rules() {
        let none = HeaderMap::new();
        let mut tok = HeaderMap::new();
        tok.insert("x-vault-token", "t".parse().unwrap());
        let s = shared(None);
        assert!(authorize(&s, &cert("dom"), &route("dom"), &none).is_ok());
        assert!(authorize(&s, &cert("*"), &route("dom"), &none).is_ok());
        assert_eq!(
            authorize(&s, &cert("*"), &route("other"), &none)
                .unwrap_err()
                .code,
            codes::DOMAIN_NOT_FOUND
        );
        assert_eq!(
            authorize(&s, &cert("other"), &route("dom"), &none)
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert!(authorize(&s, &cert("dom"), &route("other"), &none).is_err());
        assert!(authorize(&s, &ConnInfo::default(), &route("dom"), &tok).is_err());
        let s = shared(Some("t"));
        assert!(authorize(&s, &ConnInfo::default(), &route("dom"), &tok).is_ok());
        assert!(
            authorize(&s, &cert("other"), &route("dom"), &tok).is_ok(),
            "token rescues"
        );
        assert!(authorize(&s, &ConnInfo::default(), &Route::Stats, &tok).is_ok());
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        assert!(authorize(&s, &ConnInfo::default(), &route("dom"), &bearer).is_ok());
        bearer.insert(header::AUTHORIZATION, "Bearer tt".parse().unwrap());
        assert!(authorize(&s, &ConnInfo::default(), &route("dom"), &bearer).is_err());
    }
}

//! `X-Pagination-Size` / `X-Pagination-Cursor` request headers and `X-Pagination-Cursor-Next`.
//!
//! The cursor is the base64url (unpadded) encoding of the last key of the previous page, so it
//! stays valid while entries are added or removed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;

use crate::error::ApiError;

pub const SIZE_HEADER: &str = "x-pagination-size";
pub const CURSOR_HEADER: &str = "x-pagination-cursor";
pub const NEXT_HEADER: &str = "x-pagination-cursor-next";
pub const MIN_SIZE: usize = 10;
pub const MAX_SIZE: usize = 100;

/// Requested page size, clamped into 10–100 (default 100); a non-number is a 400.
pub fn size(headers: &HeaderMap) -> Result<usize, ApiError> {
    match headers.get(SIZE_HEADER) {
        None => Ok(MAX_SIZE),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|n| (n as usize).clamp(MIN_SIZE, MAX_SIZE))
            .ok_or_else(|| ApiError::bad_request("X-Pagination-Size must be an integer")),
    }
}

/// The decoded cursor (last key of the previous page), if any.
pub fn cursor(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(CURSOR_HEADER) else {
        return Ok(None);
    };
    let raw = v.to_str().unwrap_or_default().trim();
    if raw.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("X-Pagination-Cursor is not a valid cursor"))
}

pub fn encode(last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(last_key.as_bytes())
}

/// Whether the client asked for pagination at all (KV2 lists are unpaginated otherwise).
pub fn requested(headers: &HeaderMap) -> bool {
    headers.contains_key(SIZE_HEADER) || headers.contains_key(CURSOR_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_cursor() {
        let mut h = HeaderMap::new();
        assert_eq!(size(&h).unwrap(), 100);
        h.insert(SIZE_HEADER, "5".parse().unwrap());
        assert_eq!(size(&h).unwrap(), 10);
        h.insert(SIZE_HEADER, "1000".parse().unwrap());
        assert_eq!(size(&h).unwrap(), 100);
        h.insert(SIZE_HEADER, "x".parse().unwrap());
        assert!(size(&h).is_err());
        h.insert(CURSOR_HEADER, encode("a/b").parse().unwrap());
        assert_eq!(cursor(&h).unwrap().as_deref(), Some("a/b"));
        h.insert(CURSOR_HEADER, "!!".parse().unwrap());
        assert!(cursor(&h).is_err());
    }
}

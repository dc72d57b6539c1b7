//! Parsing of raw request paths into endpoints, and the operation names used by stats/faults.
//!
//! Routing is done on the *raw* (still percent-encoded) path so that `a%2Fversion` (a secret
//! literally named `a/version`, as OVH's SDK sends it) differs from `a/version` (the versions
//! sub-resource of secret `a`).

use http::Method;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Faults,
    Stats,
    Clock,
    V2 {
        okms_id: String,
        ep: V2,
    },
    Kv {
        okms_id: String,
        ep: Kv,
    },
    NotFound,
    /// A path that could not be percent-decoded.
    BadPath,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum V2 {
    Secrets,
    Secret(String),
    Versions(String),
    /// Secret path and the raw version segment (validated by the handler).
    Version(String, String),
    Config,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kv {
    Config,
    Data(String),
    /// Empty for the root.
    Metadata(String),
    Delete(String),
    Undelete(String),
    Destroy(String),
    Subkeys(String),
}

/// Decodes `%XX` escapes (no `+` → space: this is a path, not a form).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn parse(raw_path: &str) -> Route {
    match raw_path {
        "/_emulator/faults" => return Route::Faults,
        "/_emulator/stats" => return Route::Stats,
        "/_emulator/clock" => return Route::Clock,
        _ => {}
    }
    let Some(rest) = raw_path.strip_prefix("/api/") else {
        return Route::NotFound;
    };
    let Some((okms_id, rest)) = rest.split_once('/') else {
        return Route::NotFound;
    };
    let okms_id = okms_id.to_owned();
    if let Some(rest) = rest.strip_prefix("v2/") {
        return match parse_v2(rest) {
            Some(Ok(ep)) => Route::V2 { okms_id, ep },
            Some(Err(())) => Route::BadPath,
            None => Route::NotFound,
        };
    }
    if let Some(rest) = rest.strip_prefix("v1/secret/") {
        return match parse_kv(rest) {
            Some(Ok(ep)) => Route::Kv { okms_id, ep },
            Some(Err(())) => Route::BadPath,
            None => Route::NotFound,
        };
    }
    Route::NotFound
}

fn decode(raw: &str) -> Result<String, ()> {
    percent_decode(raw).ok_or(())
}

fn parse_v2(rest: &str) -> Option<Result<V2, ()>> {
    if rest == "secretConfig" {
        return Some(Ok(V2::Config));
    }
    if rest == "secret" || rest == "secret/" {
        return Some(Ok(V2::Secrets));
    }
    let raw = rest.strip_prefix("secret/")?;
    let segs: Vec<&str> = raw.split('/').collect();
    let n = segs.len();
    let ep = if n >= 3
        && segs[n - 2] == "version"
        && !segs[n - 1].is_empty()
        && segs[n - 1].bytes().all(|b| b.is_ascii_digit())
    {
        decode(&segs[..n - 2].join("/")).map(|p| V2::Version(p, segs[n - 1].to_owned()))
    } else if n >= 2 && segs[n - 1] == "version" {
        decode(&segs[..n - 1].join("/")).map(V2::Versions)
    } else {
        decode(raw).map(V2::Secret)
    };
    Some(ep)
}

fn parse_kv(rest: &str) -> Option<Result<Kv, ()>> {
    if rest == "config" {
        return Some(Ok(Kv::Config));
    }
    if rest == "metadata" || rest == "metadata/" {
        return Some(Ok(Kv::Metadata(String::new())));
    }
    let (kind, raw) = rest.split_once('/')?;
    let path = match decode(raw) {
        Ok(p) => p,
        Err(()) => return Some(Err(())),
    };
    let ep = match kind {
        "data" => Kv::Data(path),
        "metadata" => Kv::Metadata(path),
        "delete" => Kv::Delete(path),
        "undelete" => Kv::Undelete(path),
        "destroy" => Kv::Destroy(path),
        "subkeys" => Kv::Subkeys(path),
        _ => return None,
    };
    Some(Ok(ep))
}

fn query_flag(query: Option<&str>, key: &str) -> bool {
    query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == key && (v == "true" || v == "1"))
    })
}

/// The operation name counted in `/_emulator/stats` and matched by `Faults::only`.
pub fn operation(route: &Route, method: &Method, query: Option<&str>) -> &'static str {
    let m = method.as_str();
    match route {
        Route::Faults | Route::Stats | Route::Clock => "admin",
        Route::NotFound | Route::BadPath => "unknown",
        Route::V2 { ep, .. } => match (ep, m) {
            (V2::Secrets, "GET") => "secret.list",
            (V2::Secrets, "POST") => "secret.create",
            (V2::Secret(_), "GET") if query_flag(query, "includeData") => "secret.getData",
            (V2::Secret(_), "GET") => "secret.get",
            (V2::Secret(_), "PUT") => "secret.update",
            (V2::Secret(_), "DELETE") => "secret.delete",
            (V2::Versions(_), "GET") => "version.list",
            (V2::Versions(_), "POST") => "version.create",
            (V2::Version(..), "GET") if query_flag(query, "includeData") => "version.getData",
            (V2::Version(..), "GET") => "version.get",
            (V2::Version(..), "PUT") => "version.update",
            (V2::Config, "GET") => "config.get",
            (V2::Config, "PUT") => "config.put",
            _ => "unknown",
        },
        Route::Kv { ep, .. } => match (ep, m) {
            (Kv::Config, "GET") => "kv.config.get",
            (Kv::Config, "POST" | "PUT") => "kv.config.put",
            (Kv::Data(_), "GET") => "kv.data.get",
            (Kv::Data(_), "POST" | "PUT") => "kv.data.put",
            (Kv::Data(_), "PATCH") => "kv.data.patch",
            (Kv::Data(_), "DELETE") => "kv.data.delete",
            (Kv::Metadata(_), "LIST") => "kv.metadata.list",
            (Kv::Metadata(p), "GET")
                if query_flag(query, "list") || p.trim_matches('/').is_empty() =>
            {
                "kv.metadata.list"
            }
            (Kv::Metadata(_), "GET") => "kv.metadata.get",
            (Kv::Metadata(_), "POST" | "PUT") => "kv.metadata.put",
            (Kv::Metadata(_), "PATCH") => "kv.metadata.patch",
            (Kv::Metadata(_), "DELETE") => "kv.metadata.delete",
            (Kv::Delete(_), "POST" | "PUT") => "kv.delete",
            (Kv::Undelete(_), "POST" | "PUT") => "kv.undelete",
            (Kv::Destroy(_), "POST" | "PUT") => "kv.destroy",
            (Kv::Subkeys(_), "GET") => "kv.subkeys.get",
            _ => "unknown",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(ep: V2) -> Route {
        Route::V2 {
            okms_id: "id".into(),
            ep,
        }
    }

    #[test]
    fn v2_paths() {
        assert_eq!(parse("/api/id/v2/secret"), v2(V2::Secrets));
        assert_eq!(parse("/api/id/v2/secretConfig"), v2(V2::Config));
        assert_eq!(
            parse("/api/id/v2/secret/a%2Fb"),
            v2(V2::Secret("a/b".into()))
        );
        assert_eq!(parse("/api/id/v2/secret/a/b"), v2(V2::Secret("a/b".into())));
        assert_eq!(
            parse("/api/id/v2/secret/a/b/version"),
            v2(V2::Versions("a/b".into()))
        );
        assert_eq!(
            parse("/api/id/v2/secret/a%2Fb/version/12"),
            v2(V2::Version("a/b".into(), "12".into()))
        );
        // Encoded slash: a secret literally named "a/version".
        assert_eq!(
            parse("/api/id/v2/secret/a%2Fversion"),
            v2(V2::Secret("a/version".into()))
        );
        assert_eq!(
            parse("/api/id/v2/secret/version"),
            v2(V2::Secret("version".into()))
        );
        assert_eq!(parse("/api/id/v2/secret/a%ZZ"), Route::BadPath);
        assert_eq!(parse("/api/id/v3/x"), Route::NotFound);
    }

    #[test]
    fn kv_paths() {
        let kv = |ep| Route::Kv {
            okms_id: "id".into(),
            ep,
        };
        assert_eq!(
            parse("/api/id/v1/secret/data/a/b"),
            kv(Kv::Data("a/b".into()))
        );
        assert_eq!(
            parse("/api/id/v1/secret/metadata"),
            kv(Kv::Metadata(String::new()))
        );
        assert_eq!(
            parse("/api/id/v1/secret/metadata/"),
            kv(Kv::Metadata(String::new()))
        );
        assert_eq!(
            parse("/api/id/v1/secret/metadata/a/"),
            kv(Kv::Metadata("a/".into()))
        );
        assert_eq!(
            parse("/api/id/v1/secret/destroy/x"),
            kv(Kv::Destroy("x".into()))
        );
        assert_eq!(parse("/api/id/v1/secret/config"), kv(Kv::Config));
    }

    #[test]
    fn operation_names() {
        let r = parse("/api/id/v2/secret/a");
        assert_eq!(operation(&r, &Method::GET, None), "secret.get");
        assert_eq!(
            operation(&r, &Method::GET, Some("includeData=true")),
            "secret.getData"
        );
        let r = parse("/api/id/v2/secret/a/version/1");
        assert_eq!(operation(&r, &Method::PUT, None), "version.update");
        let r = parse("/api/id/v1/secret/metadata/a");
        let list = Method::from_bytes(b"LIST").unwrap();
        assert_eq!(operation(&r, &list, None), "kv.metadata.list");
        assert_eq!(
            operation(&r, &Method::GET, Some("list=true")),
            "kv.metadata.list"
        );
    }
}

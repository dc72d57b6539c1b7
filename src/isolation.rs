//! Isolation rules: what a tenant's objects may reach. This module is their one home: the
//! endpoint allow-list (which hosts may receive credentials), the validity of `allowedPaths`
//! entries, which paths they allow, and the `allowedNamespaces` label selectors. (Same-namespace
//! sources and credentials follow from the types: neither reference has a namespace field for an
//! OkmsSecret or an OkmsConnection.) `consent.rs` holds who may be written to. Everything here is pure: it takes
//! plain data and decides, so each rule is unit-tested as an attacker would probe it, and the
//! callers check it before any credential is read or any OKMS call is made.

use std::fmt;
use std::net::IpAddr;

use kube::core::{Selector, SelectorExt};
use url::{Host, Url};

/// Default of `--allowed-endpoints`: OVHcloud's regional OKMS hosts and the loopback hosts.
pub const DEFAULT_ALLOWED_ENDPOINTS: &str = "*.okms.ovh.net,localhost,127.0.0.1,::1";

/// The flag (and its environment variable) that sets the endpoint allow-list, for messages.
pub const ALLOWED_ENDPOINTS_FLAG: &str = "--allowed-endpoints (OKMS_OPERATOR_ALLOWED_ENDPOINTS)";

/// Most patterns accepted in one allow-list (it is an administrator's list, not user input, but
/// a message quotes it).
const MAX_PATTERNS: usize = 64;

/// One entry of the allow-list: a host (exact, or every subdomain of a domain) and maybe a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    /// Exactly this (normalised) domain name.
    Domain(String),
    /// `*.suffix`: any name with one or more labels before `.suffix` (not `suffix` itself).
    Subdomains(String),
    /// Exactly this IP address.
    Ip(IpAddr),
}

impl HostPattern {
    /// Parses `host`, `*.domain`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
    /// Hosts are normalised as URLs normalise them (lower case, IDNA to punycode, IPv4 in any
    /// of its numeric forms), without a trailing dot.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = |why: &str| format!("host pattern {text:?}: {why}");
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let (host, port) = split_port(text).map_err(|e| bad(&e))?;
        if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(bad("`*` is allowed only as a leading `*.` label"));
            }
            return match normalise_host(suffix).map_err(|e| bad(&e))? {
                HostMatch::Domain(d) if d.contains('.') => Ok(Self {
                    host: HostMatch::Subdomains(d),
                    port,
                }),
                HostMatch::Domain(_) => Err(bad(
                    "a wildcard needs a domain of at least two labels (`*.okms.ovh.net`)",
                )),
                _ => Err(bad("a wildcard applies to domain names, not IP addresses")),
            };
        }
        if host.contains('*') {
            return Err(bad("`*` is allowed only as a leading `*.` label"));
        }
        Ok(Self {
            host: normalise_host(host).map_err(|e| bad(&e))?,
            port,
        })
    }

    /// Whether `host` (already normalised) and `port` match this pattern.
    fn matches(&self, host: &HostMatch, port: Option<u16>) -> bool {
        if self.port.is_some() && self.port != port {
            return false;
        }
        match (&self.host, host) {
            (HostMatch::Domain(p), HostMatch::Domain(h)) => p == h,
            (HostMatch::Subdomains(suffix), HostMatch::Domain(h)) => h
                .strip_suffix(suffix.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|labels| !labels.is_empty()),
            (HostMatch::Ip(p), HostMatch::Ip(h)) => p == h,
            _ => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Domain(d) => write!(f, "{d}")?,
            HostMatch::Subdomains(d) => write!(f, "*.{d}")?,
            HostMatch::Ip(IpAddr::V6(ip)) if self.port.is_some() => write!(f, "[{ip}]")?,
            HostMatch::Ip(ip) => write!(f, "{ip}")?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Splits an optional `:port` off a pattern. A bare IPv6 address (more than one `:`, no
/// brackets) has no port.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .map(Some)
            .ok_or_else(|| format!("bad port {p:?}"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed `[`".to_string())?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, parse_port(p)?)),
                None => Err(format!("unexpected {after:?} after `]`")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, port) = text.split_once(':').unwrap_or((text, ""));
            Ok((host, parse_port(port)?))
        }
        _ => Ok((text, None)),
    }
}

/// Normalises a host as the URL parser does, then drops one trailing dot (`a.b.` and `a.b` are
/// the same name to DNS). Empty labels are refused.
fn normalise_host(host: &str) -> Result<HostMatch, String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    let parsed = if host.contains(':') {
        Host::parse(&format!("[{host}]"))
    } else {
        Host::parse(host)
    }
    .map_err(|e| format!("not a host name or IP address ({e})"))?;
    host_match(&parsed)
}

fn host_match(host: &Host<impl AsRef<str>>) -> Result<HostMatch, String> {
    match host {
        Host::Ipv4(ip) => Ok(HostMatch::Ip(IpAddr::V4(*ip))),
        Host::Ipv6(ip) => Ok(HostMatch::Ip(IpAddr::V6(*ip))),
        Host::Domain(d) => {
            let d = d.as_ref().to_ascii_lowercase();
            let d = d.strip_suffix('.').unwrap_or(&d);
            if d.is_empty() || d.split('.').any(str::is_empty) {
                return Err(format!("host {d:?} has an empty label"));
            }
            Ok(HostMatch::Domain(d.to_string()))
        }
    }
}

/// The operator administrator's list of hosts that may receive a connection's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedEndpoints {
    patterns: Vec<HostPattern>,
}

impl AllowedEndpoints {
    /// Parses a comma-separated list of host patterns (blanks around entries are ignored). An
    /// empty list is refused: it would make every connection fail, surely not what was meant.
    pub fn parse(list: &str) -> Result<Self, String> {
        let patterns = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(HostPattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err("the list is empty; name at least one host pattern".into());
        }
        if patterns.len() > MAX_PATTERNS {
            return Err(format!("more than {MAX_PATTERNS} host patterns"));
        }
        Ok(Self { patterns })
    }

    /// Checks a parsed endpoint URL — the very value the HTTP client will connect to — against
    /// the list. The error says which host was refused and names the flag.
    pub fn check(&self, endpoint: &Url) -> Result<(), String> {
        let host = endpoint
            .host()
            .ok_or_else(|| "the endpoint has no host".to_string())?;
        let refused = || {
            format!(
                "endpoint host {host} is not in the operator's allowed endpoints ({self}); \
                 the operator's administrator sets them with {ALLOWED_ENDPOINTS_FLAG}"
            )
        };
        let normalised = host_match(&host).map_err(|_| refused())?;
        let port = endpoint.port_or_known_default();
        if self.patterns.iter().any(|p| p.matches(&normalised, port)) {
            return Ok(());
        }
        Err(refused())
    }
}

impl Default for AllowedEndpoints {
    fn default() -> Self {
        Self::parse(DEFAULT_ALLOWED_ENDPOINTS).unwrap_or(Self {
            patterns: Vec::new(),
        })
    }
}

impl fmt::Display for AllowedEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.patterns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for AllowedEndpoints {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

/// Whether a URL host is a loopback host (`localhost`, `127.0.0.0/8`, `::1`): the only hosts
/// plain `http` may be used with.
pub fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Checks one `allowedPaths` entry: a real prefix of OKMS paths — one or more segments of the
/// path character set, optionally ending in `/`, no empty, `.` or `..` segment. `""` and `/`
/// would allow every path (absent `allowedPaths` already means that), and a `..` segment would
/// let `team-a/../team-b/x` look like it is inside `team-a/`.
pub fn check_allowed_path_entry(entry: &str) -> Result<(), String> {
    let body = entry.strip_suffix('/').unwrap_or(entry);
    if body.is_empty() {
        return Err(format!(
            "allowedPaths entry {entry:?} would allow every path; name a prefix such as \"team-a/\" (omit allowedPaths to allow any path)"
        ));
    }
    if body.len() > 255 {
        return Err(format!(
            "an allowedPaths entry is {} bytes long, over the OKMS path limit of 255",
            body.len()
        ));
    }
    for segment in body.split('/') {
        if segment.is_empty() {
            return Err(format!(
                "allowedPaths entry {entry:?} has an empty segment (leading `/` or `//`)"
            ));
        }
        if is_dot_segment(segment) {
            return Err(format!(
                "allowedPaths entry {entry:?} has a {segment:?} segment; name the prefix without it"
            ));
        }
        if let Some(c) = segment.chars().find(|c| !is_path_char(*c)) {
            return Err(format!(
                "allowedPaths entry {entry:?} has the character {c:?}, outside the OKMS path set [a-zA-Z0-9_.:=@-/]"
            ));
        }
    }
    Ok(())
}

/// A `.` or `..` path segment: refused in `spec.path` and in `allowedPaths` entries, since
/// `team-a/../team-b/x` would pass a `team-a/` prefix check.
pub fn is_dot_segment(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// Checks every `allowedPaths` entry of a connection.
pub fn check_allowed_paths(entries: &[String]) -> Result<(), String> {
    entries.iter().try_for_each(|e| check_allowed_path_entry(e))
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '=' | '@' | '-')
}

/// Whether `path` is inside one of the allowed prefixes (`None` = any path). A prefix matches
/// whole segments: `team-a/` and `team-a` both allow `team-a/db` but not `team-ab/db`.
pub fn path_allowed(path: &str, allowed: Option<&[String]>) -> bool {
    let Some(allowed) = allowed else { return true };
    allowed.iter().any(|prefix| {
        let prefix = prefix.trim_end_matches('/');
        prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Why an endpoint may not receive a connection's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointRefusal {
    /// Not a usable endpoint (`InvalidSpec`): not a URL, credentials, a query or a fragment in
    /// it, or a scheme other than https (http only to a loopback host).
    Invalid(String),
    /// A host outside the operator's allow-list (`NotAllowed`).
    NotAllowed(String),
}

/// What is wrong with the form of an endpoint URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointForm {
    /// A user name or password in it.
    Credentials,
    /// A query (`?`) or fragment (`#`).
    QueryOrFragment,
    NoHost,
    /// Plain http to a host that is not a loopback host.
    PlainHttp,
    /// Another scheme than https or http.
    Scheme(String),
}

/// The form an endpoint must have for credentials to be sent to it: https, or http to a loopback
/// host ([`is_loopback`]); no credentials, query or fragment. Returns whether it is plain http.
/// The OKMS client checks it again when it is built.
pub fn endpoint_form(url: &Url) -> Result<bool, EndpointForm> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointForm::Credentials);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(EndpointForm::QueryOrFragment);
    }
    let host = url.host().ok_or(EndpointForm::NoHost)?;
    match url.scheme() {
        "https" => Ok(false),
        "http" if is_loopback(&host) => Ok(true),
        "http" => Err(EndpointForm::PlainHttp),
        other => Err(EndpointForm::Scheme(other.to_string())),
    }
}

/// Checks a connection's `endpoint` before any credential is read: its form ([`endpoint_form`])
/// and the operator's allow-list. Returns the URL exactly as the HTTP client will use it.
pub fn check_endpoint(endpoint: &str, allowed: &AllowedEndpoints) -> Result<Url, EndpointRefusal> {
    let invalid = |why: String| EndpointRefusal::Invalid(why);
    let url = Url::parse(endpoint)
        .map_err(|e| invalid(format!("endpoint {endpoint:?} is not a URL: {e}")))?;
    endpoint_form(&url).map_err(|why| {
        invalid(match why {
            EndpointForm::Credentials => {
                "the endpoint must not contain a user name or password".into()
            }
            EndpointForm::QueryOrFragment => {
                "the endpoint must not have a query (`?`) or fragment (`#`)".into()
            }
            EndpointForm::NoHost => format!("endpoint {endpoint:?} has no host"),
            EndpointForm::PlainHttp => format!(
                "endpoint {url} uses plain http; https is required (http is allowed only \
                 for loopback hosts such as localhost, 127.0.0.1 or ::1)"
            ),
            EndpointForm::Scheme(other) => {
                format!("endpoint {url} has scheme {other:?}; https is required")
            }
        })
    })?;
    allowed.check(&url).map_err(EndpointRefusal::NotAllowed)?;
    Ok(url)
}

/// The namespace a connection reads a credential (or CA) Secret from: an OkmsConnection only its
/// own (a ref naming another is refused), a ClusterOkmsConnection the one its ref names (which
/// it must name).
pub fn credential_namespace(
    cluster: bool,
    connection_namespace: &str,
    named: Option<&str>,
) -> Result<String, CredentialRefusal> {
    match (cluster, named) {
        (false, Some(n)) if n != connection_namespace => {
            Err(CredentialRefusal::OtherNamespace(n.to_string()))
        }
        (false, _) => Ok(connection_namespace.to_string()),
        (true, Some(n)) => Ok(n.to_string()),
        (true, None) => Err(CredentialRefusal::NoNamespace),
    }
}

/// Why a credential Secret reference is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialRefusal {
    /// An OkmsConnection naming a Secret of another namespace (`NotAllowed`).
    OtherNamespace(String),
    /// A ClusterOkmsConnection's ref without a namespace (`ConnectionNotReady`).
    NoNamespace,
}

/// Whether a ClusterOkmsConnection's `allowedNamespaces` lets `namespace` use it.
#[derive(Debug, PartialEq)]
pub enum NamespaceAccess<'a> {
    Allowed,
    Refused,
    /// Not listed by name: allowed if the Namespace's labels match this selector.
    BySelector(&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector),
}

/// `allowedNamespaces` by name first (absent = no namespace); the selector needs the Namespace's
/// labels, which the caller reads only then ([`selector_matches`]).
pub fn namespace_access<'a>(
    allowed: Option<&'a crate::crd::AllowedNamespaces>,
    namespace: &str,
) -> NamespaceAccess<'a> {
    let Some(allowed) = allowed else {
        return NamespaceAccess::Refused;
    };
    if allowed.names.iter().flatten().any(|n| n == namespace) {
        return NamespaceAccess::Allowed;
    }
    match &allowed.selector {
        Some(selector) => NamespaceAccess::BySelector(selector),
        None => NamespaceAccess::Refused,
    }
}

/// `metav1.LabelSelector` semantics, through kube's [`Selector`]; an empty selector matches
/// nothing here (an empty allowedNamespaces must never open a connection to every namespace),
/// and neither does one that cannot be parsed (an unknown operator).
pub fn selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let mut selector = selector.clone();
    // kube refuses `In`/`NotIn` without values; read a missing list as an empty one, as we always
    // did (`In` then matches nothing, `NotIn` everything)
    for requirement in selector.match_expressions.iter_mut().flatten() {
        requirement.values.get_or_insert_with(Vec::new);
    }
    match Selector::try_from(selector) {
        Ok(selector) => !selector.selects_all() && selector.matches(labels),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &str) -> AllowedEndpoints {
        AllowedEndpoints::parse(list).unwrap_or_else(|e| panic!("{list}: {e}"))
    }

    /// Parses `endpoint` exactly as the connection code does, then checks it.
    fn ok(list: &AllowedEndpoints, endpoint: &str) -> bool {
        let url = Url::parse(endpoint).unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        list.check(&url).is_ok()
    }

    #[test]
    fn the_default_allows_okms_regions_and_loopback_only() {
        let d = AllowedEndpoints::default();
        assert_eq!(d.to_string(), DEFAULT_ALLOWED_ENDPOINTS);
        for good in [
            "https://eu-west-rbx.okms.ovh.net",
            "https://eu-west-rbx.okms.ovh.net:443/",
            "https://a.b.okms.ovh.net/api",
            "https://EU-WEST-RBX.OKMS.OVH.NET",
            "https://eu-west-rbx.okms.ovh.net./",
            "https://127.0.0.1:8443",
            "http://localhost:1234",
            "https://LOCALHOST.:1",
            "http://[::1]:80",
            "http://2130706433/", // decimal 127.0.0.1: the client connects to loopback too
            "http://0x7f.0.0.1/", // hex form, same address
            "http://127.1/",      // shorthand, same address
        ] {
            assert!(ok(&d, good), "{good} should be allowed");
        }
        for bad in [
            "https://evil.com",
            "https://okms.ovh.net", // the wildcard needs a label before it
            "https://okms.ovh.net.evil.com", // suffix of the wrong side
            "https://evilokms.ovh.net", // not a label boundary
            "https://x.okms.ovh.net@evil.com", // userinfo: the host is evil.com
            "https://evil.com#.okms.ovh.net", // fragment
            "https://evil.com/.okms.ovh.net", // path
            "https://evil.com?x=.okms.ovh.net", // query
            "https://evil.com\\.okms.ovh.net", // a backslash ends the host in URLs
            "https://127.0.0.2",    // another loopback address, not listed
            "https://[::ffff:127.0.0.1]", // mapped IPv4: not listed as such
            "https://10.0.0.1",
            "https://eu-west-rbx.okms.ovh.net.evil.com.",
            "https://xn--kms-rna.ovh.net", // ökms.ovh.net in punycode
            "https://ökms.ovh.net",
        ] {
            assert!(!ok(&d, bad), "{bad} should be refused");
        }
    }

    #[test]
    fn refusals_name_the_host_and_the_flag() {
        let url = Url::parse("https://x.okms.ovh.net@Evil.COM./").unwrap();
        let e = AllowedEndpoints::default().check(&url).unwrap_err();
        assert!(e.contains("evil.com."), "{e}");
        assert!(e.contains("--allowed-endpoints"), "{e}");
        assert!(e.contains("OKMS_OPERATOR_ALLOWED_ENDPOINTS"), "{e}");
    }

    #[test]
    fn patterns_are_normalised_like_urls() {
        let l =
            allowed(" *.OKMS.ovh.NET. , Vault.Example.com ,[::1]:8443, 2130706433,ökms.example");
        assert_eq!(
            l.to_string(),
            "*.okms.ovh.net,vault.example.com,[::1]:8443,127.0.0.1,xn--kms-rna.example"
        );
        assert!(ok(&l, "https://vault.example.com."));
        assert!(
            ok(&l, "https://VAULT.example.com:9999"),
            "no port: any port"
        );
        assert!(ok(&l, "https://[::1]:8443"));
        assert!(
            !ok(&l, "https://[::1]:8444"),
            "the port is part of the pattern"
        );
        assert!(ok(&l, "http://127.0.0.1:1"));
        assert!(ok(&l, "https://ÖKMS.example/"), "IDNA on both sides");
        assert!(!ok(&l, "https://sub.vault.example.com"), "exact host only");
    }

    #[test]
    fn ports_match_the_effective_port() {
        let l = allowed("okms.example:443,other.example:8443,::1");
        assert!(ok(&l, "https://okms.example"), "https means 443");
        assert!(ok(&l, "https://okms.example:443"));
        assert!(!ok(&l, "http://okms.example"), "http means 80");
        assert!(!ok(&l, "https://other.example"));
        assert!(ok(&l, "https://other.example:8443"));
        assert!(ok(&l, "https://[::1]:5"), "a bare IPv6 address has no port");
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            " , ",
            "*",
            "*.com",
            "*.*.example.com",
            "a.*.example.com",
            "*example.com",
            "*.127.0.0.1",
            "example.com:0",
            "example.com:99999",
            "example.com:port",
            "[::1",
            "[::1]x",
            "a..b",
            "exa mple.com",
            "a/b",
        ] {
            assert!(AllowedEndpoints::parse(bad).is_err(), "{bad:?} accepted");
        }
        let many = vec!["a.example"; MAX_PATTERNS + 1].join(",");
        assert!(AllowedEndpoints::parse(&many).is_err());
    }

    #[test]
    fn loopback_hosts() {
        for (url, want) in [
            ("http://localhost:1", true),
            ("http://LocalHost.:1", true),
            ("http://127.3.2.1", true),
            ("http://[::1]", true),
            ("http://2130706433", true),
            ("http://localhost.evil.com", false),
            ("http://10.0.0.1", false),
        ] {
            let u = Url::parse(url).unwrap();
            assert_eq!(is_loopback(&u.host().unwrap()), want, "{url}");
        }
    }

    #[test]
    fn allowed_path_entries_are_real_prefixes() {
        for good in [
            "team-a/",
            "team-a",
            "team-a/db/",
            "a.b/c..d/...",
            ".hidden/x",
        ] {
            assert!(check_allowed_path_entry(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "//",
            "/team-a",
            "team-a//x",
            ".",
            "./",
            "..",
            "../",
            "team-a/..",
            "team-a/../team-b/",
            "team-a/./x",
            "team a/",
            "team-a/\u{0}",
        ] {
            assert!(check_allowed_path_entry(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_allowed_path_entry(&"a".repeat(256)).is_err());
        assert!(check_allowed_paths(&["team-a/".into(), "/".into()]).is_err());
        assert!(
            check_allowed_paths(&[]).is_ok(),
            "[] allows nothing, and says so"
        );
    }

    #[test]
    fn allowed_paths_match_whole_segments() {
        let allowed = vec!["team-a/".to_string()];
        assert!(path_allowed("team-a/db", Some(&allowed)));
        assert!(!path_allowed("team-ab/db", Some(&allowed)));
        assert!(!path_allowed("team-b/db", Some(&allowed)));
        assert!(path_allowed("anything", None));
        assert!(!path_allowed("x", Some(&[])));
    }

    #[test]
    fn empty_selector_allows_nothing_and_expressions_work() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
            LabelSelector, LabelSelectorRequirement,
        };
        let labels = std::collections::BTreeMap::from([("team".to_string(), "a".to_string())]);
        assert!(!selector_matches(&LabelSelector::default(), &labels));
        let sel = LabelSelector {
            match_labels: Some(std::collections::BTreeMap::from([(
                "team".to_string(),
                "a".to_string(),
            )])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
        };
        assert!(selector_matches(&sel, &labels));
        let other = std::collections::BTreeMap::from([("team".to_string(), "b".to_string())]);
        assert!(!selector_matches(&sel, &other));
    }

    #[test]
    fn selector_operators_and_missing_values() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
            LabelSelector, LabelSelectorRequirement,
        };
        let one = |operator: &str, values: Option<Vec<&str>>| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: operator.into(),
                values: values.map(|v| v.into_iter().map(String::from).collect()),
            }]),
        };
        let a = std::collections::BTreeMap::from([("team".to_string(), "a".to_string())]);
        let none = std::collections::BTreeMap::new();
        for (sel, on_a, on_none) in [
            (one("In", Some(vec!["a", "b"])), true, false),
            (one("In", Some(vec!["b"])), false, false),
            (one("In", None), false, false),
            (one("NotIn", Some(vec!["a"])), false, true),
            (one("NotIn", Some(vec!["b"])), true, true),
            (one("NotIn", None), true, true),
            (one("Exists", None), true, false),
            (one("DoesNotExist", None), false, true),
            (one("Equals", Some(vec!["a"])), false, false),
        ] {
            assert_eq!(selector_matches(&sel, &a), on_a, "{sel:?} on team=a");
            assert_eq!(
                selector_matches(&sel, &none),
                on_none,
                "{sel:?} on no labels"
            );
        }
        let empty_parts = LabelSelector {
            match_labels: Some(Default::default()),
            match_expressions: Some(vec![]),
        };
        assert!(
            !selector_matches(&empty_parts, &a),
            "empty lists select nothing"
        );
    }

    #[test]
    fn credentials_come_from_the_connections_own_namespace() {
        assert_eq!(credential_namespace(false, "a", None), Ok("a".into()));
        assert_eq!(credential_namespace(false, "a", Some("a")), Ok("a".into()));
        assert_eq!(
            credential_namespace(false, "a", Some("b")),
            Err(CredentialRefusal::OtherNamespace("b".into()))
        );
        assert_eq!(credential_namespace(true, "", Some("b")), Ok("b".into()));
        assert_eq!(
            credential_namespace(true, "", None),
            Err(CredentialRefusal::NoNamespace)
        );
    }

    #[test]
    fn allowed_namespaces_absent_or_empty_allow_none() {
        use crate::crd::AllowedNamespaces;
        assert_eq!(namespace_access(None, "a"), NamespaceAccess::Refused);
        let empty = AllowedNamespaces::default();
        assert_eq!(
            namespace_access(Some(&empty), "a"),
            NamespaceAccess::Refused
        );
        let named = AllowedNamespaces {
            names: Some(vec!["a".into()]),
            selector: Some(Default::default()),
        };
        assert_eq!(
            namespace_access(Some(&named), "a"),
            NamespaceAccess::Allowed
        );
        assert!(matches!(
            namespace_access(Some(&named), "b"),
            NamespaceAccess::BySelector(_)
        ));
    }

    #[test]
    fn the_endpoint_form_is_one_rule_for_the_check_and_the_client() {
        let form = |e: &str| endpoint_form(&Url::parse(e).unwrap());
        assert_eq!(form("https://eu-west-rbx.okms.ovh.net"), Ok(false));
        assert_eq!(form("http://127.0.0.1:8080"), Ok(true));
        assert_eq!(form("http://localhost.:8080"), Ok(true), "as DNS reads it");
        assert_eq!(form("http://[::1]:8080"), Ok(true));
        assert_eq!(form("http://okms.example"), Err(EndpointForm::PlainHttp));
        assert_eq!(
            form("ftp://okms.example"),
            Err(EndpointForm::Scheme("ftp".into()))
        );
        assert_eq!(
            form("https://u:p@okms.example"),
            Err(EndpointForm::Credentials)
        );
        assert_eq!(
            form("https://okms.example/#x"),
            Err(EndpointForm::QueryOrFragment)
        );
    }
}

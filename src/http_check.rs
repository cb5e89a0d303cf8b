//! One HTTP(S) uptime check over a fresh connection, with per-phase timings.
//!
//! A fresh connection is opened for every check (and every redirect hop) so
//! that DNS, connect and TLS times are real and never hidden by pooling.

use crate::policy::AddressPolicy;
use crate::redact::{is_secret_header, is_secret_param, redact_text, redact_url};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    COOKIE, HOST, LOCATION, PROXY_AUTHORIZATION, USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use rustls::pki_types::ServerName;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use url::Url;

/// Upper bound of hyper's read buffer; it also bounds one body read, so
/// `bytes_read` never exceeds `max_body_bytes` by more than this.
pub const MAX_READ_CHUNK: usize = 128 * 1024;

/// Encodings advertised to servers; exactly the ones `decode_one` handles.
const ACCEPTED_ENCODINGS: &str = "gzip, deflate, br";

/// What to check and how to judge the result.
#[derive(Clone)]
pub struct CheckRequest {
    /// Absolute http/https URL; `user:pass@` is sent as Basic auth.
    pub url: String,
    /// GET, HEAD, POST, PUT, PATCH or DELETE.
    pub method: String,
    /// Extra request headers; they override User-Agent and Accept-Encoding.
    pub headers: Vec<(String, String)>,
    /// Request body (dropped for HEAD and for redirects that switch to GET).
    pub body: Option<String>,
    /// Hard limit for the whole check, including redirects and body.
    pub timeout: Duration,
    /// Whether 301/302/303/307/308 responses with a Location are followed.
    pub follow_redirects: bool,
    /// Redirects followed before failing with `ErrorClass::Redirect`.
    pub max_redirects: u32,
    /// Accepted statuses: classes such as "2xx" or exact codes such as "301".
    pub expected_status: Vec<String>,
    /// Text the decoded body must contain.
    pub body_must_contain: Option<String>,
    /// Text the decoded body must not contain.
    pub body_must_not_contain: Option<String>,
    /// Fails the check when `total_ms` exceeds this.
    pub max_response_time_ms: Option<u32>,
    /// Cap on raw body bytes read and on decoded body size.
    pub max_body_bytes: usize,
}

#[cfg(test)]
impl CheckRequest {
    /// A GET check of `url` expecting 2xx, with a 10 s timeout, up to 5
    /// followed redirects and a 1 MiB body cap.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: "GET".to_string(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(10),
            follow_redirects: true,
            max_redirects: 5,
            expected_status: vec!["2xx".to_string()],
            body_must_contain: None,
            body_must_not_contain: None,
            max_response_time_ms: None,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Shared, read-only resources for running checks.
#[derive(Clone)]
pub struct CheckContext {
    /// TLS client configuration (see `build_tls_config`).
    pub tls: Arc<rustls::ClientConfig>,
    /// Which addresses checks may connect to.
    pub policy: Arc<AddressPolicy>,
    /// Default User-Agent header.
    pub user_agent: String,
}

/// Category of a failed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Timeout,
    Dns,
    Connect,
    Tls,
    HttpStatus,
    Assertion,
    Redirect,
    Body,
    Blocked,
    Internal,
}

impl ErrorClass {
    /// Stable lowercase name stored with results.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Dns => "dns",
            ErrorClass::Connect => "connect",
            ErrorClass::Tls => "tls",
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::Assertion => "assertion",
            ErrorClass::Redirect => "redirect",
            ErrorClass::Body => "body",
            ErrorClass::Blocked => "blocked",
            ErrorClass::Internal => "internal",
        }
    }
}

/// Phase durations in milliseconds.
///
/// Each phase is measured per hop and summed over all redirect hops; only
/// phases that completed are counted (a timed-out phase contributes 0).
/// `dns_ms` is 0 for literal IP hosts, `tls_ms` is 0 for http.
/// `ttfb_ms` runs from the start of writing the request to receipt of the
/// response head; `download_ms` covers reading the final body (redirect
/// bodies are not read). `total_ms` is wall clock from check start to end,
/// so the phases never add up to more than it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    pub dns_ms: f64,
    pub connect_ms: f64,
    pub tls_ms: f64,
    pub ttfb_ms: f64,
    pub download_ms: f64,
    pub total_ms: f64,
}

/// Measured result of one check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// True when every expectation held.
    pub success: bool,
    /// Status of the last response head received; None if none arrived.
    pub status_code: Option<u16>,
    /// Phase timings (see `Timings`).
    pub timings: Timings,
    /// Raw bytes read from the wire for the final response body.
    pub bytes_read: u64,
    /// Reading or decoding stopped at `max_body_bytes`.
    pub body_truncated: bool,
    /// Failure category, None on success.
    pub error_class: Option<ErrorClass>,
    /// Human-readable, redacted failure description.
    pub error_message: Option<String>,
    /// Redacted URL of the last hop.
    pub final_url: String,
    /// Redirects followed.
    pub redirects: u32,
    /// Leaf certificate expiry of the last https hop.
    pub tls_cert_not_after: Option<SystemTime>,
    /// The final response's Retry-After, in seconds form (429 and 503 answers).
    pub retry_after: Option<Duration>,
}

/// Builds the TLS client configuration: webpki roots plus the system store,
/// plus the certificates in `extra_ca_pem` if given.
pub fn build_tls_config(extra_ca_pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable system certificates are skipped; the webpki roots remain.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(pem) = extra_ca_pem {
        add_pem_roots(&mut roots, pem)?;
    }
    // An explicit provider avoids depending on a process-wide default.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn add_pem_roots(roots: &mut rustls::RootCertStore, pem: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("invalid PEM in extra CA certificates: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("extra CA certificate rejected: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err("extra CA PEM contains no certificates".to_string());
    }
    Ok(())
}

/// Runs one check; never panics and always returns a measured outcome.
pub async fn run_check(req: &CheckRequest, ctx: &CheckContext) -> CheckOutcome {
    let start = Instant::now();
    let mut progress = Progress::new(redact_url(&req.url));
    let attempt = tokio::time::timeout(req.timeout, execute(req, ctx, &mut progress)).await;
    let result = match attempt {
        Ok(result) => result,
        Err(_) => Err(CheckError::new(
            ErrorClass::Timeout,
            format!(
                "timed out after {} ms {}",
                req.timeout.as_millis(),
                progress.phase.describe()
            ),
        )),
    };
    let total_ms = ms(start.elapsed());
    let result = result.and_then(|resp| check_assertions(req, &resp, &progress, total_ms));
    finish(progress, result, total_ms, &collect_secrets(req))
}

// ---------------------------------------------------------------------------
// Check state and results

struct CheckError {
    class: ErrorClass,
    message: String,
}

impl CheckError {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Start,
    Dns,
    Connect,
    Tls,
    Response,
    Body,
}

impl Phase {
    fn describe(self) -> &'static str {
        match self {
            Phase::Start => "before the request started",
            Phase::Dns => "while resolving the host name",
            Phase::Connect => "while connecting",
            Phase::Tls => "during the TLS handshake",
            Phase::Response => "waiting for the response",
            Phase::Body => "while reading the response body",
        }
    }
}

/// Everything learned so far; survives a timeout so partial results remain.
struct Progress {
    timings: Timings,
    phase: Phase,
    status: Option<u16>,
    bytes_read: u64,
    truncated: bool,
    url: String,
    redirects: u32,
    cert_not_after: Option<SystemTime>,
    retry_after: Option<Duration>,
}

impl Progress {
    fn new(redacted_url: String) -> Self {
        Self {
            timings: Timings::default(),
            phase: Phase::Start,
            status: None,
            bytes_read: 0,
            truncated: false,
            url: redacted_url,
            redirects: 0,
            cert_not_after: None,
            retry_after: None,
        }
    }
}

/// The final response after status checking and body decoding.
struct FinalResponse {
    /// Decoded body; None for HEAD.
    body: Option<Vec<u8>>,
}

fn finish(
    p: Progress,
    result: Result<(), CheckError>,
    total_ms: f64,
    secrets: &[String],
) -> CheckOutcome {
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let (error_class, error_message) = match result {
        Ok(()) => (None, None),
        Err(e) => (Some(e.class), Some(redact_text(&e.message, &secret_refs))),
    };
    CheckOutcome {
        success: error_class.is_none(),
        status_code: p.status,
        timings: Timings {
            total_ms,
            ..p.timings
        },
        bytes_read: p.bytes_read,
        body_truncated: p.truncated,
        error_class,
        error_message,
        final_url: p.url,
        redirects: p.redirects,
        tls_cert_not_after: p.cert_not_after,
        retry_after: p.retry_after,
    }
}

/// Literal secrets that must not appear in messages even in decoded form.
fn collect_secrets(req: &CheckRequest) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Ok(url) = Url::parse(&req.url) {
        if let Some(password) = url.password() {
            secrets.push(password.to_string());
            secrets.push(
                percent_decode_str(password)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
        if let Some(value) = basic_auth(&url) {
            secrets.extend(
                value
                    .to_str()
                    .ok()
                    .map(|v| v.trim_start_matches("Basic ").to_string()),
            );
        }
        for (name, value) in url.query_pairs() {
            if is_secret_param(&name) {
                secrets.push(value.into_owned());
            }
        }
    }
    for (name, value) in &req.headers {
        if is_secret_header(name) {
            secrets.push(value.clone());
            secrets.extend(value.split_once(' ').map(|(_, token)| token.to_string()));
        }
    }
    secrets
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------
// Check flow

async fn execute(
    req: &CheckRequest,
    ctx: &CheckContext,
    p: &mut Progress,
) -> Result<FinalResponse, CheckError> {
    let expected = StatusMatcher::parse(&req.expected_status)?;
    let mut hop = Hop::initial(req)?;
    loop {
        p.url = redact_url(hop.url.as_str());
        p.status = None;
        let mut resp = send_hop(&hop, ctx, p).await?;
        let status = resp.status;
        p.status = Some(status);
        p.retry_after = resp.retry_after();
        if req.follow_redirects && is_redirect(status) {
            if let Some(location) = resp.location() {
                if p.redirects >= req.max_redirects {
                    return Err(too_many_redirects(req.max_redirects, &location));
                }
                hop = hop.follow(status, &location)?;
                p.redirects += 1;
                continue;
            }
        }
        if !expected.matches(status) {
            return Err(CheckError::new(
                ErrorClass::HttpStatus,
                format!("status {status}, expected one of {}", expected.describe()),
            ));
        }
        let body = if hop.method == Method::HEAD {
            None
        } else {
            Some(read_body(&mut resp, req.max_body_bytes, p).await?)
        };
        return Ok(FinalResponse { body });
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

fn too_many_redirects(limit: u32, location: &str) -> CheckError {
    CheckError::new(
        ErrorClass::Redirect,
        format!(
            "too many redirects: the limit of {limit} (max_redirects) was reached; \
             next Location was {}",
            redact_url(location)
        ),
    )
}

fn check_assertions(
    req: &CheckRequest,
    resp: &FinalResponse,
    p: &Progress,
    total_ms: f64,
) -> Result<(), CheckError> {
    let text = String::from_utf8_lossy(resp.body.as_deref().unwrap_or_default());
    let scope = if p.truncated {
        format!(
            " (only the first {} bytes were checked)",
            req.max_body_bytes
        )
    } else {
        String::new()
    };
    if let Some(needle) = &req.body_must_contain {
        if !text.contains(needle.as_str()) {
            return Err(CheckError::new(
                ErrorClass::Assertion,
                format!(
                    "body_must_contain failed: the response body does not contain \"{}\"{scope}",
                    excerpt(needle)
                ),
            ));
        }
    }
    if let Some(needle) = &req.body_must_not_contain {
        if text.contains(needle.as_str()) {
            return Err(CheckError::new(
                ErrorClass::Assertion,
                format!(
                    "body_must_not_contain failed: the response body contains \"{}\"",
                    excerpt(needle)
                ),
            ));
        }
    }
    if let Some(limit) = req.max_response_time_ms {
        if total_ms > f64::from(limit) {
            return Err(CheckError::new(
                ErrorClass::Assertion,
                format!(
                    "max_response_time_ms failed: response took {total_ms:.0} ms, limit is {limit} ms"
                ),
            ));
        }
    }
    Ok(())
}

/// Keeps user-supplied text in messages short.
fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 80;
    if s.chars().count() <= MAX_CHARS {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX_CHARS).collect::<String>())
    }
}

// ---------------------------------------------------------------------------
// Expected status matching

enum StatusRule {
    Class(u16),
    Exact(u16),
}

struct StatusMatcher {
    rules: Vec<StatusRule>,
    labels: Vec<String>,
}

impl StatusMatcher {
    fn parse(entries: &[String]) -> Result<Self, CheckError> {
        let defaults = ["2xx".to_string()];
        let entries = if entries.is_empty() {
            &defaults[..]
        } else {
            entries
        };
        let mut rules = Vec::new();
        let mut labels = Vec::new();
        for entry in entries {
            let label = entry.trim().to_ascii_lowercase();
            rules.push(parse_status_rule(&label).ok_or_else(|| {
                CheckError::new(
                    ErrorClass::Internal,
                    format!(
                        "invalid expected status \"{entry}\": use a code such as 200 or a class such as 2xx"
                    ),
                )
            })?);
            labels.push(label);
        }
        Ok(Self { rules, labels })
    }

    fn matches(&self, status: u16) -> bool {
        self.rules.iter().any(|rule| match rule {
            StatusRule::Class(c) => status / 100 == *c,
            StatusRule::Exact(code) => status == *code,
        })
    }

    fn describe(&self) -> String {
        self.labels.join(", ")
    }
}

fn parse_status_rule(label: &str) -> Option<StatusRule> {
    let bytes = label.as_bytes();
    if bytes.len() == 3 && &bytes[1..] == b"xx" && (b'1'..=b'5').contains(&bytes[0]) {
        return Some(StatusRule::Class(u16::from(bytes[0] - b'0')));
    }
    match label.parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Some(StatusRule::Exact(code)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Hops and request building

/// One request in the redirect chain.
struct Hop {
    url: Url,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Bytes>,
}

impl Hop {
    fn initial(req: &CheckRequest) -> Result<Self, CheckError> {
        let url = Url::parse(req.url.trim()).map_err(|e| {
            CheckError::new(
                ErrorClass::Internal,
                format!("invalid URL {}: {e}", redact_url(&req.url)),
            )
        })?;
        Target::from_url(&url)?;
        let method = parse_method(&req.method)?;
        let headers = parse_headers(&req.headers)?;
        let body = match method {
            Method::HEAD => None,
            _ => req.body.clone().map(Bytes::from),
        };
        Ok(Self {
            url,
            method,
            headers,
            body,
        })
    }

    /// The next hop for a redirect, following browser method rules.
    fn follow(&self, status: u16, location: &str) -> Result<Hop, CheckError> {
        let url = self.url.join(location).map_err(|e| {
            CheckError::new(
                ErrorClass::Redirect,
                format!("invalid redirect Location {}: {e}", redact_url(location)),
            )
        })?;
        if Target::from_url(&url).is_err() {
            return Err(CheckError::new(
                ErrorClass::Redirect,
                format!("redirect to unsupported URL {}", redact_url(url.as_str())),
            ));
        }
        // A Location the target made up is the target's fault, not the checker's.
        if origin_form(&url).is_err() || host_header(&url).is_err() {
            return Err(CheckError::new(
                ErrorClass::Redirect,
                format!(
                    "redirect to an unusable Location ({} characters): not a valid request target",
                    location.len()
                ),
            ));
        }
        let becomes_get = (status == 303 && self.method != Method::HEAD)
            || (matches!(status, 301 | 302) && self.method == Method::POST);
        let mut headers = self.headers.clone();
        let (method, body) = if becomes_get {
            headers.retain(|(name, _)| name != CONTENT_TYPE);
            (Method::GET, None)
        } else {
            (self.method.clone(), self.body.clone())
        };
        if !same_origin(&self.url, &url) {
            headers.retain(|(name, _)| !is_origin_bound_header(name));
        }
        Ok(Hop {
            url,
            method,
            headers,
            body,
        })
    }
}

/// Same scheme, host and port: a redirect to another port or from https to
/// http is another origin, and gets none of the credentials.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Headers that must not follow a redirect to another origin: credentials,
/// cookies, and anything whose name looks secret (X-Api-Key, X-Auth-Token, ...).
fn is_origin_bound_header(name: &HeaderName) -> bool {
    name == AUTHORIZATION || name == PROXY_AUTHORIZATION || name == COOKIE || name == HOST || is_secret_header(name.as_str())
}

/// Headers that control message framing, which this module owns.
fn is_framing_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade" | "te"
    )
}

fn parse_method(method: &str) -> Result<Method, CheckError> {
    let upper = method.trim().to_ascii_uppercase();
    match upper.as_str() {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => {
            Method::from_bytes(upper.as_bytes()).map_err(|e| internal(format!("{e}")))
        }
        _ => Err(internal(format!(
            "unsupported HTTP method \"{}\": use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS",
            excerpt(method)
        ))),
    }
}

fn parse_headers(
    headers: &[(String, String)],
) -> Result<Vec<(HeaderName, HeaderValue)>, CheckError> {
    headers
        .iter()
        .map(|(name, value)| {
            let parsed_name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| internal(format!("invalid header name \"{}\"", excerpt(name))))?;
            // The value is not echoed: it may be a credential.
            let parsed_value = HeaderValue::from_str(value.trim())
                .map_err(|_| internal(format!("invalid value for header \"{parsed_name}\"")))?;
            Ok((parsed_name, parsed_value))
        })
        .collect()
}

fn internal(message: String) -> CheckError {
    CheckError::new(ErrorClass::Internal, message)
}

fn build_request(hop: &Hop, ctx: &CheckContext) -> Result<Request<Full<Bytes>>, CheckError> {
    let body = hop.body.clone().unwrap_or_default();
    let mut request = Request::new(Full::new(body.clone()));
    *request.method_mut() = hop.method.clone();
    *request.uri_mut() = origin_form(&hop.url)?;
    let headers = request.headers_mut();
    for (name, value) in &hop.headers {
        if !is_framing_header(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    set_default(headers, HOST, || host_header(&hop.url))?;
    set_default(headers, USER_AGENT, || {
        HeaderValue::from_str(&ctx.user_agent)
            .map_err(|_| internal("invalid user agent setting".to_string()))
    })?;
    set_default(headers, ACCEPT_ENCODING, || {
        Ok(HeaderValue::from_static(ACCEPTED_ENCODINGS))
    })?;
    if let Some(auth) = basic_auth(&hop.url) {
        set_default(headers, AUTHORIZATION, || Ok(auth))?;
    }
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    let sends_body =
        hop.body.is_some() || matches!(hop.method, Method::POST | Method::PUT | Method::PATCH);
    if sends_body {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    Ok(request)
}

fn set_default(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: impl FnOnce() -> Result<HeaderValue, CheckError>,
) -> Result<(), CheckError> {
    if !headers.contains_key(&name) {
        headers.insert(name, value()?);
    }
    Ok(())
}

/// Path and query as sent on the request line (the fragment stays local).
fn origin_form(url: &Url) -> Result<Uri, CheckError> {
    let path_and_query = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let path_and_query = if path_and_query.is_empty() {
        "/"
    } else {
        path_and_query
    };
    path_and_query
        .parse()
        .map_err(|e| internal(format!("cannot build request target: {e}")))
}

fn host_header(url: &Url) -> Result<HeaderValue, CheckError> {
    HeaderValue::from_str(&url[url::Position::BeforeHost..url::Position::AfterPort])
        .map_err(|_| internal("cannot build Host header".to_string()))
}

/// `Authorization: Basic ...` from the URL's userinfo, if any.
fn basic_auth(url: &Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let user = percent_decode_str(url.username()).decode_utf8_lossy();
    let pass = percent_decode_str(url.password().unwrap_or("")).decode_utf8_lossy();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

// ---------------------------------------------------------------------------
// Network: resolve, connect, TLS, exchange

enum HostKind {
    Name(String),
    Ip(IpAddr),
}

struct Target {
    host: HostKind,
    label: String,
    port: u16,
    tls: bool,
}

impl Target {
    fn from_url(url: &Url) -> Result<Self, CheckError> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(internal(format!(
                    "unsupported URL scheme \"{other}\": only http and https are supported"
                )))
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(name)) => HostKind::Name(name.to_string()),
            Some(url::Host::Ipv4(ip)) => HostKind::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => HostKind::Ip(IpAddr::V6(ip)),
            None => return Err(internal("URL has no host".to_string())),
        };
        Ok(Self {
            host,
            label: url.host_str().unwrap_or_default().to_string(),
            port: url
                .port_or_known_default()
                .unwrap_or(if tls { 443 } else { 80 }),
            tls,
        })
    }
}

/// A response head plus what is needed to read its body.
struct HopResponse {
    status: u16,
    headers: HeaderMap,
    body: Incoming,
    // Dropping these closes the connection, e.g. after a truncated read.
    _sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    _conn: AbortOnDrop,
}

impl HopResponse {
    /// Retry-After given in seconds (the HTTP-date form is not honoured).
    fn retry_after(&self) -> Option<Duration> {
        let value = self.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
        value.trim().parse::<u64>().ok().map(Duration::from_secs)
    }

    fn location(&self) -> Option<String> {
        let value = self.headers.get(LOCATION)?;
        let text = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
        (!text.is_empty()).then_some(text)
    }
}

/// Aborts the connection task when the check finishes or is cancelled.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send_hop(
    hop: &Hop,
    ctx: &CheckContext,
    p: &mut Progress,
) -> Result<HopResponse, CheckError> {
    let target = Target::from_url(&hop.url)?;
    let request = build_request(hop, ctx)?;
    let addrs = resolve(&target, &ctx.policy, p).await?;
    let tcp = connect_any(&addrs, p).await?;
    if target.tls {
        let tls = tls_handshake(tcp, &target, ctx, p).await?;
        exchange(tls, request, p).await
    } else {
        exchange(tcp, request, p).await
    }
}

/// Resolves the host and keeps only addresses the policy admits; the
/// caller connects to exactly these, so a later DNS answer cannot differ.
async fn resolve(
    target: &Target,
    policy: &AddressPolicy,
    p: &mut Progress,
) -> Result<Vec<SocketAddr>, CheckError> {
    let candidates = match &target.host {
        HostKind::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        HostKind::Name(name) => {
            p.phase = Phase::Dns;
            let started = Instant::now();
            let found = tokio::net::lookup_host((name.as_str(), target.port))
                .await
                .map_err(|e| {
                    CheckError::new(
                        ErrorClass::Dns,
                        format!("could not resolve host {name}: {e}"),
                    )
                })?;
            let found: Vec<SocketAddr> = found.collect();
            p.timings.dns_ms += ms(started.elapsed());
            if found.is_empty() {
                return Err(CheckError::new(
                    ErrorClass::Dns,
                    format!("host {name} resolved to no addresses"),
                ));
            }
            found
        }
    };
    apply_policy(&target.label, candidates, policy)
}

fn apply_policy(
    host: &str,
    candidates: Vec<SocketAddr>,
    policy: &AddressPolicy,
) -> Result<Vec<SocketAddr>, CheckError> {
    let mut refusals: Vec<String> = Vec::new();
    let mut allowed = Vec::new();
    for addr in candidates {
        match policy.check(addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(reason) if !refusals.contains(&reason) => refusals.push(reason),
            Err(_) => {}
        }
    }
    if allowed.is_empty() {
        return Err(CheckError::new(
            ErrorClass::Blocked,
            format!(
                "refused to connect to {host}: {}; such addresses are blocked unless \
                 synthetic_monitoring.allowed_networks includes them",
                refusals.join("; ")
            ),
        ));
    }
    Ok(allowed)
}

async fn connect_any(addrs: &[SocketAddr], p: &mut Progress) -> Result<TcpStream, CheckError> {
    p.phase = Phase::Connect;
    let started = Instant::now();
    let mut failures = Vec::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Small request writes must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                p.timings.connect_ms += ms(started.elapsed());
                return Ok(stream);
            }
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    Err(CheckError::new(
        ErrorClass::Connect,
        format!("could not connect to {}", failures.join("; ")),
    ))
}

async fn tls_handshake(
    tcp: TcpStream,
    target: &Target,
    ctx: &CheckContext,
    p: &mut Progress,
) -> Result<TlsStream<TcpStream>, CheckError> {
    p.phase = Phase::Tls;
    let name = match &target.host {
        HostKind::Ip(ip) => ServerName::IpAddress((*ip).into()),
        HostKind::Name(name) => ServerName::try_from(name.clone())
            .map_err(|e| internal(format!("invalid TLS server name {name}: {e}")))?,
    };
    let started = Instant::now();
    let stream = TlsConnector::from(ctx.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| {
            CheckError::new(
                ErrorClass::Tls,
                format!("TLS handshake with {} failed: {e}", target.label),
            )
        })?;
    p.timings.tls_ms += ms(started.elapsed());
    p.cert_not_after = leaf_not_after(&stream);
    Ok(stream)
}

fn leaf_not_after(stream: &TlsStream<TcpStream>) -> Option<SystemTime> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let secs = cert.validity().not_after.timestamp();
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}

async fn exchange<S>(
    io: S,
    request: Request<Full<Bytes>>,
    p: &mut Progress,
) -> Result<HopResponse, CheckError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_READ_CHUNK)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| CheckError::new(ErrorClass::Connect, format!("HTTP setup failed: {e}")))?;
    let conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    p.phase = Phase::Response;
    let started = Instant::now();
    let response = sender.send_request(request).await.map_err(response_error)?;
    p.timings.ttfb_ms += ms(started.elapsed());
    let (parts, body) = response.into_parts();
    Ok(HopResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        _sender: sender,
        _conn: conn,
    })
}

fn response_error(e: hyper::Error) -> CheckError {
    let message = if e.is_incomplete_message() {
        "the server closed the connection before sending a response".to_string()
    } else if e.is_parse() || e.is_parse_status() {
        format!("invalid HTTP response from the server: {}", error_chain(&e))
    } else {
        format!("request failed: {}", error_chain(&e))
    };
    CheckError::new(ErrorClass::Connect, message)
}

/// An error with its sources, which carry the useful detail for hyper.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Body reading and decoding

async fn read_body(
    resp: &mut HopResponse,
    max: usize,
    p: &mut Progress,
) -> Result<Vec<u8>, CheckError> {
    p.phase = Phase::Body;
    let started = Instant::now();
    let raw = read_raw(&mut resp.body, max, p).await?;
    p.timings.download_ms += ms(started.elapsed());
    let (decoded, truncated) = decode_body(&resp.headers, raw, max, p.truncated)?;
    p.truncated |= truncated;
    Ok(decoded)
}

/// Reads at most `max` body bytes; stops (and later drops the connection)
/// as soon as more arrive, so huge or endless bodies are not consumed.
async fn read_raw(
    body: &mut Incoming,
    max: usize,
    p: &mut Progress,
) -> Result<Vec<u8>, CheckError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            CheckError::new(
                ErrorClass::Body,
                format!("error reading the response body: {}", error_chain(&e)),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        p.bytes_read += data.len() as u64;
        let room = max - buf.len();
        if data.len() > room {
            buf.extend_from_slice(&data[..room]);
            p.truncated = true;
            break;
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

/// Undoes every Content-Encoding (last applied first); the output is
/// capped at `max`, which defuses compression bombs.
fn decode_body(
    headers: &HeaderMap,
    raw: Vec<u8>,
    max: usize,
    raw_truncated: bool,
) -> Result<(Vec<u8>, bool), CheckError> {
    let mut data = raw;
    let mut truncated = raw_truncated;
    let mut any_truncated = false;
    for encoding in content_encodings(headers).iter().rev() {
        let (out, cut) = decode_one(encoding, &data, max, truncated)?;
        data = out;
        truncated |= cut;
        any_truncated |= cut;
    }
    Ok((data, any_truncated))
}

fn content_encodings(headers: &HeaderMap) -> Vec<String> {
    let mut encodings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        for encoding in String::from_utf8_lossy(value.as_bytes()).split(',') {
            let encoding = encoding.trim().to_ascii_lowercase();
            if !encoding.is_empty() && encoding != "identity" {
                encodings.push(encoding);
            }
        }
    }
    encodings
}

fn decode_one(
    encoding: &str,
    input: &[u8],
    max: usize,
    input_truncated: bool,
) -> Result<(Vec<u8>, bool), CheckError> {
    if input.is_empty() {
        return Ok((Vec::new(), false));
    }
    match encoding {
        "gzip" | "x-gzip" => read_capped(
            flate2::read::MultiGzDecoder::new(input),
            encoding,
            max,
            input_truncated,
        ),
        "deflate" if looks_like_zlib(input) => read_capped(
            flate2::read::ZlibDecoder::new(input),
            encoding,
            max,
            input_truncated,
        ),
        "deflate" => read_capped(
            flate2::read::DeflateDecoder::new(input),
            encoding,
            max,
            input_truncated,
        ),
        "br" => read_capped(
            brotli::Decompressor::new(input, 4096),
            encoding,
            max,
            input_truncated,
        ),
        other => Err(CheckError::new(
            ErrorClass::Body,
            format!("unsupported Content-Encoding \"{}\"", excerpt(other)),
        )),
    }
}

/// "deflate" is zlib-wrapped per the RFC, but some servers send raw deflate.
fn looks_like_zlib(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn read_capped(
    reader: impl Read,
    encoding: &str,
    max: usize,
    input_truncated: bool,
) -> Result<(Vec<u8>, bool), CheckError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if let Err(e) = reader.take(limit).read_to_end(&mut out) {
        // A cut-off stream cannot decode to the end; keep what decoded.
        if !input_truncated {
            return Err(CheckError::new(
                ErrorClass::Body,
                format!("could not decode the {encoding} response body: {e}"),
            ));
        }
    }
    let truncated = out.len() > max;
    out.truncate(max);
    Ok((out, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    // ---- local test servers ------------------------------------------------

    #[derive(Debug, Clone, Default)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    enum Reply {
        Now(Vec<u8>),
        After(Duration, Vec<u8>),
        /// Sends the bytes, then keeps the connection open without sending more.
        Stall(Vec<u8>),
        /// Sends the head, then body chunks until the client goes away.
        Endless(Vec<u8>),
    }

    type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

    struct Server {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Server {
        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    const ENDLESS_CHUNK: usize = 16 * 1024;

    async fn serve(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
        serve_with(Arc::new(handler), None, "127.0.0.1").await
    }

    async fn serve_with(
        handler: Handler,
        tls: Option<tokio_rustls::TlsAcceptor>,
        ip: &str,
    ) -> Server {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_srv = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (handler, seen, tls) = (handler.clone(), seen_srv.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                handle(stream, handler, seen).await;
                            }
                        }
                        None => handle(tcp, handler, seen).await,
                    }
                });
            }
        });
        Server { addr, seen }
    }

    async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        handler: Handler,
        seen: Arc<Mutex<Vec<Seen>>>,
    ) {
        let Some(request) = read_request(&mut stream).await else {
            return;
        };
        seen.lock().unwrap().push(request.clone());
        match handler(&request) {
            Reply::Now(bytes) => {
                let _ = stream.write_all(&bytes).await;
            }
            Reply::After(delay, bytes) => {
                tokio::time::sleep(delay).await;
                let _ = stream.write_all(&bytes).await;
            }
            Reply::Stall(bytes) => {
                let _ = stream.write_all(&bytes).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Reply::Endless(head) => {
                let _ = stream.write_all(&head).await;
                let chunk = vec![b'x'; ENDLESS_CHUNK];
                while stream.write_all(&chunk).await.is_ok() {}
            }
        }
        let _ = stream.shutdown().await;
    }

    async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Seen> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let mut seen = Seen {
            method: first.next()?.to_string(),
            path: first.next()?.to_string(),
            ..Seen::default()
        };
        for line in lines.filter(|l| !l.is_empty()) {
            let (n, v) = line.split_once(':')?;
            seen.headers
                .push((n.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = seen
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap());
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        seen.body = body;
        Some(seen)
    }

    fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (n, v) in headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    fn ok(body: &str) -> Reply {
        Reply::Now(response("200 OK", &[], body.as_bytes()))
    }

    fn ctx_with(policy: AddressPolicy, tls: rustls::ClientConfig) -> CheckContext {
        CheckContext {
            tls: Arc::new(tls),
            policy: Arc::new(policy),
            user_agent: "test-agent/1.0".to_string(),
        }
    }

    fn ctx() -> CheckContext {
        ctx_with(AddressPolicy::allow_all(), build_tls_config(None).unwrap())
    }

    fn assert_timings(t: &Timings) {
        let phases = [t.dns_ms, t.connect_ms, t.tls_ms, t.ttfb_ms, t.download_ms];
        for phase in phases {
            assert!(phase >= 0.0, "negative phase in {t:?}");
            assert!(phase <= t.total_ms, "phase above total in {t:?}");
        }
        assert!(
            phases.iter().sum::<f64>() <= t.total_ms + 1e-6,
            "phases exceed total in {t:?}"
        );
    }

    fn class(o: &CheckOutcome) -> Option<&'static str> {
        o.error_class.map(|c| c.as_str())
    }

    fn msg(o: &CheckOutcome) -> &str {
        o.error_message.as_deref().unwrap_or("")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    // ---- plain http behaviour ----------------------------------------------

    #[tokio::test]
    async fn ok_200_with_timing_invariants() {
        let server = serve(|_| ok("hello")).await;
        let mut req = CheckRequest::new(server.url("/health?x=1"));
        req.body_must_contain = Some("hell".into());
        let o = run_check(&req, &ctx()).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.status_code, Some(200));
        assert_eq!(o.error_class, None);
        assert_eq!(o.error_message, None);
        assert_eq!(o.bytes_read, 5);
        assert!(!o.body_truncated);
        assert_eq!(o.redirects, 0);
        assert_eq!(o.final_url, server.url("/health?x=1"));
        assert_eq!(o.timings.dns_ms, 0.0, "literal IP needs no DNS");
        assert_eq!(o.timings.tls_ms, 0.0, "plain http has no TLS");
        assert!(o.timings.connect_ms > 0.0 && o.timings.ttfb_ms > 0.0);
        assert_eq!(o.tls_cert_not_after, None);
        assert_timings(&o.timings);
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/health?x=1");
        assert_eq!(seen[0].header("user-agent"), Some("test-agent/1.0"));
        assert_eq!(seen[0].header("accept-encoding"), Some("gzip, deflate, br"));
        assert_eq!(seen[0].header("connection"), Some("close"));
        assert_eq!(
            seen[0].header("host"),
            Some(server.addr.to_string().as_str())
        );
        assert_eq!(seen[0].header("content-length"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_run_concurrently_on_a_multi_thread_runtime() {
        let server = serve(|_| ok("fine")).await;
        let ctx = ctx();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (req, ctx) = (CheckRequest::new(server.url("/")), ctx.clone());
                tokio::spawn(async move { run_check(&req, &ctx).await })
            })
            .collect();
        for h in handles {
            let o = h.await.unwrap();
            assert!(o.success, "{o:?}");
            assert_timings(&o.timings);
        }
        assert_eq!(server.seen().len(), 8);
    }

    #[tokio::test]
    async fn status_500_is_http_status() {
        let server =
            serve(|_| Reply::Now(response("500 Internal Server Error", &[], b"boom"))).await;
        let o = run_check(&CheckRequest::new(server.url("/")), &ctx()).await;
        assert!(!o.success);
        assert_eq!(class(&o), Some("http_status"));
        assert_eq!(msg(&o), "status 500, expected one of 2xx");
        assert_eq!(o.status_code, Some(500));
        assert_timings(&o.timings);
    }

    #[tokio::test]
    async fn expected_status_lists_and_exact_codes() {
        let server = serve(|_| Reply::Now(response("404 Not Found", &[], b""))).await;
        let mut req = CheckRequest::new(server.url("/"));
        req.expected_status = vec!["2xx".into(), "404".into()];
        assert!(run_check(&req, &ctx()).await.success);
        req.expected_status = vec!["200".into(), "301".into()];
        let o = run_check(&req, &ctx()).await;
        assert_eq!(msg(&o), "status 404, expected one of 200, 301");
        req.expected_status = vec!["2xy".into()];
        let o = run_check(&req, &ctx()).await;
        assert_eq!(class(&o), Some("internal"));
        assert!(msg(&o).contains("\"2xy\""), "{o:?}");
        assert_eq!(o.status_code, None);
    }

    #[tokio::test]
    async fn slow_response_times_out_at_the_limit() {
        let server =
            serve(|_| Reply::After(Duration::from_secs(10), response("200 OK", &[], b""))).await;
        let mut req = CheckRequest::new(server.url("/"));
        req.timeout = Duration::from_millis(400);
        let o = run_check(&req, &ctx()).await;
        assert_eq!(class(&o), Some("timeout"));
        assert_eq!(msg(&o), "timed out after 400 ms waiting for the response");
        assert_eq!(o.status_code, None);
        assert!(
            o.timings.total_ms >= 400.0 && o.timings.total_ms < 800.0,
            "{:?}",
            o.timings
        );
        assert!(o.timings.connect_ms > 0.0);
        assert_eq!(o.timings.ttfb_ms, 0.0, "unfinished phase is not counted");
        assert_timings(&o.timings);
    }

    #[tokio::test]
    async fn stalled_body_times_out_keeping_the_status() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec();
        let server = serve(move |_| Reply::Stall(head.clone())).await;
        let mut req = CheckRequest::new(server.url("/"));
        req.timeout = Duration::from_millis(300);
        let o = run_check(&req, &ctx()).await;
        assert_eq!(class(&o), Some("timeout"));
        assert_eq!(
            msg(&o),
            "timed out after 300 ms while reading the response body"
        );
        assert_eq!(o.status_code, Some(200));
        assert_eq!(o.bytes_read, 7);
        assert!(o.timings.ttfb_ms > 0.0);
        assert!(o.timings.total_ms >= 300.0 && o.timings.total_ms < 700.0);
        assert_timings(&o.timings);
    }

    #[tokio::test]
    async fn connection_refused_is_connect() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let o = run_check(
            &CheckRequest::new(format!("http://127.0.0.1:{port}/")),
            &ctx(),
        )
        .await;
        assert_eq!(class(&o), Some("connect"));
        assert_eq!(o.status_code, None);
        assert!(
            msg(&o).starts_with(&format!("could not connect to 127.0.0.1:{port}: ")),
            "{o:?}"
        );
        assert!(msg(&o).to_lowercase().contains("refused"), "{o:?}");
        assert_eq!(o.timings.connect_ms, 0.0);
        assert_timings(&o.timings);
    }

    #[tokio::test]
    async fn unknown_host_is_dns() {
        let o = run_check(&CheckRequest::new("http://nonexistent.invalid/"), &ctx()).await;
        assert_eq!(class(&o), Some("dns"));
        assert!(
            msg(&o).starts_with("could not resolve host nonexistent.invalid"),
            "{o:?}"
        );
        assert_eq!(o.status_code, None);
        assert_timings(&o.timings);
    }

    // ---- redirects -----------------------------------------------------------

    fn redirecting(status: &'static str) -> impl Fn(&Seen) -> Reply + Send + Sync {
        move |seen| match seen.path.as_str() {
            "/old" => Reply::Now(response(status, &[("Location", "/new")], b"moved")),
            _ => ok("new place"),
        }
    }

    #[tokio::test]
    async fn redirect_301_followed() {
        let server = serve(redirecting("301 Moved Permanently")).await;
        let o = run_check(&CheckRequest::new(server.url("/old")), &ctx()).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.status_code, Some(200));
        assert_eq!(o.redirects, 1);
        assert_eq!(o.final_url, server.url("/new"));
        assert_eq!(o.bytes_read, 9);
        assert_timings(&o.timings);
        let paths: Vec<_> = server.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, ["/old", "/new"]);
    }

    #[tokio::test]
    async fn redirect_301_not_followed_is_judged_as_301() {
        let server = serve(redirecting("301 Moved Permanently")).await;
        let mut req = CheckRequest::new(server.url("/old"));
        req.follow_redirects = false;
        let o = run_check(&req, &ctx()).await;
        assert_eq!(class(&o), Some("http_status"));
        assert_eq!(msg(&o), "status 301, expected one of 2xx");
        assert_eq!(o.status_code, Some(301));
        assert_eq!(o.redirects, 0);
        req.expected_status = vec!["301".into()];
        let o = run_check(&req, &ctx()).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.status_code, Some(301));
        assert_eq!(o.final_url, server.url("/old"));
        assert_eq!(server.seen().len(), 2);
    }

    #[tokio::test]
    async fn redirect_loop_fails_fast_naming_the_limit() {
        let server = serve(|_| {
            Reply::Now(response(
                "302 Found",
                &[("Location", "/loop?token=loopsecret99")],
                b"",
            ))
        })
        .await;
        let mut req = CheckRequest::new(server.url("/loop"));
        req.max_redirects = 5;
        req.timeout = Duration::from_secs(10);
        let started = Instant::now();
        let o = run_check(&req, &ctx()).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(class(&o), Some("redirect"));
        assert!(msg(&o).contains("limit of 5"), "{o:?}");
        assert!(msg(&o).contains("/loop?token=***"), "{o:?}");
        assert!(!msg(&o).contains("loopsecret99") && !o.final_url.contains("loopsecret99"));
        assert_eq!(o.redirects, 5);
        assert_eq!(o.status_code, Some(302));
        assert_eq!(server.seen().len(), 6);
        assert_timings(&o.timings);
    }

    #[tokio::test]
    async fn redirect_303_turns_post_into_get() {
        let server = serve(|seen| match seen.path.as_str() {
            "/submit" => Reply::Now(response("303 See Other", &[("Location", "/result")], b"")),
            _ => ok("done"),
        })
        .await;
        let mut req = CheckRequest::new(server.url("/submit"));
        req.method = "POST".into();
        req.body = Some("a=1".into());
        req.headers = vec![(
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        )];
        let o = run_check(&req, &ctx()).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.redirects, 1);
        let seen = server.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].body.as_slice()),
            ("POST", &b"a=1"[..])
        );
        assert_eq!(seen[1].method, "GET");
        assert_eq!(seen[1].path, "/result");
        assert!(seen[1].body.is_empty());
        assert_eq!(seen[1].header("content-length"), None);
        assert_eq!(seen[1].header("content-type"), None);
    }

    #[tokio::test]
    async fn redirect_307_keeps_method_and_body() {
        let server = serve(|seen| match seen.path.as_str() {
            "/a" => Reply::Now(response(
                "307 Temporary Redirect",
                &[("Location", "/b")],
                b"",
            )),
            _ => ok("done"),
        })
        .await;
        let mut req = CheckRequest::new(server.url("/a"));
        req.method = "PUT".into();
        req.body = Some("payload".into());
        assert!(run_check(&req, &ctx()).await.success);
        let seen = server.seen();
        assert_eq!(seen[1].method, "PUT");
        assert_eq!(seen[1].body, b"payload");
    }

    #[tokio::test]
    async fn cross_host_redirect_drops_credentials() {
        let server = serve(|seen| match seen.path.as_str() {
            "/start" => {
                let port = seen
                    .header("host")
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_string();
                let to = format!("http://localhost:{port}/other");
                Reply::Now(response("302 Found", &[("Location", &to)], b""))
            }
            _ => ok("x"),
        })
        .await;
        let mut req =
            CheckRequest::new(server.url("/start").replace("http://", "http://u:pw1234@"));
        req.headers = vec![
            ("Cookie".into(), "sid=abc".into()),
            ("X-Trace".into(), "7".into()),
        ];
        let o = run_check(&req, &ctx()).await;
        assert!(o.success, "{o:?}");
        let seen = server.seen();
        assert_eq!(seen[0].header("authorization"), Some("Basic dTpwdzEyMzQ="));
        assert_eq!(seen[0].header("cookie"), Some("sid=abc"));
        assert_eq!(seen[1].header("authorization"), None);
        assert_eq!(seen[1].header("cookie"), None);
        assert_eq!(seen[1].header("x-trace"), Some("7"));
        assert!(seen[1].header("host").unwrap().starts_with("localhost:"));
    }

    // ---- request shapes ------------------------------------------------------

    #[tokio::test]
    async fn head_request_reads_no_body() {
        let server =
            serve(|_| Reply::Now(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec()))
                .await;
        let mut req = CheckRequest::new(server.url("/"));
        req.method = "head".into();
        req.body = Some("ignored".into());
        let o = run_check(&req, &ctx()).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.bytes_read, 0);
        assert_eq!(o.timings.download_ms, 0.0);
        let seen = server.seen();
        assert_eq!(seen[0].method, "HEAD");
        assert!(seen[0].body.is_empty());
    }

    #[tokio::test]
    async fn post_sends_body_headers_and_basic_auth() {
        let server = serve(|_| Reply::Now(response("201 Created", &[], b"{}"))).await;
        let url = server
            .url("/api?api_key=k3y-s3cret&page=1")
            .replace("http://", "http://bob:p%40ss-w0rd@");
        let mut req = CheckRequest::new(url);
        req.method = "POST".into();
        req.body = Some("{\"ping\":true}".into());
        req.headers = vec![
            ("X-Custom".into(), "yes".into()),
            ("User-Agent".into(), "custom-agent".into()),
            ("Content-Type".into(), "application/json".into()),
        ];
        let o = run_check(&req, &ctx()).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.status_code, Some(201));
        assert_eq!(
            o.final_url,
            server
                .url("/api?api_key=***&page=1")
                .replace("http://", "http://***@")
        );
        let seen = &server.seen()[0];
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.body, b"{\"ping\":true}");
        assert_eq!(seen.header("x-custom"), Some("yes"));
        assert_eq!(seen.header("user-agent"), Some("custom-agent"));
        assert_eq!(seen.header("content-length"), Some("13"));
        // base64("bob:p@ss-w0rd")
        assert_eq!(
            seen.header("authorization"),
            Some("Basic Ym9iOnBAc3MtdzByZA==")
        );
    }

    #[tokio::test]
    async fn errors_never_echo_credentials() {
        let server =
            serve(|_| Reply::Now(response("302 Found", &[("Location", "ftp://x/")], b""))).await;
        let url = server
            .url("/?session=abcd1234")
            .replace("http://", "http://bob:hunter22@");
        let o = run_check(&CheckRequest::new(url), &ctx()).await;
        assert_eq!(class(&o), Some("redirect"));
        assert_eq!(msg(&o), "redirect to unsupported URL ftp://x/");
        assert!(!o.final_url.contains("hunter22") && !o.final_url.contains("abcd1234"));
        let o = run_check(
            &CheckRequest::new("http://bob:hunter22@nonexistent.invalid/?token=zz"),
            &ctx(),
        )
        .await;
        assert_eq!(class(&o), Some("dns"));
        assert_eq!(o.final_url, "http://***@nonexistent.invalid/?token=***");
        assert!(!msg(&o).contains("hunter22"));
    }

    #[tokio::test]
    async fn invalid_request_parts_are_internal() {
        let server = serve(|_| ok("")).await;
        let mut req = CheckRequest::new(server.url("/"));
        req.headers = vec![("Bad Header".into(), "v".into())];
        let o = run_check(&req, &ctx()).await;
        assert_eq!(class(&o), Some("internal"));
        assert_eq!(msg(&o), "invalid header name \"Bad Header\"");
        req.headers = vec![("X-Token".into(), "line\nbreak-secret".into())];
        let o = run_check(&req, &ctx()).await;
        assert_eq!(msg(&o), "invalid value for header \"x-token\"");
        req.headers.clear();
        req.method = "BREW".into();
        assert_eq!(class(&run_check(&req, &ctx()).await), Some("internal"));
        let o = run_check(&CheckRequest::new("ftp://example.com/"), &ctx()).await;
        assert_eq!(class(&o), Some("internal"));
        assert!(msg(&o).contains("\"ftp\""));
        let o = run_check(&CheckRequest::new("not a url"), &ctx()).await;
        assert_eq!(class(&o), Some("internal"));
        assert!(server.seen().is_empty());
    }

    #[tokio::test]
    async fn slow_response_fails_max_response_time() {
        let server =
            serve(|_| Reply::After(Duration::from_millis(300), response("200 OK", &[], b"ok")))
                .await;
        let mut req = CheckRequest::new(server.url("/"));
        req.max_response_time_ms = Some(100);
        let o = run_check(&req, &ctx()).await;
        assert_eq!(class(&o), Some("assertion"));
        assert_eq!(o.status_code, Some(200));
        assert!(
            msg(&o).starts_with("max_response_time_ms failed: response took 3"),
            "{o:?}"
        );
        assert!(msg(&o).ends_with("limit is 100 ms"), "{o:?}");
        req.max_response_time_ms = Some(5000);
        assert!(run_check(&req, &ctx()).await.success);
    }

    // ---- bodies and encodings ---------------------------------------------

    #[tokio::test]
    async fn gzip_body_with_forbidden_keyword_fails_assertion() {
        let body = gzip(b"<html>status: ERROR database down</html>");
        let server =
            serve(move |_| Reply::Now(response("200 OK", &[("Content-Encoding", "gzip")], &body)))
                .await;
        let mut req = CheckRequest::new(server.url("/"));
        req.body_must_contain = Some("status:".into());
        req.body_must_not_contain = Some("ERROR".into());
        let o = run_check(&req, &ctx()).await;
        assert_eq!(class(&o), Some("assertion"));
        assert_eq!(
            msg(&o),
            "body_must_not_contain failed: the response body contains \"ERROR\""
        );
        req.body_must_not_contain = None;
        req.body_must_contain = Some("all good".into());
        let o = run_check(&req, &ctx()).await;
        assert_eq!(
            msg(&o),
            "body_must_contain failed: the response body does not contain \"all good\""
        );
    }

    async fn check_encoded(encoding: &'static str, body: Vec<u8>) -> CheckOutcome {
        let len = body.len();
        let server = serve(move |_| {
            Reply::Now(response("200 OK", &[("Content-Encoding", encoding)], &body))
        })
        .await;
        let mut req = CheckRequest::new(server.url("/"));
        req.body_must_contain = Some("decoded fine".into());
        let o = run_check(&req, &ctx()).await;
        assert_eq!(o.bytes_read, len as u64);
        o
    }

    #[tokio::test]
    async fn brotli_and_deflate_are_decoded() {
        let text = b"brotli or deflate: decoded fine";
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 9, 22);
            w.write_all(text).unwrap();
        }
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(text).unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(text).unwrap();
        for (enc, body) in [
            ("br", br),
            ("deflate", zlib.finish().unwrap()),
            ("deflate", raw.finish().unwrap()),
        ] {
            let o = check_encoded(enc, body).await;
            assert!(o.success, "{enc}: {o:?}");
        }
        let o = check_encoded("gzip, br", Vec::new()).await;
        assert_eq!(
            class(&o),
            Some("assertion"),
            "empty encoded body decodes to empty text"
        );
    }

    #[tokio::test]
    async fn corrupt_or_unknown_encoding_is_body_error() {
        let o = check_encoded("gzip", b"definitely not gzip".to_vec()).await;
        assert_eq!(class(&o), Some("body"));
        assert!(
            msg(&o).starts_with("could not decode the gzip response body"),
            "{o:?}"
        );
        let o = check_encoded("zstd", b"abc".to_vec()).await;
        assert_eq!(class(&o), Some("body"));
        assert_eq!(msg(&o), "unsupported Content-Encoding \"zstd\"");
    }

    #[tokio::test]
    async fn gzip_bomb_is_capped_when_decoding() {
        let bomb = gzip(&vec![b'a'; 20 * 1024 * 1024]);
        let bomb_len = bomb.len() as u64;
        let server =
            serve(move |_| Reply::Now(response("200 OK", &[("Content-Encoding", "gzip")], &bomb)))
                .await;
        let mut req = CheckRequest::new(server.url("/"));
        req.max_body_bytes = 64 * 1024;
        req.body_must_contain = Some("aaaa".into());
        let o = run_check(&req, &ctx()).await;
        assert!(o.success, "{o:?}");
        assert!(o.body_truncated);
        assert_eq!(o.bytes_read, bomb_len, "compressed size is under the cap");
    }

    #[tokio::test]
    async fn endless_body_stops_at_the_cap() {
        let server = serve(|_| {
            Reply::Endless(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec())
        })
        .await;
        let mut req = CheckRequest::new(server.url("/stream"));
        req.max_body_bytes = 256 * 1024;
        req.timeout = Duration::from_secs(20);
        req.body_must_contain = Some("xxxx".into());
        let started = Instant::now();
        let o = run_check(&req, &ctx()).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(o.success, "{o:?}");
        assert!(o.body_truncated);
        assert!(o.bytes_read > 256 * 1024);
        assert!(
            o.bytes_read <= (256 * 1024 + MAX_READ_CHUNK) as u64,
            "{}",
            o.bytes_read
        );
        assert!(o.timings.download_ms > 0.0);
        assert_timings(&o.timings);
    }

    #[tokio::test]
    async fn endless_body_with_must_contain_reports_scope() {
        let server = serve(|_| Reply::Endless(b"HTTP/1.1 200 OK\r\n\r\n".to_vec())).await;
        let mut req = CheckRequest::new(server.url("/"));
        req.max_body_bytes = 32 * 1024;
        req.body_must_contain = Some("needle".into());
        let o = run_check(&req, &ctx()).await;
        assert_eq!(class(&o), Some("assertion"));
        assert_eq!(
            msg(&o),
            "body_must_contain failed: the response body does not contain \"needle\" (only the first 32768 bytes were checked)"
        );
    }

    // ---- address policy ----------------------------------------------------

    #[tokio::test]
    async fn policy_blocks_loopback_literal_and_name() {
        let server = serve(|_| ok("secret internal page")).await;
        let strict = ctx_with(AddressPolicy::new(vec![]), build_tls_config(None).unwrap());
        let o = run_check(&CheckRequest::new(server.url("/")), &strict).await;
        assert_eq!(class(&o), Some("blocked"));
        assert!(
            msg(&o).starts_with("refused to connect to 127.0.0.1: 127.0.0.1 is a loopback address"),
            "{o:?}"
        );
        assert!(msg(&o).contains("synthetic_monitoring.allowed_networks"), "{o:?}");
        assert_eq!(o.status_code, None);
        let o = run_check(
            &CheckRequest::new(format!("http://localhost:{}/", server.addr.port())),
            &strict,
        )
        .await;
        assert_eq!(class(&o), Some("blocked"));
        assert!(
            msg(&o).starts_with("refused to connect to localhost: "),
            "{o:?}"
        );
        assert!(msg(&o).contains("is a loopback address"), "{o:?}");
        assert!(server.seen().is_empty(), "nothing may reach the server");
    }

    #[tokio::test]
    async fn policy_blocks_redirect_into_a_refused_network() {
        let target = serve_with(Arc::new(|_: &Seen| ok("metadata")), None, "127.0.0.2").await;
        let redirect_to = format!("http://{}/latest", target.addr);
        let front =
            serve(move |_| Reply::Now(response("302 Found", &[("Location", &redirect_to)], b"")))
                .await;
        // A v4-mapped allowlist entry also admits the plain v4 address.
        let policy = AddressPolicy::parse_allowlist("::ffff:127.0.0.1/128, 127.0.0.2").unwrap();
        let mut strict = ctx_with(policy, build_tls_config(None).unwrap());
        let o = run_check(&CheckRequest::new(front.url("/")), &strict).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.redirects, 1);
        strict.policy = Arc::new(AddressPolicy::parse_allowlist("127.0.0.1").unwrap());
        let o = run_check(&CheckRequest::new(front.url("/")), &strict).await;
        assert_eq!(class(&o), Some("blocked"));
        assert!(
            msg(&o).starts_with("refused to connect to 127.0.0.2: 127.0.0.2 is a loopback address"),
            "{o:?}"
        );
        assert_eq!(o.redirects, 1);
        assert_eq!(o.status_code, None);
        assert_eq!(o.final_url, format!("http://{}/latest", target.addr));
        assert_eq!((front.seen().len(), target.seen().len()), (2, 1));
    }

    #[tokio::test]
    async fn allowlist_admits_localhost() {
        let server = serve(|_| ok("fine")).await;
        let policy = AddressPolicy::parse_allowlist("127.0.0.0/8").unwrap();
        let allowed = ctx_with(policy, build_tls_config(None).unwrap());
        let o = run_check(
            &CheckRequest::new(format!("http://localhost:{}/", server.addr.port())),
            &allowed,
        )
        .await;
        assert!(o.success, "{o:?}");
        assert!(o.timings.dns_ms > 0.0, "a host name is resolved");
        assert_timings(&o.timings);
        assert_eq!(
            server.seen()[0].header("host"),
            Some(format!("localhost:{}", server.addr.port()).as_str())
        );
    }

    // ---- https ---------------------------------------------------------------

    struct TestPki {
        ca_pem: String,
        acceptor: tokio_rustls::TlsAcceptor,
        not_after_unix: i64,
    }

    fn test_pki() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "check test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        leaf.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let not_after_unix = leaf.not_after.unix_timestamp();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone()], key)
            .unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            not_after_unix,
        }
    }

    #[tokio::test]
    async fn https_success_records_tls_time_and_expiry() {
        let pki = test_pki();
        let server = serve_with(
            Arc::new(|_: &Seen| ok("secure")),
            Some(pki.acceptor.clone()),
            "127.0.0.1",
        )
        .await;
        let ctx = ctx_with(
            AddressPolicy::allow_all(),
            build_tls_config(Some(&pki.ca_pem)).unwrap(),
        );
        for host in ["127.0.0.1".to_string(), "localhost".to_string()] {
            let url = format!("https://{host}:{}/", server.addr.port());
            let mut req = CheckRequest::new(url.clone());
            req.body_must_contain = Some("secure".into());
            let o = run_check(&req, &ctx).await;
            assert!(o.success, "{host}: {o:?}");
            assert_eq!(o.final_url, url);
            assert!(o.timings.tls_ms > 0.0);
            assert_timings(&o.timings);
            let expiry = o.tls_cert_not_after.expect("certificate expiry");
            let secs = expiry.duration_since(UNIX_EPOCH).unwrap().as_secs();
            assert_eq!(secs as i64, pki.not_after_unix);
            assert_eq!(secs, 1_936_742_400, "2031-05-17T00:00:00Z");
        }
    }

    #[tokio::test]
    async fn https_with_unknown_ca_is_tls() {
        let pki = test_pki();
        let server = serve_with(
            Arc::new(|_: &Seen| ok("secure")),
            Some(pki.acceptor.clone()),
            "127.0.0.1",
        )
        .await;
        let o = run_check(
            &CheckRequest::new(format!("https://127.0.0.1:{}/", server.addr.port())),
            &ctx(),
        )
        .await;
        assert_eq!(class(&o), Some("tls"));
        assert!(
            msg(&o).starts_with("TLS handshake with 127.0.0.1 failed: "),
            "{o:?}"
        );
        assert!(msg(&o).contains("UnknownIssuer"), "{o:?}");
        assert_eq!(o.status_code, None);
        assert_eq!(o.tls_cert_not_after, None);
        assert!(o.timings.connect_ms > 0.0);
        assert_eq!(o.timings.tls_ms, 0.0);
        assert!(server.seen().is_empty());
    }

    #[test]
    fn extra_ca_pem_must_contain_certificates() {
        assert!(build_tls_config(None).is_ok());
        assert_eq!(
            build_tls_config(Some("nothing")).unwrap_err(),
            "extra CA PEM contains no certificates"
        );
    }
}

//! Removal of credentials and secrets from URLs, headers and free text before
//! they are stored or shown.

use percent_encoding::percent_decode_str;

/// Placeholder that replaces every redacted value.
pub const MASK: &str = "***";

/// Query parameter name fragments that mark a value as secret.
const SECRET_PARAM_WORDS: &[&str] = &[
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "sig",
    "signature",
    "session",
    "credential",
    "code",
    "jwt",
    "bearer",
    "pass",
    "sid",
];

/// Header names that are always secret.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Header name fragments that mark a header as secret.
const SECRET_HEADER_WORDS: &[&str] = &["token", "secret", "key", "auth", "password", "session"];

/// Replaces the userinfo (`user:pass@`) with `***@` and the values of
/// secret-looking query (and fragment) parameters with `***`.
/// Never panics; unparsable input gets a conservative textual scrub.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => redact_parsed(parsed).unwrap_or_else(|| scrub_unparsed(url)),
        Err(_) => scrub_unparsed(url),
    }
}

/// Only the origin of a URL (`scheme://host[:port]/***`): for destinations
/// such as Slack webhooks, whose path is the secret.
pub fn origin_only(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.host_str().is_some() => {
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}/{MASK}", parsed.scheme(), parsed.host_str().unwrap_or_default())
        }
        _ => MASK.to_string(),
    }
}

/// Returns true when a header's value must not be shown.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str()) || SECRET_HEADER_WORDS.iter().any(|w| name.contains(w))
}

/// Replaces every occurrence of each secret (at least 4 characters long)
/// in `text` with `***`; shorter secrets are ignored to avoid mangling text.
pub fn redact_text(text: &str, secrets: &[&str]) -> String {
    let mut sorted: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| s.chars().count() >= 4)
        .collect();
    // Longest first so a secret containing another is masked whole.
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    sorted
        .into_iter()
        .fold(text.to_string(), |acc, secret| acc.replace(secret, MASK))
}

/// Returns true when a query parameter name looks like it carries a secret.
pub fn is_secret_param(name: &str) -> bool {
    let decoded = percent_decode_str(&name.replace('+', " "))
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    SECRET_PARAM_WORDS.iter().any(|w| decoded.contains(w))
}

fn redact_parsed(mut url: url::Url) -> Option<String> {
    if !url.username().is_empty() || url.password().is_some() {
        url.set_password(None).ok()?;
        url.set_username(MASK).ok()?;
    }
    if let Some(query) = url.query() {
        let redacted = redact_pairs(query);
        url.set_query(Some(&redacted));
    }
    if let Some(fragment) = url.fragment() {
        // Fragments carry tokens in some login flows (#access_token=...).
        let redacted = redact_pairs(fragment);
        url.set_fragment(Some(&redacted));
    }
    Some(url.to_string())
}

/// Masks values of secret `name=value` pairs in an `&`-separated string,
/// keeping everything else byte for byte.
fn redact_pairs(pairs: &str) -> String {
    pairs
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={MASK}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Textual scrub for input the URL parser rejects: masks everything between
/// "://" and the last '@', then secret query values.
fn scrub_unparsed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    if let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        if let Some(at) = rest.rfind('@') {
            out.push_str(MASK);
            rest = &rest[at..];
        }
    }
    match rest.split_once('?') {
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            out.push_str(&redact_pairs(query));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(&redact_pairs(f));
            }
        }
        None => out.push_str(rest),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_replaced() {
        assert_eq!(
            redact_url("https://alice:s3cret@example.com/path"),
            "https://***@example.com/path"
        );
        assert_eq!(
            redact_url("http://alice@example.com:8080/"),
            "http://***@example.com:8080/"
        );
        assert_eq!(
            redact_url("http://:pw@example.com/"),
            "http://***@example.com/"
        );
    }

    #[test]
    fn plain_url_is_unchanged() {
        let u = "https://example.com/a/b?page=2&q=hello%20world#top";
        assert_eq!(redact_url(u), u);
    }

    #[test]
    fn secret_query_values_are_masked() {
        assert_eq!(
            redact_url(
                "https://example.com/x?api_key=abc&page=2&Token=zzz&X-Amz-Signature=ff&state=1"
            ),
            "https://example.com/x?api_key=***&page=2&Token=***&X-Amz-Signature=***&state=1"
        );
        assert_eq!(
            redact_url("https://example.com/cb?code=12345&session_id=9"),
            "https://example.com/cb?code=***&session_id=***"
        );
        assert_eq!(
            redact_url("https://example.com/#access_token=abc&x=1"),
            "https://example.com/#access_token=***&x=1"
        );
        assert_eq!(
            redact_url("https://example.com/?pass%77ord=hunter2"),
            "https://example.com/?pass%77ord=***"
        );
    }

    #[test]
    fn malformed_urls_are_scrubbed_without_panic() {
        assert_eq!(
            redact_url("http://user:p@ss@[bad-host/x?token=1&a=2"),
            "http://***@[bad-host/x?token=***&a=2"
        );
        assert_eq!(
            redact_url("https://u:pw@exa mple.com/"),
            "https://***@exa mple.com/"
        );
        assert_eq!(redact_url("not a url?secret=x"), "not a url?secret=***");
        assert_eq!(redact_url(""), "");
        assert_eq!(redact_url("://@"), "://***@");
        assert_eq!(redact_url("http://[::1"), "http://[::1");
        assert_eq!(
            redact_url("\u{1F600}://\u{1F600}@?key=\u{1F600}"),
            "\u{1F600}://***@?key=***"
        );
    }

    #[test]
    fn secret_headers() {
        for h in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "Set-Cookie",
            "X-API-Key",
            "X-Auth-Token",
            "x-session-id",
            "X-Client-Secret",
            "X-Password",
        ] {
            assert!(is_secret_header(h), "{h}");
        }
        for h in ["Accept", "Content-Type", "User-Agent", "X-Request-Id"] {
            assert!(!is_secret_header(h), "{h}");
        }
    }

    #[test]
    fn text_secrets_are_masked() {
        assert_eq!(
            redact_text(
                "login hunter2 failed for hunter2x",
                &["hunter2", "hunter2x", "ab"]
            ),
            "login *** failed for ***"
        );
        assert_eq!(redact_text("ab cd", &["ab"]), "ab cd");
        assert_eq!(redact_text("nothing here", &[]), "nothing here");
    }

    #[test]
    fn tokens_by_other_names_are_masked_too() {
        assert_eq!(
            redact_url("https://h.example/cb?jwt=eyJ.a.b&bearer=x1&passphrase=p&sid=42&page=2"),
            "https://h.example/cb?jwt=***&bearer=***&passphrase=***&sid=***&page=2"
        );
    }

    #[test]
    fn origin_only_keeps_scheme_host_and_port() {
        assert_eq!(origin_only("https://u:p@hooks.slack.com/services/T0/B0/SECRET"), "https://hooks.slack.com/***");
        assert_eq!(origin_only("http://127.0.0.1:8080/x?token=1"), "http://127.0.0.1:8080/***");
        assert_eq!(origin_only("not a url"), "***");
    }
}

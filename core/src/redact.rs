//! Secrets out of URLs before anything shows them: the password of the userinfo
//! (`scheme://user:PASSWORD@host`) and the values of query parameters that carry credentials
//! (`?password=…`, `?sslpassword=…`, `?api_key=…`, `?token=…`). Every message, log line, report
//! and summary that names a database or server URL goes through [`redact_url`] (or
//! [`redact_urls_in`] for free text): this is the one place the rule is written.
//!
//! When in doubt, more is hidden: the userinfo ends at the LAST `@` before the host (a password
//! may contain `@`, `/`, `?` or `:`), so a URL whose path or query holds an `@` may lose its host
//! in the redacted form, but never shows a password.
//!
//! Text a server wrote (an error body may repeat the request's credentials) goes through
//! [`redact_secrets`]: the connection's own secrets (its API key, its URL's password, from
//! [`url_secrets`]), any `Bearer …` / `Basic …` credential, and any URL's password.

/// What a secret is replaced with.
pub const REDACTED: &str = "***";

/// `url` with the userinfo's password and every credential-like query value replaced by `***`.
/// Text that is not a URL comes back unchanged (apart from a `?key=value` tail, which is
/// treated as a query).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").filter(|&i| is_scheme(&url[..i])) else {
        return redact_query(url);
    };
    let head = &url[..scheme_end + 3];
    let rest = &url[scheme_end + 3..];
    let userinfo = userinfo_end(rest).map(|at| (&rest[..at], &rest[at + 1..]));
    match userinfo.and_then(|(userinfo, host)| Some((userinfo.split_once(':')?.0, host))) {
        Some((user, host)) => format!("{head}{user}:{REDACTED}@{}", redact_query(host)),
        // No password in the userinfo (or no userinfo): only the query may hold a secret.
        None => format!("{head}{}", redact_query(rest)),
    }
}

/// `text` with every `scheme://…` in it passed through [`redact_url`]: for messages that may
/// quote a URL someone else formatted. A URL ends at the next whitespace; punctuation that ends
/// it there (`:` `,` `;` `.` `)` …, as in `cannot open URL: reason`) is the sentence's, and stays.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = rest[..sep]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(sep, |(i, _)| i);
        let end = rest[sep..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |i| sep + i);
        let end = sep
            + 3
            + rest[sep + 3..end]
                .trim_end_matches(TRAILING_PUNCTUATION)
                .len();
        out.push_str(&rest[..start]);
        if is_scheme(&rest[start..sep]) {
            out.push_str(&redact_url(&rest[start..end]));
        } else {
            out.push_str(&rest[start..end]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Characters that end a sentence's clause rather than a URL when they close the URL's text.
const TRAILING_PUNCTUATION: &[char] = &[':', ',', ';', '.', '!', ')', ']', '}', '>', '"', '\''];

/// `text` (a message a server wrote, or one that quotes it) with every occurrence of `secrets`
/// (empty ones ignored), every `Bearer …` and `Basic …` credential and every URL's password
/// replaced by `***`. The one function that cleans such text before it is shown, logged or
/// stored.
pub fn redact_secrets(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    // The longest first, so that a secret containing another is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in secrets {
        out = out.replace(secret, REDACTED);
    }
    redact_urls_in(&redact_auth_schemes(&out))
}

/// The secrets `url` carries: the password of its userinfo (as written and percent-decoded,
/// the form an `Authorization: Basic` header encodes) and the values of its credential-like
/// query parameters, for [`redact_secrets`].
pub fn url_secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let rest = url
        .find("://")
        .filter(|&i| is_scheme(&url[..i]))
        .map_or(url, |i| &url[i + 3..]);
    let mut query_from = rest;
    if let Some(at) = userinfo_end(rest) {
        if let Some((_, password)) = rest[..at].split_once(':') {
            out.push(password.to_string());
            out.push(percent_decode(password));
        }
        query_from = &rest[at + 1..];
    }
    if let Some((_, query)) = query_from.split_once('?') {
        for param in query.split(['&', '#']) {
            if let Some((key, value)) = param.split_once('=')
                && is_secret_key(key)
            {
                out.push(value.to_string());
                out.push(percent_decode(value));
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out.dedup();
    out
}

/// `text` with the credential after each `Bearer` or `Basic` (any case, then whitespace, as in
/// an `Authorization` header) replaced by `***`. Prose such as "basic usage" loses its next word
/// too: more is hidden, never less.
fn redact_auth_schemes(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut from) = (0, 0);
    while let Some(word_end) = next_auth_scheme(&lower, from) {
        let after = &text[word_end..];
        let start = word_end + (after.len() - after.trim_start().len());
        let len = text[start..]
            .find(|c: char| !is_token_char(c))
            .unwrap_or(text.len() - start);
        let len = text[start..start + len].trim_end_matches('.').len();
        if len > 0 {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = start + len;
        }
        from = start + len;
    }
    out.push_str(&text[copied..]);
    out
}

/// Where the first `bearer`/`basic` word at or after `from` in `lower` that is followed by
/// whitespace ends.
fn next_auth_scheme(lower: &str, mut from: usize) -> Option<usize> {
    loop {
        let (at, len) = ["bearer", "basic"]
            .iter()
            .filter_map(|w| lower[from..].find(w).map(|i| (from + i, w.len())))
            .min()?;
        let before = lower[..at].chars().next_back();
        let after = lower[at + len..].chars().next();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && after.is_some_and(char::is_whitespace)
        {
            return Some(at + len);
        }
        from = at + len;
    }
}

/// A character of a bearer token or a base64 credential (RFC 6750's b64token).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=')
}

/// `%XX` escapes decoded (invalid ones and non-UTF-8 results kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// A URL scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Where the userinfo of `rest` (the URL after `scheme://`) ends: the last `@` before the first
/// `/`, `?` or `#` that follows the first `@`. `None` when there is no userinfo.
fn userinfo_end(rest: &str) -> Option<usize> {
    if rest.starts_with('/') {
        return None; // an empty authority (sqlite:///path): no userinfo
    }
    let first = rest.find('@')?;
    let end = rest[first..]
        .find(['/', '?', '#'])
        .map_or(rest.len(), |i| first + i);
    rest[..end].rfind('@')
}

/// The query of `s` (after its first `?`) with credential values replaced.
fn redact_query(s: &str) -> String {
    let Some((before, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _value)) if is_secret_key(key) => format!("{key}={REDACTED}"),
            _ => param.to_string(),
        })
        .collect();
    format!("{before}?{}", params.join("&"))
}

/// Whether a query parameter's name says it carries a credential.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "sig",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive() {
        let cases = [
            // (url, shown)
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u:p@ss@host/db", "postgres://u:***@host/db"),
            (
                "postgres://user@hostname:password@hostname:5432/database",
                "postgres://user@hostname:***@hostname:5432/database",
            ),
            (
                "postgresql://u:p@s:s@w@host:5432/db?sslmode=disable",
                "postgresql://u:***@host:5432/db?sslmode=disable",
            ),
            ("postgres://u:p/ss?#@host/db", "postgres://u:***@host/db"),
            ("postgres://u:@host/db", "postgres://u:***@host/db"),
            (
                "postgres://u@host/db?password=hunter2",
                "postgres://u@host/db?password=***",
            ),
            (
                "postgres://host/db?sslmode=require&PassWord=a@b&x=1",
                "postgres://host/db?sslmode=require&PassWord=***&x=1",
            ),
            (
                "postgres://h/db?sslpassword=k&application_name=me",
                "postgres://h/db?sslpassword=***&application_name=me",
            ),
            (
                "https://user:sk-123@api.example.com/v1",
                "https://user:***@api.example.com/v1",
            ),
            (
                "https://api.example.com/v1?api_key=sk-1&api-version=2",
                "https://api.example.com/v1?api_key=***&api-version=2",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://u@h/db?password=a@b&sslmode=disable",
                "postgres://u@h/db?password=***&sslmode=disable",
            ),
            ("sqlite://x.db", "sqlite://x.db"),
            ("sqlite:///tmp/a:b@c.db", "sqlite:///tmp/a:b@c.db"),
            ("instill.db", "instill.db"),
            ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        let text = "cannot open database postgres://u:p@ss@h/db: refused; see (https://k:sk@x/v1)";
        assert_eq!(
            redact_urls_in(text),
            "cannot open database postgres://u:***@h/db: refused; see (https://k:***@x/v1)"
        );
        assert_eq!(redact_urls_in("no url here: a@b"), "no url here: a@b");
        assert_eq!(redact_urls_in("://odd"), "://odd");
        assert_eq!(redact_urls_in("中文 x://u:p@h 中"), "中文 x://u:***@h 中");
    }

    #[test]
    fn punctuation_after_a_url_stays() {
        let cases = [
            (
                "cannot open database postgres://u@h:5432/trial_nx?password=x: error returned",
                "cannot open database postgres://u@h:5432/trial_nx?password=***: error returned",
            ),
            (
                "see postgres://u:p@h/db, then",
                "see postgres://u:***@h/db, then",
            ),
            ("(postgres://h/db?token=t).", "(postgres://h/db?token=***)."),
            ("at postgres://u:p@h/db:", "at postgres://u:***@h/db:"),
            ("x://", "x://"),
        ];
        for (text, shown) in cases {
            assert_eq!(redact_urls_in(text), shown, "{text}");
        }
    }

    #[test]
    fn server_text_loses_keys_passwords_and_credentials() {
        let url = "http://u:K3y%40Pw@127.0.0.1:18085/v1?api_key=sk-q&x=1";
        let mut secrets = url_secrets(url);
        assert_eq!(secrets, ["K3y%40Pw", "K3y@Pw", "sk-q"]);
        secrets.push("sk-TOPSECRETKEY".into());
        secrets.push(String::new());
        let cases = [
            (
                "Incorrect API key provided: Bearer sk-TOPSECRETKEY",
                "Incorrect API key provided: Bearer ***",
            ),
            (
                "auth: Basic dTpLM3lQdw==, Bearer abc.def",
                "auth: Basic ***, Bearer ***",
            ),
            ("BEARER\tzz-1. next", "BEARER\t***. next"),
            ("key sk-TOPSECRETKEY!", "key ***!"),
            (
                "bad password K3y@Pw and K3y%40Pw",
                "bad password *** and ***",
            ),
            ("query sk-q", "query ***"),
            ("see http://a:b@h/v1: down", "see http://a:***@h/v1: down"),
            ("no Bearer", "no Bearer"),
            (
                "Bearer: none; basically fine; unbearer x",
                "Bearer: none; basically fine; unbearer x",
            ),
            ("", ""),
        ];
        for (text, shown) in cases {
            assert_eq!(redact_secrets(text, &secrets), shown, "{text}");
        }
        assert_eq!(url_secrets("http://u@h/v1"), Vec::<String>::new());
        assert_eq!(url_secrets("http://h/v1?password=p%2F"), ["p%2F", "p/"]);
    }
}

//! Secrets out of URLs before anything shows them: the password of the userinfo
//! (`scheme://user:PASSWORD@host`) and the values of query parameters that carry credentials
//! (`?password=…`, `?sslpassword=…`, `?api_key=…`, `?token=…`). Every message, log line, report
//! and summary that names a database or server URL goes through [`redact_url`] (or
//! [`redact_urls_in`] for free text): this is the one place the rule is written.
//!
//! When in doubt, more is hidden: the userinfo ends at the LAST `@` before the host (a password
//! may contain `@`, `/`, `?` or `:`), so a URL whose path or query holds an `@` may lose its host
//! in the redacted form, but never shows a password.

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

/// `text` with every `scheme://…` in it (up to the next whitespace) passed through
/// [`redact_url`]: for messages that may quote a URL someone else formatted.
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
}

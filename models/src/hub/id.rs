//! A Hub id (`ORG/NAME`, `ORG/NAME:FILE.gguf`) told from a path, and revision names checked
//! before they become paths under `refs/`.

use std::fmt;

/// A model on the Hub: a repository and, for GGUF repositories, one file in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    repo: String,
    file: Option<String>,
}

impl HubId {
    /// `ORG/NAME` or `ORG/NAME:FILE.gguf`, or None when `text` does not look like one (a path
    /// starting with `.`, `/` or `~`, more or fewer than one slash in the repository part,
    /// characters the Hub does not allow in names).
    pub fn parse(text: &str) -> Option<HubId> {
        let (repo, file) = match text.split_once(':') {
            Some((repo, file)) => (repo, Some(file)),
            None => (text, None),
        };
        let (org, name) = repo.split_once('/')?;
        if !valid_name(org) || !valid_name(name) {
            return None;
        }
        if let Some(f) = file {
            let plain = f.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
            if !plain || !f.ends_with(".gguf") || f.contains('\\') {
                return None;
            }
        }
        Some(HubId {
            repo: repo.to_string(),
            file: file.map(String::from),
        })
    }

    /// `ORG/NAME`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The GGUF file named after the colon.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{file}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// A Hub user, organisation or repository name: letters, digits, `-`, `_`, `.`; not starting
/// or ending with `-` or `.`, no `--` or `..`, at most 96 characters.
fn valid_name(s: &str) -> bool {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let edge = |c: char| c == '-' || c == '.';
    ok_chars
        && !s.is_empty()
        && s.len() <= 96
        && !s.starts_with(edge)
        && !s.ends_with(edge)
        && !s.contains("--")
        && !s.contains("..")
}

/// A revision: a branch, a tag or a 40-hex commit; no empty parts, no `.` or `..`.
pub(super) fn valid_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_paths() {
        let id = HubId::parse("Qwen/Qwen2.5-0.5B-Instruct").expect("id");
        assert_eq!((id.repo(), id.file()), ("Qwen/Qwen2.5-0.5B-Instruct", None));
        let id = HubId::parse("TheBloke/X-GGUF:x.Q4_0.gguf").expect("gguf id");
        assert_eq!(id.file(), Some("x.Q4_0.gguf"));
        assert_eq!(id.to_string(), "TheBloke/X-GGUF:x.Q4_0.gguf");
        for path in [
            "./org/name",
            "/org/name",
            "~/name",
            "model",
            "a/b/c",
            "org/",
            "../name",
            "org/na me",
            "org/name:weights.bin",
            "org/name:../x.gguf",
            "org/-name",
            "org/a--b",
        ] {
            assert_eq!(HubId::parse(path), None, "{path}");
        }
    }

    #[test]
    fn revisions_stay_inside_refs() {
        assert!(valid_revision("main") && valid_revision("refs/pr/1") && valid_revision("v1.0"));
        for bad in ["", "..", "a/../b", "/main", "main/", "a\\b"] {
            assert!(!valid_revision(bad), "{bad}");
        }
    }
}

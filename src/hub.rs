//! Where a `--model` or `--adapter` value becomes a local path: an existing path is used as it
//! is; a value that looks like a Hugging Face id (`ORG/NAME`, `ORG/NAME:FILE.gguf`) is resolved
//! through the Hugging Face cache by `instill_models::hub`, with the settings Python's
//! `huggingface_hub` reads from the environment: `HF_HUB_CACHE` / `HF_HOME`, `HF_ENDPOINT`,
//! `HF_TOKEN` (or the token file), `HF_HUB_OFFLINE`.

use std::path::{Path, PathBuf};

use anyhow::bail;
use indicatif::{HumanBytes, ProgressBar};
use instill_models::hub::{self, HubConfig, HubError, HubId, Progress, Want};

use crate::cli::GlobalArgs;
use crate::progress;

/// The Hub when `HF_ENDPOINT` is not set.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The local path `spec` (the value of `flag`) names: itself when it exists, else the cached
/// (or downloaded) snapshot of the Hub id it spells, at `revision` (default `main`).
pub async fn locate(
    spec: &Path,
    flag: &str,
    revision: Option<&str>,
    want: Want,
    global: &GlobalArgs,
) -> anyhow::Result<PathBuf> {
    let shown = spec.display();
    let revision_flag = if flag == "--adapter" {
        "--adapter-revision"
    } else {
        "--revision"
    };
    if std::fs::symlink_metadata(spec).is_ok() {
        if let Some(rev) = revision {
            bail!(
                "{revision_flag} {rev}: {flag} {shown} is a local path; {revision_flag} is for a Hugging Face id"
            );
        }
        return Ok(spec.to_path_buf());
    }
    let Some(id) = spec.to_str().and_then(HubId::parse) else {
        if revision.is_some() {
            bail!(
                "{flag} {shown}: no such file or directory, and not a Hugging Face id (ORG/NAME)"
            );
        }
        // Not an id: the loader names the missing path.
        return Ok(spec.to_path_buf());
    };
    let config = config()?;
    let revision = revision.unwrap_or("main");
    let mut bar = Bar {
        enabled: progress::enabled(global.no_progress),
        label: id.to_string(),
        bar: None,
    };
    let resolved = hub::resolve(&id, revision, want, &config, &mut bar)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{flag} {shown}: no such local path; as a Hugging Face id: {e}{}",
                hint(&e, &config)
            )
        })?;
    if resolved.downloaded_files > 0 && !global.quiet {
        eprintln!(
            "{id}: downloaded {} file(s), {}, into {}",
            resolved.downloaded_files,
            HumanBytes(resolved.downloaded_bytes),
            config.cache.display()
        );
    }
    Ok(resolved.path)
}

/// What the user can do about `e`, naming the environment variable.
fn hint(e: &HubError, config: &HubConfig) -> &'static str {
    match e {
        HubError::NotCached { .. } | HubError::Missing { .. } if config.offline => {
            " (HF_HUB_OFFLINE is set: nothing is downloaded)"
        }
        HubError::Http {
            status: 401 | 403,
            token_sent: false,
            ..
        } => "; set HF_TOKEN to a token with access",
        HubError::Network { .. } => {
            "; set HF_HUB_OFFLINE=1 to use only the cache, or HF_ENDPOINT for a mirror"
        }
        _ => "",
    }
}

/// The Hub settings from the environment, as `huggingface_hub` reads them.
fn config() -> anyhow::Result<HubConfig> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let home = var("HF_HOME").map(PathBuf::from).or_else(|| {
        var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|c| c.join("huggingface"))
    });
    let cache = match (var("HF_HUB_CACHE"), &home) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(home)) => home.join("hub"),
        (None, None) => bail!("no Hugging Face cache: set HF_HUB_CACHE or HF_HOME (HOME is unset)"),
    };
    let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        bail!("HF_ENDPOINT={endpoint:?}: expected an http:// or https:// URL");
    }
    let token = var("HF_TOKEN")
        .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
        .or_else(|| {
            let file = home.as_ref()?.join("token");
            let text = std::fs::read_to_string(file).ok()?;
            Some(text.trim().to_string()).filter(|t| !t.is_empty())
        });
    Ok(HubConfig {
        cache,
        endpoint,
        token,
        offline: offline(var("HF_HUB_OFFLINE").as_deref())?,
    })
}

/// `HF_HUB_OFFLINE`: 1/true/yes/on or 0/false/no/off (any case); anything else is an error.
fn offline(value: Option<&str>) -> anyhow::Result<bool> {
    let Some(v) = value else { return Ok(false) };
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => bail!("HF_HUB_OFFLINE={v:?}: expected 1, true, yes, on or 0, false, no, off"),
    }
}

/// The download's bar (or log lines), from [`progress::bytes`].
struct Bar {
    enabled: bool,
    label: String,
    bar: Option<ProgressBar>,
}

impl Progress for Bar {
    fn start(&mut self, bytes: u64, files: usize) {
        if files == 0 {
            return;
        }
        let message = format!("downloading {} ({files} file(s))", self.label);
        self.bar = Some(progress::bytes(self.enabled, bytes, message));
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_hub_offline_reads_as_huggingface_hub_does_and_refuses_garbage() {
        for on in ["1", "true", "YES", "On"] {
            assert!(offline(Some(on)).expect("on"), "{on}");
        }
        for off in ["0", "false", "no", "OFF", ""] {
            assert!(!offline(Some(off)).expect("off"), "{off}");
        }
        assert!(!offline(None).expect("unset"));
        let e = offline(Some("maybe")).expect_err("garbage").to_string();
        assert!(e.contains("HF_HUB_OFFLINE=\"maybe\""), "{e}");
    }
}

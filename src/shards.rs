//! JSONL shard files: rotation by rows and/or bytes, optional zstd, SHA-256 and sizes of what
//! lands on disk, and the staging directory that becomes the output only when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ingest::hex;

/// How shards are cut and compressed.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    /// Start a new shard after this many rows.
    pub max_rows: Option<u64>,
    /// Start a new shard once this many uncompressed bytes are written.
    pub max_bytes: Option<u64>,
    /// zstd level, or `None` for plain JSONL.
    pub zstd_level: Option<i32>,
}

/// One finished shard, as the manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    /// File name inside the output directory.
    pub file: String,
    /// `train`, `val`, or `all` when there is no split.
    pub split: String,
    /// Records in it.
    pub rows: u64,
    /// Size on disk.
    pub bytes: u64,
    /// JSONL bytes before compression.
    pub uncompressed_bytes: u64,
    /// SHA-256 of the file on disk.
    pub sha256: String,
}

/// A writer that counts and hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

enum Sink {
    Plain(BufWriter<Hashing<File>>),
    Zstd(zstd::Encoder<'static, BufWriter<Hashing<File>>>),
}

struct OpenShard {
    file: String,
    sink: Sink,
    rows: u64,
    uncompressed: u64,
}

/// Writes one split's shards (`{prefix}-00000.jsonl[.zst]`, …) into a directory.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    config: ShardConfig,
    next_index: u32,
    current: Option<OpenShard>,
    /// Shards finished so far.
    pub done: Vec<ShardInfo>,
}

impl ShardWriter {
    /// A writer of shards named `{prefix}-NNNNN` in `dir`.
    pub fn new(dir: &Path, prefix: &str, config: ShardConfig) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            config,
            next_index: 0,
            current: None,
            done: Vec::new(),
        }
    }

    /// Appends one JSONL line (newline included), opening or rotating shards as needed.
    pub fn write_line(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let full = self.current.as_ref().is_some_and(|s| {
            self.config.max_rows.is_some_and(|m| s.rows >= m)
                || self.config.max_bytes.is_some_and(|m| s.uncompressed >= m)
        });
        if full {
            self.close_current()?;
        }
        if self.current.is_none() {
            self.open_next()?;
        }
        if let Some(shard) = self.current.as_mut() {
            let result = match &mut shard.sink {
                Sink::Plain(w) => w.write_all(line),
                Sink::Zstd(w) => w.write_all(line),
            };
            result.with_context(|| format!("writing {}", shard.file))?;
            shard.rows += 1;
            shard.uncompressed += line.len() as u64;
        }
        Ok(())
    }

    fn open_next(&mut self) -> anyhow::Result<()> {
        let ext = if self.config.zstd_level.is_some() {
            "jsonl.zst"
        } else {
            "jsonl"
        };
        let file = format!("{}-{:05}.{ext}", self.prefix, self.next_index);
        self.next_index += 1;
        let path = self.dir.join(&file);
        let f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let hashing = BufWriter::with_capacity(
            1 << 20,
            Hashing {
                inner: f,
                hasher: Sha256::new(),
                bytes: 0,
            },
        );
        let sink = match self.config.zstd_level {
            Some(level) => Sink::Zstd(
                zstd::Encoder::new(hashing, level).context("cannot start zstd compression")?,
            ),
            None => Sink::Plain(hashing),
        };
        self.current = Some(OpenShard {
            file,
            sink,
            rows: 0,
            uncompressed: 0,
        });
        Ok(())
    }

    fn close_current(&mut self) -> anyhow::Result<()> {
        let Some(shard) = self.current.take() else {
            return Ok(());
        };
        let buffered = match shard.sink {
            Sink::Plain(w) => w,
            Sink::Zstd(w) => w
                .finish()
                .with_context(|| format!("finishing {}", shard.file))?,
        };
        let hashing = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("flushing {}", shard.file))?;
        hashing
            .inner
            .sync_all()
            .with_context(|| format!("syncing {}", shard.file))?;
        self.done.push(ShardInfo {
            file: shard.file,
            split: self.prefix.replace("part", "all"),
            rows: shard.rows,
            bytes: hashing.bytes,
            uncompressed_bytes: shard.uncompressed,
            sha256: hex(&hashing.hasher.finalize()),
        });
        Ok(())
    }

    /// Closes the open shard and returns every shard written.
    pub fn finish(mut self) -> anyhow::Result<Vec<ShardInfo>> {
        self.close_current()?;
        Ok(self.done)
    }
}

/// A directory that becomes `target` only through [`Staging::commit`]; dropped uncommitted, it
/// is removed, so a failed export leaves no partial shard behind.
pub struct Staging {
    /// Where files are written until commit.
    pub dir: PathBuf,
    target: PathBuf,
    old: PathBuf,
    committed: bool,
}

impl Staging {
    /// Prepares to write `target`: refuses an existing non-empty directory (or a file) unless
    /// `overwrite`, and creates a hidden staging directory beside it.
    pub fn new(target: &Path, overwrite: bool) -> anyhow::Result<Staging> {
        let shown = target.display();
        if target.exists() {
            if !target.is_dir() {
                anyhow::bail!("{shown}: exists and is not a directory");
            }
            let non_empty = std::fs::read_dir(target)
                .with_context(|| format!("{shown}: cannot read"))?
                .next()
                .is_some();
            if non_empty && !overwrite {
                anyhow::bail!("{shown}: exists and is not empty; pass --overwrite to replace it");
            }
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n != ".." && n != ".")
            .ok_or_else(|| anyhow::anyhow!("{shown}: name a directory to create"))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            anyhow::bail!("{}: the parent directory does not exist", parent.display());
        }
        let dir = parent.join(format!(".{name}.instill-tmp-{}", std::process::id()));
        let old = parent.join(format!(".{name}.instill-old-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Staging {
            dir,
            target: target.to_path_buf(),
            old,
            committed: false,
        })
    }

    /// Moves the staged directory into place (the old one, if any, is removed only after).
    pub fn commit(mut self) -> anyhow::Result<()> {
        let shown = self.target.display().to_string();
        let old = self.old.clone();
        let had_old = self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &old)
                .with_context(|| format!("cannot move aside {shown}"))?;
        }
        if let Err(e) = std::fs::rename(&self.dir, &self.target) {
            if had_old {
                let _ = std::fs::rename(&old, &self.target);
            }
            return Err(e).with_context(|| format!("cannot move the export into {shown}"));
        }
        self.committed = true;
        if had_old {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("cannot remove the previous {shown}"))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_rows_and_bytes_and_hashes_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig {
            max_rows: Some(3),
            max_bytes: Some(12),
            zstd_level: None,
        };
        let mut w = ShardWriter::new(dir.path(), "part", config);
        for line in ["a\n", "b\n", "c\n", "d\n", "0123456789abcdef\n", "e\n"] {
            w.write_line(line.as_bytes()).unwrap();
        }
        let shards = w.finish().unwrap();
        let rows: Vec<u64> = shards.iter().map(|s| s.rows).collect();
        assert_eq!(rows, vec![3, 2, 1]);
        for s in &shards {
            let bytes = std::fs::read(dir.path().join(&s.file)).unwrap();
            assert_eq!(bytes.len() as u64, s.bytes);
            assert_eq!(hex(&Sha256::digest(&bytes)), s.sha256);
            assert_eq!(s.split, "all");
        }
    }

    #[test]
    fn zstd_shards_decompress_to_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig {
            max_rows: None,
            max_bytes: None,
            zstd_level: Some(3),
        };
        let mut w = ShardWriter::new(dir.path(), "train", config);
        w.write_line("{\"中文\":1}\n".as_bytes()).unwrap();
        let shards = w.finish().unwrap();
        assert_eq!(shards[0].file, "train-00000.jsonl.zst");
        let raw = std::fs::read(dir.path().join(&shards[0].file)).unwrap();
        assert_eq!(
            zstd::decode_all(&raw[..]).unwrap(),
            "{\"中文\":1}\n".as_bytes()
        );
        assert_eq!(shards[0].uncompressed_bytes, "{\"中文\":1}\n".len() as u64);
    }

    #[test]
    fn staging_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let staging = Staging::new(&target, false).unwrap();
        std::fs::write(staging.dir.join("x"), "1").unwrap();
        drop(staging);
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let staging = Staging::new(&target, false).unwrap();
        std::fs::write(staging.dir.join("x"), "1").unwrap();
        staging.commit().unwrap();
        assert_eq!(std::fs::read_to_string(target.join("x")).unwrap(), "1");

        assert!(Staging::new(&target, false).is_err());
        let staging = Staging::new(&target, true).unwrap();
        std::fs::write(staging.dir.join("y"), "2").unwrap();
        staging.commit().unwrap();
        assert!(!target.join("x").exists() && target.join("y").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

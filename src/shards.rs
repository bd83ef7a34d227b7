//! JSONL shard files: rotation by rows and/or bytes, optional zstd (on threads of its own), and
//! the SHA-256 and sizes of what lands on disk.

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
    /// Compressed on a thread of its own (zstd costs more than everything else an export does):
    /// lines gather in `buf` and cross over in blocks of [`BLOCK`] bytes.
    Zstd {
        buf: Vec<u8>,
        blocks: std::sync::mpsc::SyncSender<Vec<u8>>,
        thread: JoinHandle<anyhow::Result<(u64, String)>>,
    },
}

/// Bytes handed to a compressing thread at a time.
const BLOCK: usize = 1 << 20;

type JoinHandle<T> = std::thread::JoinHandle<T>;

/// A closed compressed shard whose thread may still be compressing.
struct Pending {
    file: String,
    rows: u64,
    uncompressed: u64,
    thread: JoinHandle<anyhow::Result<(u64, String)>>,
}

/// Starts the thread that compresses one shard into `out` and reports its size and SHA-256.
fn spawn_zstd(out: BufWriter<Hashing<File>>, level: i32, file: String) -> anyhow::Result<Sink> {
    let mut encoder = zstd::Encoder::new(out, level).context("cannot start zstd compression")?;
    let (blocks, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let thread = std::thread::spawn(move || {
        for block in rx {
            encoder
                .write_all(&block)
                .with_context(|| format!("writing {file}"))?;
        }
        let out = encoder
            .finish()
            .with_context(|| format!("finishing {file}"))?;
        seal(out, &file)
    });
    Ok(Sink::Zstd {
        buf: Vec::with_capacity(BLOCK),
        blocks,
        thread,
    })
}

/// Flushes a shard file to disk and returns its size and SHA-256.
fn seal(out: BufWriter<Hashing<File>>, file: &str) -> anyhow::Result<(u64, String)> {
    let hashing = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("flushing {file}"))?;
    hashing
        .inner
        .sync_all()
        .with_context(|| format!("syncing {file}"))?;
    Ok((hashing.bytes, hex(&hashing.hasher.finalize())))
}

/// Waits for a compressing thread's result.
fn join(thread: JoinHandle<anyhow::Result<(u64, String)>>) -> anyhow::Result<(u64, String)> {
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("a zstd compression thread panicked"))?
}

struct OpenShard {
    file: String,
    sink: Sink,
    rows: u64,
    uncompressed: u64,
}

/// Whether `name` is a shard an export writes: `part|train|val-NNNNN.jsonl[.zst]`.
pub fn is_shard_file(name: &str) -> bool {
    let stem = name
        .strip_suffix(".jsonl.zst")
        .or_else(|| name.strip_suffix(".jsonl"));
    let Some((prefix, index)) = stem.and_then(|s| s.rsplit_once('-')) else {
        return false;
    };
    ["part", "train", "val"].contains(&prefix)
        && index.len() >= 5
        && index.bytes().all(|b| b.is_ascii_digit())
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
    /// Compressed shards still being compressed, oldest first (at most one per core).
    pending: std::collections::VecDeque<Pending>,
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
            pending: std::collections::VecDeque::new(),
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
        let Some(shard) = self.current.as_mut() else {
            return Ok(());
        };
        shard.rows += 1;
        shard.uncompressed += line.len() as u64;
        match &mut shard.sink {
            Sink::Plain(w) => w
                .write_all(line)
                .with_context(|| format!("writing {}", shard.file)),
            Sink::Zstd { buf, blocks, .. } => {
                buf.extend_from_slice(line);
                if buf.len() < BLOCK || blocks.send(std::mem::take(buf)).is_ok() {
                    return Ok(());
                }
                // The thread stopped early: its error says why.
                let failed = self.current.take().map(|s| (s.file, s.sink));
                match failed {
                    Some((file, Sink::Zstd { thread, .. })) => match join(thread) {
                        Err(e) => Err(e),
                        Ok(_) => Err(anyhow::anyhow!("compressing {file} stopped early")),
                    },
                    _ => Err(anyhow::anyhow!("a shard was lost while it was written")),
                }
            }
        }
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
            Some(level) => spawn_zstd(hashing, level, file.clone())?,
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
        match shard.sink {
            Sink::Plain(out) => {
                let (bytes, sha256) = seal(out, &shard.file)?;
                self.push_done(shard.file, shard.rows, shard.uncompressed, bytes, sha256);
            }
            Sink::Zstd {
                buf,
                blocks,
                thread,
            } => {
                // A send fails only when the thread has stopped; join says why.
                let _ = blocks.send(buf);
                drop(blocks);
                self.pending.push_back(Pending {
                    file: shard.file,
                    rows: shard.rows,
                    uncompressed: shard.uncompressed,
                    thread,
                });
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                while self.pending.len() >= cores {
                    self.finish_oldest()?;
                }
            }
        }
        Ok(())
    }

    /// Waits for the oldest compressing shard and records it.
    fn finish_oldest(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.pending.pop_front() {
            let (bytes, sha256) = join(p.thread)?;
            self.push_done(p.file, p.rows, p.uncompressed, bytes, sha256);
        }
        Ok(())
    }

    fn push_done(
        &mut self,
        file: String,
        rows: u64,
        uncompressed: u64,
        bytes: u64,
        sha256: String,
    ) {
        self.done.push(ShardInfo {
            file,
            split: self.prefix.replace("part", "all"),
            rows,
            bytes,
            uncompressed_bytes: uncompressed,
            sha256,
        });
    }

    /// Closes the open shard and returns every shard written.
    pub fn finish(mut self) -> anyhow::Result<Vec<ShardInfo>> {
        self.close_current()?;
        while !self.pending.is_empty() {
            self.finish_oldest()?;
        }
        Ok(self.done)
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
    fn compressed_shards_rotate_and_keep_their_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig {
            max_rows: Some(400),
            max_bytes: None,
            zstd_level: Some(3),
        };
        let mut w = ShardWriter::new(dir.path(), "part", config);
        // Long enough lines that blocks cross to the compressing threads mid-shard.
        let lines: Vec<String> = (0..2_000)
            .map(|i| format!("{{\"n\":{i},\"text\":\"{}\"}}\n", "数据".repeat(1_000)))
            .collect();
        for line in &lines {
            w.write_line(line.as_bytes()).unwrap();
        }
        let shards = w.finish().unwrap();
        let names: Vec<&str> = shards.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(
            names,
            [
                "part-00000.jsonl.zst",
                "part-00001.jsonl.zst",
                "part-00002.jsonl.zst",
                "part-00003.jsonl.zst",
                "part-00004.jsonl.zst"
            ]
        );
        let mut back = Vec::new();
        for s in &shards {
            let raw = std::fs::read(dir.path().join(&s.file)).unwrap();
            assert_eq!(raw.len() as u64, s.bytes);
            assert_eq!(hex(&Sha256::digest(&raw)), s.sha256);
            let text = zstd::decode_all(&raw[..]).unwrap();
            assert_eq!(text.len() as u64, s.uncompressed_bytes);
            assert_eq!(s.rows, 400);
            back.extend(text);
        }
        assert_eq!(back, lines.concat().into_bytes());
    }
}

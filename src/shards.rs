//! JSONL shard files in the Hugging Face Hub's layout (`data/{split}/{split}-00000-of-00002.jsonl`):
//! rotation by rows and/or bytes, optional zstd (on threads of its own), and the SHA-256 and
//! sizes of what lands on disk. Parquet shards (`.parquet`, feature `parquet`) rotate, are named
//! and hashed the same way; `parquet_io` writes their content.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use instill_core::{OutputFormat, Record};
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
    /// Write Parquet shards of this layout instead, their pages compressed with zstd at this
    /// level (`zstd_level` is then `None`).
    pub parquet: Option<(OutputFormat, i32)>,
    /// Parquet `messages` shards: every turn carries `reasoning_content` (the JSONL lines carry
    /// it through [`instill_core::Columns::reasoning`]).
    pub reasoning_field: bool,
}

/// A split of an export, named as the Hub and `datasets` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Every record outside the validation split (all of them without `--val-fraction`).
    Train,
    /// The records `--val-fraction` holds out.
    Validation,
}

impl Split {
    /// Both splits, train first.
    pub const ALL: [Split; 2] = [Split::Train, Split::Validation];

    /// The split's name: its directory under `data/` and the prefix of its shards.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
        }
    }

    /// The directory of its shards, relative to the export.
    pub fn dir(self) -> String {
        format!("{DATA_DIR}/{}", self.name())
    }
}

/// The directory of an export that holds the data files, one subdirectory per split.
pub const DATA_DIR: &str = "data";

/// The extensions a shard may have.
const EXTENSIONS: [&str; 3] = ["jsonl", "jsonl.zst", "parquet"];

/// One finished shard, as the manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    /// Path inside the output directory (`data/train/train-00000-of-00001.jsonl`).
    pub file: String,
    /// The split it belongs to.
    pub split: Split,
    /// Records in it.
    pub rows: u64,
    /// Size on disk.
    pub bytes: u64,
    /// JSONL bytes before compression (Parquet: bytes of the rows' text).
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
    /// A Parquet file: records in, columns out.
    #[cfg(feature = "parquet")]
    Parquet(Box<crate::parquet_io::ParquetSink<BufWriter<Hashing<File>>>>),
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

/// A Parquet shard of `format` into `out`, its pages compressed with zstd at `level`.
#[cfg(feature = "parquet")]
fn parquet_sink(
    out: BufWriter<Hashing<File>>,
    (format, level, reasoning): (OutputFormat, i32, bool),
    file: &str,
) -> anyhow::Result<Sink> {
    let sink = crate::parquet_io::ParquetSink::new(out, format, level, reasoning)
        .with_context(|| format!("cannot start the Parquet file {file}"))?;
    Ok(Sink::Parquet(Box::new(sink)))
}

/// Without the `parquet` feature, export refuses `--file-format parquet` before any shard.
#[cfg(not(feature = "parquet"))]
fn parquet_sink(
    _out: BufWriter<Hashing<File>>,
    _layout: (OutputFormat, i32, bool),
    file: &str,
) -> anyhow::Result<Sink> {
    anyhow::bail!("{file}: this instill was built without Parquet support")
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

/// Whether `path` (relative, `/`-separated) is a shard an export writes, finished
/// (`data/train/train-00000-of-00002.jsonl`) or still being written
/// (`data/train/train-00000.jsonl`), with any extension a shard may have.
pub fn is_shard_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let [DATA_DIR, dir, name] = parts[..] else {
        return false;
    };
    let Some(split) = Split::ALL.into_iter().find(|s| s.name() == dir) else {
        return false;
    };
    let Some(stem) = EXTENSIONS
        .iter()
        .find_map(|ext| name.strip_suffix(ext)?.strip_suffix('.'))
    else {
        return false;
    };
    let Some(numbers) = stem
        .strip_prefix(split.name())
        .and_then(|s| s.strip_prefix('-'))
    else {
        return false;
    };
    let index = |n: &str| n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit());
    match numbers.split_once("-of-") {
        Some((i, n)) => index(i) && index(n),
        None => index(numbers),
    }
}

/// Writes one split's shards into `data/{split}/` of an export: `{split}-00000.jsonl[.zst]`, …
/// while they are written, renamed `{split}-00000-of-NNNNN…` by [`ShardWriter::finish`].
pub struct ShardWriter {
    /// The export's directory.
    root: PathBuf,
    split: Split,
    config: ShardConfig,
    next_index: u32,
    current: Option<OpenShard>,
    /// Shards finished so far.
    pub done: Vec<ShardInfo>,
    /// Compressed shards still being compressed, oldest first (at most one per core).
    pending: std::collections::VecDeque<Pending>,
}

impl ShardWriter {
    /// A writer of `split`'s shards under the export directory `root`.
    pub fn new(root: &Path, split: Split, config: ShardConfig) -> Self {
        ShardWriter {
            root: root.to_path_buf(),
            split,
            config,
            next_index: 0,
            current: None,
            done: Vec::new(),
            pending: std::collections::VecDeque::new(),
        }
    }

    /// The shard the next row goes to, opening or rotating shards as needed.
    fn next_shard(&mut self) -> anyhow::Result<&mut OpenShard> {
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
        self.current
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no shard is open"))
    }

    /// Appends one record to a Parquet shard ([`ShardConfig::parquet`]), opening or rotating
    /// shards as needed.
    pub fn write_record(&mut self, record: &Record) -> anyhow::Result<()> {
        let shard = self.next_shard()?;
        shard.rows += 1;
        match &mut shard.sink {
            #[cfg(feature = "parquet")]
            Sink::Parquet(sink) => {
                shard.uncompressed += sink
                    .write(record)
                    .with_context(|| format!("writing {}", shard.file))?;
                Ok(())
            }
            _ => {
                let _ = record;
                anyhow::bail!("{}: a JSONL shard was handed a record", shard.file)
            }
        }
    }

    /// Appends one JSONL line (newline included), opening or rotating shards as needed.
    pub fn write_line(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let shard = self.next_shard()?;
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
            #[cfg(feature = "parquet")]
            Sink::Parquet(_) => anyhow::bail!("{}: a Parquet shard was handed a line", shard.file),
        }
    }

    fn open_next(&mut self) -> anyhow::Result<()> {
        let ext = match (self.config.parquet, self.config.zstd_level) {
            (Some(_), _) => "parquet",
            (None, Some(_)) => "jsonl.zst",
            (None, None) => "jsonl",
        };
        let dir = self.root.join(self.split.dir());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let file = format!(
            "{}/{}-{:05}.{ext}",
            self.split.dir(),
            self.split.name(),
            self.next_index
        );
        self.next_index += 1;
        let path = self.root.join(&file);
        let f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let hashing = BufWriter::with_capacity(
            1 << 20,
            Hashing {
                inner: f,
                hasher: Sha256::new(),
                bytes: 0,
            },
        );
        let sink = match (self.config.parquet, self.config.zstd_level) {
            (Some((format, level)), _) => {
                parquet_sink(hashing, (format, level, self.config.reasoning_field), &file)?
            }
            (None, Some(level)) => spawn_zstd(hashing, level, file.clone())?,
            (None, None) => Sink::Plain(hashing),
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
            #[cfg(feature = "parquet")]
            Sink::Parquet(sink) => {
                let out = sink
                    .finish()
                    .with_context(|| format!("finishing {}", shard.file))?;
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
            split: self.split,
            rows,
            bytes,
            uncompressed_bytes: uncompressed,
            sha256,
        });
    }

    /// Closes the open shard, names every shard with the count (`-of-NNNNN`, as the Hub names
    /// shards) and returns them.
    pub fn finish(mut self) -> anyhow::Result<Vec<ShardInfo>> {
        self.close_current()?;
        while !self.pending.is_empty() {
            self.finish_oldest()?;
        }
        let total = self.done.len();
        for shard in &mut self.done {
            let numbered = final_name(&shard.file, total);
            std::fs::rename(self.root.join(&shard.file), self.root.join(&numbered))
                .with_context(|| format!("cannot rename {} to {numbered}", shard.file))?;
            shard.file = numbered;
        }
        if total > 0 {
            crate::outdir::sync_dir(&self.root.join(self.split.dir()))?;
        }
        Ok(self.done)
    }
}

/// `data/s/s-00003.ext` → `data/s/s-00003-of-{total}.ext`.
fn final_name(file: &str, total: usize) -> String {
    let (dir, name) = file.rsplit_once('/').unwrap_or(("", file));
    let (stem, ext) = name.split_once('.').unwrap_or((name, ""));
    format!("{dir}/{stem}-of-{total:05}.{ext}")
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
            parquet: None,
            reasoning_field: false,
        };
        let mut w = ShardWriter::new(dir.path(), Split::Train, config);
        for line in ["a\n", "b\n", "c\n", "d\n", "0123456789abcdef\n", "e\n"] {
            w.write_line(line.as_bytes()).unwrap();
        }
        let shards = w.finish().unwrap();
        let rows: Vec<u64> = shards.iter().map(|s| s.rows).collect();
        assert_eq!(rows, vec![3, 2, 1]);
        let names: Vec<&str> = shards.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(
            names,
            [
                "data/train/train-00000-of-00003.jsonl",
                "data/train/train-00001-of-00003.jsonl",
                "data/train/train-00002-of-00003.jsonl"
            ]
        );
        for s in &shards {
            let bytes = std::fs::read(dir.path().join(&s.file)).unwrap();
            assert_eq!(bytes.len() as u64, s.bytes);
            assert_eq!(hex(&Sha256::digest(&bytes)), s.sha256);
            assert_eq!(s.split, Split::Train);
            assert!(is_shard_path(&s.file), "{}", s.file);
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("data/train"))
                .unwrap()
                .count(),
            3
        );
    }

    #[test]
    fn zstd_shards_decompress_to_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig {
            max_rows: None,
            max_bytes: None,
            zstd_level: Some(3),
            parquet: None,
            reasoning_field: false,
        };
        let mut w = ShardWriter::new(dir.path(), Split::Validation, config);
        w.write_line("{\"中文\":1}\n".as_bytes()).unwrap();
        let shards = w.finish().unwrap();
        assert_eq!(
            shards[0].file,
            "data/validation/validation-00000-of-00001.jsonl.zst"
        );
        let raw = std::fs::read(dir.path().join(&shards[0].file)).unwrap();
        assert_eq!(
            zstd::decode_all(&raw[..]).unwrap(),
            "{\"中文\":1}\n".as_bytes()
        );
        assert_eq!(shards[0].uncompressed_bytes, "{\"中文\":1}\n".len() as u64);
    }

    #[test]
    fn a_split_with_no_rows_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig {
            max_rows: Some(10),
            max_bytes: None,
            zstd_level: None,
            parquet: None,
            reasoning_field: false,
        };
        let shards = ShardWriter::new(dir.path(), Split::Validation, config)
            .finish()
            .unwrap();
        assert!(shards.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn compressed_shards_rotate_and_keep_their_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig {
            max_rows: Some(400),
            max_bytes: None,
            zstd_level: Some(3),
            parquet: None,
            reasoning_field: false,
        };
        let mut w = ShardWriter::new(dir.path(), Split::Train, config);
        // Long enough lines that blocks cross to the compressing threads mid-shard.
        let lines: Vec<String> = (0..2_000)
            .map(|i| format!("{{\"n\":{i},\"text\":\"{}\"}}\n", "数据".repeat(1_000)))
            .collect();
        for line in &lines {
            w.write_line(line.as_bytes()).unwrap();
        }
        let shards = w.finish().unwrap();
        let names: Vec<String> = shards.iter().map(|s| s.file.clone()).collect();
        let want: Vec<String> = (0..5)
            .map(|i| format!("data/train/train-{i:05}-of-00005.jsonl.zst"))
            .collect();
        assert_eq!(names, want);
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

    #[cfg(feature = "parquet")]
    #[test]
    fn parquet_shards_rotate_by_rows_and_text_bytes_and_hash_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig {
            max_rows: Some(3),
            max_bytes: Some(40),
            zstd_level: None,
            parquet: Some((OutputFormat::Messages, 3)),
            reasoning_field: false,
        };
        let mut w = ShardWriter::new(dir.path(), Split::Validation, config);
        let records: Vec<Record> = ["a", "b", "c", "d", &"长".repeat(20), "e"]
            .iter()
            .map(|t| Record::new(*t, "", "ok"))
            .collect();
        for r in &records {
            w.write_record(r).unwrap();
        }
        let shards = w.finish().unwrap();
        let rows: Vec<u64> = shards.iter().map(|s| s.rows).collect();
        assert_eq!(rows, vec![3, 2, 1]);
        assert_eq!(
            shards[0].file,
            "data/validation/validation-00000-of-00003.parquet"
        );
        assert_eq!(shards[1].uncompressed_bytes, 1 + 2 + 60 + 2);
        let mut back = Vec::new();
        for s in &shards {
            let path = dir.path().join(&s.file);
            let raw = std::fs::read(&path).unwrap();
            assert_eq!(raw.len() as u64, s.bytes);
            assert_eq!(hex(&Sha256::digest(&raw)), s.sha256);
            let file = File::open(&path).unwrap();
            let mut rows =
                crate::parquet_io::ParquetRows::open(&s.file, file, s.bytes, None, 100).unwrap();
            while let Some(batch) = rows.next_batch().unwrap() {
                for i in 0..batch.len() {
                    let mut json = Vec::new();
                    batch.row_json(i, &mut json).unwrap();
                    instill_core::parse_records(&json, rows.format(), &mut back).unwrap();
                }
            }
        }
        assert_eq!(back, records);
        let mut other = ShardWriter::new(dir.path(), Split::Train, config);
        assert!(
            other.write_line(b"{}\n").is_err(),
            "a line into a Parquet shard"
        );
    }

    #[test]
    fn knows_its_shard_paths() {
        for ok in [
            "data/train/train-00000.jsonl",
            "data/train/train-00000-of-00001.jsonl",
            "data/validation/validation-00012-of-00020.jsonl.zst",
            "data/train/train-00000-of-00001.parquet",
        ] {
            assert!(is_shard_path(ok), "{ok}");
        }
        for no in [
            "train-00000.jsonl",
            "data/train/validation-00000.jsonl",
            "data/val/val-00000.jsonl",
            "data/train/train-0000.jsonl",
            "data/train/train-00000.json",
            "data/train/train-00000-of-.jsonl",
            "data/train/x/train-00000.jsonl",
            "manifest.json",
        ] {
            assert!(!is_shard_path(no), "{no}");
        }
    }
}

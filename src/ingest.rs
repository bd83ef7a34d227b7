//! Reading a dataset file into parsed batches on a thread of its own: split (instill-core's
//! RecordSplitter) or, for a Parquet file, read a batch of rows as JSON objects
//! (`parquet_io`), parse in parallel (rayon), hand each batch to the async side over a bounded
//! channel. Shared by `import` and `seeds import`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use instill_core::{
    DetectError, FieldError, InputFormat, RawBatch, ReadError, RecordSplitter, Span,
};
use rayon::prelude::*;
use tokio::sync::mpsc;

/// Records per batch: large enough to keep both cores busy parsing, small enough that a batch
/// of long records stays a few MiB.
const BATCH_RECORDS: usize = 8192;
const BATCH_BYTES: usize = 8 << 20;

/// The magic bytes a Parquet file starts (and ends) with.
const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// A record that could not be read, with where it starts.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// 1-based line (for a Parquet file, 1-based row).
    pub line: u64,
    /// `path:line:column: message` (`path: row N: message`), ready to print.
    pub message: String,
}

/// One parsed batch, in file order.
#[derive(Debug)]
pub struct Chunk<T> {
    /// Parsed items with the line (Parquet: row) each came from.
    pub items: Vec<(u64, T)>,
    /// Records that did not parse (only with `skip_invalid`).
    pub invalid: Vec<Invalid>,
    /// Bytes of the file consumed so far.
    pub bytes_read: u64,
    /// The layout used.
    pub format: InputFormat,
}

/// Turns one raw record into items (several for a self-instruct task with many instances).
pub type ParseFn<T> = Arc<dyn Fn(&[u8], InputFormat) -> Result<Vec<T>, FieldError> + Send + Sync>;

/// An opened input file that passed the up-front checks.
#[derive(Debug)]
pub struct InputFile {
    /// The path as given.
    pub label: String,
    /// Its size in bytes.
    pub size: u64,
    file: std::fs::File,
    /// Whether it is a Parquet file (it starts with `PAR1`).
    parquet: bool,
}

/// Where [`spawn_reader`] reads records from.
pub enum Source {
    /// A JSON array or a stream of JSON objects.
    Json(Box<dyn Read + Send>),
    /// A Parquet file and its size.
    #[cfg(feature = "parquet")]
    Parquet(std::fs::File, u64),
}

/// Opens `path` for reading, refusing directories and empty files with a one-line reason. A
/// file that starts with `PAR1` is read as Parquet; one named `.parquet` must start so.
pub fn open_input(path: &Path) -> anyhow::Result<InputFile> {
    use std::io::Seek;
    let label = path.display().to_string();
    let meta = std::fs::metadata(path).with_context(|| format!("{label}: cannot read"))?;
    if meta.is_dir() {
        bail!("{label}: is a directory, not a dataset file (name the files inside it)");
    }
    if meta.len() == 0 {
        bail!("{label}: the file is empty");
    }
    let mut file = std::fs::File::open(path).with_context(|| format!("{label}: cannot open"))?;
    let mut magic = [0u8; 4];
    let got = file
        .read(&mut magic)
        .and_then(|n| file.rewind().map(|()| n))
        .with_context(|| format!("{label}: read failed"))?;
    let parquet = got == 4 && &magic == PARQUET_MAGIC;
    let named_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    if named_parquet && !parquet {
        bail!("{label}: not a Parquet file (it does not start with `PAR1`)");
    }
    if parquet && cfg!(not(feature = "parquet")) {
        bail!(
            "{label}: is a Parquet file, and this instill was built without Parquet support (the `parquet` feature)"
        );
    }
    Ok(InputFile {
        label,
        size: meta.len(),
        file,
        parquet,
    })
}

impl InputFile {
    /// SHA-256 of the file's bytes, lowercase hex; the file is read from the start again after.
    pub fn sha256(&mut self) -> anyhow::Result<String> {
        use sha2::{Digest, Sha256};
        use std::io::Seek;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = self
                .file
                .read(&mut buf)
                .with_context(|| format!("{}: read failed", self.label))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        self.file
            .rewind()
            .with_context(|| format!("{}: cannot rewind", self.label))?;
        Ok(hex(&hasher.finalize()))
    }
}

impl InputFile {
    /// The file as a source for [`spawn_reader`].
    pub fn into_source(self) -> Source {
        match self.parquet {
            #[cfg(feature = "parquet")]
            true => Source::Parquet(self.file, self.size),
            // Without the feature, open_input refused Parquet files.
            _ => Source::Json(Box::new(self.file)),
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Starts reading `source` (named `label` in messages) on its own thread. Batches arrive on the
/// returned channel in file order; the first fatal problem arrives as an error and ends the
/// stream. Dropping the receiver stops the thread.
pub fn spawn_reader<T: Send + 'static>(
    label: String,
    source: Source,
    format: Option<InputFormat>,
    skip_invalid: bool,
    parse: ParseFn<T>,
) -> mpsc::Receiver<anyhow::Result<Chunk<T>>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let outcome = match source {
            Source::Json(reader) => read_all(&label, reader, format, skip_invalid, &parse, &tx),
            #[cfg(feature = "parquet")]
            Source::Parquet(file, size) => {
                read_parquet(&label, file, size, format, skip_invalid, &parse, &tx)
            }
        };
        if let Err(e) = outcome {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

fn read_all<T: Send>(
    label: &str,
    reader: Box<dyn Read + Send>,
    mut format: Option<InputFormat>,
    skip_invalid: bool,
    parse: &ParseFn<T>,
    tx: &mpsc::Sender<anyhow::Result<Chunk<T>>>,
) -> anyhow::Result<()> {
    let mut splitter = RecordSplitter::new(reader);
    let mut batch = RawBatch::default();
    loop {
        let more = splitter
            .next_batch(&mut batch, BATCH_RECORDS, BATCH_BYTES)
            .map_err(|e| match e {
                ReadError::Io(io) => anyhow::anyhow!("{label}: read failed: {io}"),
                ReadError::Syntax {
                    line,
                    column,
                    message,
                } => {
                    anyhow::anyhow!("{label}:{line}:{column}: {message}")
                }
                ReadError::Empty => anyhow::anyhow!("{label}: {}", ReadError::Empty),
            })?;
        if !more {
            return Ok(());
        }
        let format = match format {
            Some(f) => f,
            None => {
                let first = batch.spans[0];
                let detected = InputFormat::detect(batch.bytes(&first)).map_err(|e| {
                    // The library names no flag: the command that has --format suggests it.
                    let hint = match &e {
                        DetectError::UnknownKeys(_) | DetectError::UnknownColumns(_) => {
                            "; pass --format"
                        }
                        DetectError::Unreadable(_) => "",
                    };
                    anyhow::anyhow!("{label}:{}:{}: {e}{hint}", first.line, first.column)
                })?;
                format = Some(detected);
                detected
            }
        };
        let parse_all = || -> Vec<(u64, Result<Vec<T>, Invalid>)> {
            batch
                .spans
                .par_iter()
                .map(|span| {
                    let parsed = parse(batch.bytes(span), format);
                    (span.line, parsed.map_err(|e| locate(label, span, &e)))
                })
                .collect()
        };
        let parsed = in_parse_pool(parse_all);
        let chunk = into_chunk(parsed, skip_invalid, splitter.bytes_read(), format)?;
        if tx.blocking_send(Ok(chunk)).is_err() {
            // The consumer is gone (it failed or was interrupted): stop reading.
            return Ok(());
        }
    }
}

/// Reads a Parquet file a batch of rows at a time: each row becomes the JSON object `parse`
/// takes; errors name the row (1-based, across the file).
#[cfg(feature = "parquet")]
fn read_parquet<T: Send>(
    label: &str,
    file: std::fs::File,
    size: u64,
    format: Option<InputFormat>,
    skip_invalid: bool,
    parse: &ParseFn<T>,
    tx: &mpsc::Sender<anyhow::Result<Chunk<T>>>,
) -> anyhow::Result<()> {
    let mut rows = crate::parquet_io::ParquetRows::open(label, file, size, format, BATCH_RECORDS)?;
    let format = rows.format();
    loop {
        let first = rows.next_row();
        let batch = rows
            .next_batch()
            .with_context(|| format!("{label}: cannot read the rows from row {first} on"))?;
        let Some(batch) = batch else {
            return Ok(());
        };
        let parse_all = || -> Vec<(u64, Result<Vec<T>, Invalid>)> {
            (0..batch.len())
                .into_par_iter()
                .map(|i| {
                    let row = batch.row_number(i);
                    let mut json = Vec::new();
                    let parsed = batch
                        .row_json(i, &mut json)
                        .and_then(|()| parse(&json, format));
                    let invalid = |e: FieldError| Invalid {
                        line: row,
                        message: format!("{label}: row {row}: {e}"),
                    };
                    (row, parsed.map_err(invalid))
                })
                .collect()
        };
        let parsed = in_parse_pool(parse_all);
        let chunk = into_chunk(parsed, skip_invalid, rows.bytes_read(), format)?;
        if tx.blocking_send(Ok(chunk)).is_err() {
            return Ok(());
        }
    }
}

/// Runs `work` on the parse pool (or rayon's global pool when it could not be started).
fn in_parse_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match parse_pool() {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// One batch's parse results, in order, as a chunk; the first invalid record is the error
/// unless `skip_invalid`.
fn into_chunk<T>(
    parsed: Vec<(u64, Result<Vec<T>, Invalid>)>,
    skip_invalid: bool,
    bytes_read: u64,
    format: InputFormat,
) -> anyhow::Result<Chunk<T>> {
    let mut chunk = Chunk {
        items: Vec::with_capacity(parsed.len()),
        invalid: Vec::new(),
        bytes_read,
        format,
    };
    for (line, result) in parsed {
        match result {
            Ok(items) => chunk.items.extend(items.into_iter().map(|t| (line, t))),
            Err(invalid) if skip_invalid => chunk.invalid.push(invalid),
            Err(invalid) => bail!("{}", invalid.message),
        }
    }
    Ok(chunk)
}

/// The threads that parse: every core but one. The database writer is a single thread (SQLite
/// has one writer; a Postgres COPY is one stream) and the whole import waits on it, so it must
/// not queue behind parsers: on 2 cores, 2 parse threads made a 1M-record SQLite import 30%
/// slower than 1.
/// (`None` if the threads cannot be started: rayon's global pool then does the parsing.)
fn parse_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores.saturating_sub(1).max(1))
            .thread_name(|i| format!("instill-parse-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Places a record-relative error in the file: `path:line:column: field …: message`.
fn locate(label: &str, span: &Span, e: &FieldError) -> Invalid {
    let line = span.line + e.line.saturating_sub(1);
    let column = match e.column {
        Some(c) if e.line <= 1 => Some(span.column + c.saturating_sub(1)),
        Some(c) => Some(c),
        None if e.line <= 1 => Some(span.column),
        None => None,
    };
    let at = match column {
        Some(c) => format!("{label}:{line}:{c}"),
        None => format!("{label}:{line}"),
    };
    Invalid {
        line,
        message: format!("{at}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_placed_in_the_file() {
        let span = Span {
            start: 0,
            end: 10,
            line: 7,
            column: 3,
        };
        let e = FieldError {
            line: 1,
            column: Some(5),
            field: Some("output".into()),
            message: "bad".into(),
        };
        assert_eq!(
            locate("f.json", &span, &e).message,
            "f.json:7:7: field `output`: bad"
        );
        let e = FieldError {
            line: 3,
            column: Some(5),
            field: None,
            message: "bad".into(),
        };
        assert_eq!(locate("f.json", &span, &e).message, "f.json:9:5: bad");
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}

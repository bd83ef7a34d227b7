//! Streaming split of a JSON dataset into raw records: a JSON array of objects or a stream of
//! objects (JSONL, or concatenated pretty-printed objects), read in bounded memory, with the line
//! each record starts on. Parsing the records is left to the caller, so it can run in parallel.

use std::io::Read;

/// The largest record accepted. Bounds memory when a quote or bracket is missing and the
/// scanner would otherwise swallow the rest of the file.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

const CHUNK_BYTES: usize = 1 << 20;

/// A batch of raw records: their bytes back to back in `data`, and where each starts and ends.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// The records' bytes, back to back.
    pub data: Vec<u8>,
    /// One span per record, in file order.
    pub spans: Vec<Span>,
}

/// Where one raw record lies in [`RawBatch::data`] and in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Start offset in the batch's data.
    pub start: usize,
    /// End offset (exclusive) in the batch's data.
    pub end: usize,
    /// The 1-based line of the file the record starts on.
    pub line: u64,
    /// The 1-based byte column of the record's opening brace.
    pub column: u64,
}

impl RawBatch {
    /// The bytes of the record at `span`.
    pub fn bytes(&self, span: &Span) -> &[u8] {
        &self.data[span.start..span.end]
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
    }
}

/// Why a file could not be split into records.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the underlying file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file holds no record at all.
    #[error("the file is empty (no JSON records)")]
    Empty,
    /// The structure around records is not JSON (or not a list of objects).
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: u64,
        /// 1-based byte column.
        column: u64,
        /// What was found and expected.
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing but whitespace (and a BOM) seen yet.
    Start,
    /// JSONL or concatenated objects.
    Stream,
    /// Inside `[ … ]`; `expect_value` after `[` or `,`.
    Array {
        expect_value: bool,
        after_first: bool,
    },
    /// After the closing `]` of the array.
    ArrayClosed,
}

/// Splits a JSON dataset from any reader into [`RawBatch`]es of whole records.
#[derive(Debug)]
pub struct RecordSplitter<R> {
    reader: R,
    chunk: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    mode: Mode,
    /// Bytes of the file consumed before `chunk[0]`.
    consumed: u64,
    line: u64,
    /// File offset where the current line starts.
    line_start: u64,
    // State inside a record.
    in_record: bool,
    depth: u32,
    in_string: bool,
    escape: bool,
    record_start: usize,
    record_line: u64,
    record_column: u64,
    records_seen: u64,
}

impl<R: Read> RecordSplitter<R> {
    /// A splitter over `reader` (wrap files in nothing: the splitter reads in 1 MiB chunks).
    pub fn new(reader: R) -> Self {
        RecordSplitter {
            reader,
            chunk: vec![0; CHUNK_BYTES],
            pos: 0,
            len: 0,
            eof: false,
            mode: Mode::Start,
            consumed: 0,
            line: 1,
            line_start: 0,
            in_record: false,
            depth: 0,
            in_string: false,
            escape: false,
            record_start: 0,
            record_line: 0,
            record_column: 0,
            records_seen: 0,
        }
    }

    /// Bytes of the input read so far (for progress bars).
    pub fn bytes_read(&self) -> u64 {
        self.consumed + self.pos as u64
    }

    /// Whether the input is a JSON array (known once the first record was read).
    pub fn is_array(&self) -> bool {
        matches!(self.mode, Mode::Array { .. } | Mode::ArrayClosed)
    }

    /// Clears `batch` and fills it with whole records until it holds `max_records` records or
    /// `max_bytes` bytes (one record may pass that). Returns `false` once the input is exhausted
    /// and the batch is empty.
    pub fn next_batch(
        &mut self,
        batch: &mut RawBatch,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<bool, ReadError> {
        batch.clear();
        loop {
            if self.pos == self.len && (self.eof || !self.refill()?) {
                return self.finish(batch);
            }
            self.scan(batch)?;
            if !self.in_record
                && (batch.spans.len() >= max_records || batch.data.len() >= max_bytes)
            {
                return Ok(true);
            }
        }
    }

    fn refill(&mut self) -> Result<bool, ReadError> {
        self.consumed += self.len as u64;
        self.pos = 0;
        self.len = 0;
        loop {
            match self.reader.read(&mut self.chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.len = n;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    fn finish(&mut self, batch: &RawBatch) -> Result<bool, ReadError> {
        if self.in_record {
            return Err(ReadError::Syntax {
                line: self.record_line,
                column: self.record_column,
                message: "unexpected end of file inside the record that starts here (a `}` or `\"` is missing)".into(),
            });
        }
        if let Mode::Array { .. } = self.mode {
            return Err(
                self.error_here("unexpected end of file: the JSON array is not closed with `]`")
            );
        }
        if self.records_seen == 0 {
            return Err(ReadError::Empty);
        }
        Ok(!batch.spans.is_empty())
    }

    fn offset(&self) -> u64 {
        self.consumed + self.pos as u64
    }

    fn error_here(&self, message: impl Into<String>) -> ReadError {
        ReadError::Syntax {
            line: self.line,
            column: self.offset() - self.line_start + 1,
            message: message.into(),
        }
    }

    /// Scans from `pos` until the chunk ends or a record completes.
    fn scan(&mut self, batch: &mut RawBatch) -> Result<(), ReadError> {
        if self.in_record {
            return self.scan_record(batch);
        }
        while self.pos < self.len {
            let b = self.chunk[self.pos];
            match b {
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.line_start = self.offset();
                    continue;
                }
                b' ' | b'\t' | b'\r' => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            match (self.mode, b) {
                // A UTF-8 byte order mark at the very start is skipped.
                (Mode::Start, 0xEF | 0xBB | 0xBF) if self.offset() < 3 => {
                    self.pos += 1;
                    self.line_start = self.offset();
                }
                (Mode::Start, b'[') => {
                    self.mode = Mode::Array {
                        expect_value: true,
                        after_first: false,
                    };
                    self.pos += 1;
                }
                (Mode::Start | Mode::Stream, b'{')
                | (
                    Mode::Array {
                        expect_value: true, ..
                    },
                    b'{',
                ) => {
                    if self.mode == Mode::Start {
                        self.mode = Mode::Stream;
                    }
                    if let Mode::Array { .. } = self.mode {
                        self.mode = Mode::Array {
                            expect_value: false,
                            after_first: true,
                        };
                    }
                    self.in_record = true;
                    self.depth = 0;
                    self.in_string = false;
                    self.escape = false;
                    self.record_start = batch.data.len();
                    self.record_line = self.line;
                    self.record_column = self.offset() - self.line_start + 1;
                    return self.scan_record(batch);
                }
                (
                    Mode::Array {
                        expect_value: false,
                        ..
                    },
                    b',',
                ) => {
                    self.mode = Mode::Array {
                        expect_value: true,
                        after_first: true,
                    };
                    self.pos += 1;
                }
                (
                    Mode::Array {
                        expect_value,
                        after_first,
                    },
                    b']',
                ) if !(expect_value && after_first) => {
                    self.mode = Mode::ArrayClosed;
                    self.pos += 1;
                }
                (Mode::ArrayClosed, _) => {
                    return Err(self.error_here(format!(
                        "unexpected `{}` after the closing `]` of the JSON array",
                        char::from(b).escape_default()
                    )));
                }
                (
                    Mode::Array {
                        expect_value: true, ..
                    },
                    b']',
                ) => {
                    return Err(self.error_here("trailing comma before `]`"));
                }
                (
                    Mode::Array {
                        expect_value: false,
                        ..
                    },
                    _,
                ) => {
                    return Err(self.error_here(format!(
                        "expected `,` or `]` after a record, found `{}`",
                        char::from(b).escape_default()
                    )));
                }
                _ => {
                    return Err(self.error_here(format!(
                        "expected a JSON object (`{{`), found `{}`",
                        char::from(b).escape_default()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Copies the current record's bytes into `batch` up to its closing brace or the chunk's end.
    fn scan_record(&mut self, batch: &mut RawBatch) -> Result<(), ReadError> {
        let start = self.pos;
        let bytes = &self.chunk[..self.len];
        let mut i = self.pos;
        let mut done = false;
        while i < bytes.len() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                    i += 1;
                    continue;
                }
                match memchr::memchr3(b'"', b'\\', b'\n', &bytes[i..]) {
                    None => i = bytes.len(),
                    Some(k) => {
                        i += k;
                        match bytes[i] {
                            b'"' => self.in_string = false,
                            b'\\' => self.escape = true,
                            _ => {
                                self.pos = i;
                                return Err(self.error_here(
                                    "line break inside a string (a closing `\"` is missing, or the newline is not escaped as \\n)",
                                ));
                            }
                        }
                        i += 1;
                    }
                }
            } else {
                match bytes[i] {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            i += 1;
                            done = true;
                            break;
                        }
                    }
                    b'\n' => {
                        self.line += 1;
                        self.line_start = self.consumed + i as u64 + 1;
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        batch.data.extend_from_slice(&bytes[start..i]);
        self.pos = i;
        if done {
            self.in_record = false;
            self.records_seen += 1;
            batch.spans.push(Span {
                start: self.record_start,
                end: batch.data.len(),
                line: self.record_line,
                column: self.record_column,
            });
        } else if batch.data.len() - self.record_start > MAX_RECORD_BYTES {
            return Err(ReadError::Syntax {
                line: self.record_line,
                column: self.record_column,
                message: format!(
                    "the record that starts here is larger than {} MiB (is a `}}` or `\"` missing?)",
                    MAX_RECORD_BYTES >> 20
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    /// Splits `input` through a reader that hands out `step` bytes at a time, so records cross
    /// chunk boundaries.
    fn split(input: &[u8], step: usize) -> String {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut s = RecordSplitter::new(Trickle(input, step));
        let mut batch = RawBatch::default();
        let mut out = Vec::new();
        loop {
            match s.next_batch(&mut batch, 2, 1 << 20) {
                Ok(true) => {
                    for span in &batch.spans {
                        out.push(format!(
                            "{}:{} {}",
                            span.line,
                            span.column,
                            String::from_utf8_lossy(batch.bytes(span))
                        ));
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    out.push(format!("error: {e}"));
                    break;
                }
            }
        }
        out.join("\n")
    }

    fn check(input: &str, want: Expect) {
        let whole = split(input.as_bytes(), usize::MAX);
        for step in [1, 2, 3, 7] {
            assert_eq!(split(input.as_bytes(), step), whole, "step {step}");
        }
        want.assert_eq(&whole);
    }

    #[test]
    fn splits_jsonl_arrays_and_pretty_objects() {
        check(
            "{\"a\":\"x}\"}\n{\"b\":{\"c\":[1,{}]}}\n\n{\"d\":\"\\\"{\"}\n",
            expect![[r#"
                1:1 {"a":"x}"}
                2:1 {"b":{"c":[1,{}]}}
                4:1 {"d":"\"{"}"#]],
        );
        check(
            "\u{feff}[\n  {\n    \"a\": \"中文\"\n  },\n  {\"b\": 2}\n]\n",
            expect![[r#"
                2:3 {
                    "a": "中文"
                  }
                5:3 {"b": 2}"#]],
        );
        check(
            "{\"a\":1} {\"b\":2}",
            expect![[r#"
            1:1 {"a":1}
            1:9 {"b":2}"#]],
        );
    }

    #[test]
    fn reports_structural_errors_with_line_and_column() {
        let cases = [
            "",
            "  \n\n",
            "[]",
            "[\n{\"a\":1},\n]",
            "[{\"a\":1} {\"b\":2}]",
            "[{\"a\":1}",
            "[{\"a\":1}] x",
            "{\"a\":1}\n{\"b\":\"unterminated}\n{\"c\":3}\n",
            "{\"a\":1}\n{\"b\":2\n",
            "{\"a\":1}\n3\n",
            "{\"a\":1},\n{\"b\":2}\n",
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|c| format!("{c:?} => {}", split(c.as_bytes(), 3)))
            .collect();
        expect![[r#"
            "" => error: the file is empty (no JSON records)
            "  \n\n" => error: the file is empty (no JSON records)
            "[]" => error: the file is empty (no JSON records)
            "[\n{\"a\":1},\n]" => error: line 3, column 1: trailing comma before `]`
            "[{\"a\":1} {\"b\":2}]" => error: line 1, column 10: expected `,` or `]` after a record, found `{`
            "[{\"a\":1}" => error: line 1, column 9: unexpected end of file: the JSON array is not closed with `]`
            "[{\"a\":1}] x" => error: line 1, column 11: unexpected `x` after the closing `]` of the JSON array
            "{\"a\":1}\n{\"b\":\"unterminated}\n{\"c\":3}\n" => error: line 2, column 20: line break inside a string (a closing `"` is missing, or the newline is not escaped as \n)
            "{\"a\":1}\n{\"b\":2\n" => error: line 2, column 1: unexpected end of file inside the record that starts here (a `}` or `"` is missing)
            "{\"a\":1}\n3\n" => error: line 2, column 1: expected a JSON object (`{`), found `3`
            "{\"a\":1},\n{\"b\":2}\n" => error: line 1, column 8: expected a JSON object (`{`), found `,`"#]]
        .assert_eq(&got.join("\n"));
    }
}

//! Records into a Parquet file: the Arrow columns of each output layout, gathered a few thousand
//! rows at a time and written zstd-compressed, in row groups of at most [`ROW_GROUP_ROWS`] rows
//! or [`ROW_GROUP_BYTES`] bytes, with the writer's default statistics.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use instill_core::{Exchange, OutputFormat, Record, chat_turns, turn_reasoning};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

/// Rows per row group at most: what readers fetch and decode at a time.
pub const ROW_GROUP_ROWS: usize = 100_000;
/// Encoded bytes per row group at most, for long records.
pub const ROW_GROUP_BYTES: usize = 128 << 20;
/// Rows gathered before they go to the writer as one batch.
const BATCH_ROWS: usize = 4096;
/// Text gathered before the batch goes to the writer (an Arrow `utf8` array holds 2 GiB at most).
const BATCH_TEXT_BYTES: usize = 64 << 20;

/// The Arrow schema of an output layout: every field non-null (an absent system prompt is `""`,
/// absent history an empty list), but for `messages`' `reasoning_content` (with `reasoning`):
/// `""` or the reasoning on assistant turns, null on the others.
pub fn schema(format: OutputFormat, reasoning: bool) -> SchemaRef {
    let fields = match format.turn_names() {
        None => vec![
            text("instruction"),
            text("input"),
            text("output"),
            text("system"),
            Field::new("history", DataType::List(pair_field()), false),
        ],
        Some(_) => {
            let (column, keys) = chat_column(format);
            let turn = turn_item(keys, reasoning && format.has_reasoning_field());
            vec![Field::new(column, DataType::List(turn), false)]
        }
    };
    Arc::new(Schema::new(fields))
}

/// A chat layout's column and the keys of its turns (the same words as its JSONL).
fn chat_column(format: OutputFormat) -> (&'static str, [&'static str; 2]) {
    match format {
        OutputFormat::ShareGpt => ("conversations", ["from", "value"]),
        OutputFormat::Messages | OutputFormat::Alpaca => ("messages", ["role", "content"]),
    }
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

/// A list element that is text.
fn text_item() -> FieldRef {
    Arc::new(text("item"))
}

/// One `[user, assistant]` pair of Alpaca's `history`.
fn pair_field() -> FieldRef {
    Arc::new(Field::new("item", DataType::List(text_item()), false))
}

/// The fields of one turn: `[who, what]`, and `reasoning_content` with `reasoning`.
fn turn_fields([who, what]: [&str; 2], reasoning: bool) -> Fields {
    let mut fields = vec![text(who), text(what)];
    if reasoning {
        fields.push(Field::new(REASONING, DataType::Utf8, true));
    }
    Fields::from(fields)
}

/// The field of an assistant turn's reasoning in the `messages` layout.
const REASONING: &str = "reasoning_content";

/// A list element that is one turn.
fn turn_item(keys: [&str; 2], reasoning: bool) -> FieldRef {
    Arc::new(Field::new(
        "item",
        DataType::Struct(turn_fields(keys, reasoning)),
        false,
    ))
}

/// The columns of rows not yet handed to the writer (one per writer: the size of the larger
/// variant does not matter).
#[allow(clippy::large_enum_variant)]
enum Columns {
    Alpaca {
        instruction: StringBuilder,
        input: StringBuilder,
        output: StringBuilder,
        system: StringBuilder,
        history: ListBuilder<ListBuilder<StringBuilder>>,
    },
    Chat {
        /// The layout's words for system, user and assistant.
        names: [&'static str; 3],
        /// The struct's field names (`from`/`value`, `role`/`content`).
        keys: [&'static str; 2],
        who: StringBuilder,
        what: StringBuilder,
        /// `reasoning_content` of each turn, when the schema has it.
        reasoning: Option<StringBuilder>,
        /// Where each row's turns start in `who`/`what`, and where the last ends.
        offsets: Vec<i32>,
    },
}

impl Columns {
    fn new(format: OutputFormat, reasoning: bool) -> Columns {
        match format.turn_names() {
            Some(names) => Columns::Chat {
                names,
                keys: chat_column(format).1,
                who: StringBuilder::new(),
                what: StringBuilder::new(),
                reasoning: (reasoning && format.has_reasoning_field()).then(StringBuilder::new),
                offsets: vec![0],
            },
            None => Columns::Alpaca {
                instruction: StringBuilder::new(),
                input: StringBuilder::new(),
                output: StringBuilder::new(),
                system: StringBuilder::new(),
                history: ListBuilder::new(
                    ListBuilder::new(StringBuilder::new()).with_field(text_item()),
                )
                .with_field(pair_field()),
            },
        }
    }

    /// Appends one record's row; returns the bytes of text it holds.
    fn push(&mut self, r: &Record) -> usize {
        match self {
            Columns::Alpaca {
                instruction,
                input,
                output,
                system,
                history,
            } => {
                instruction.append_value(&r.instruction);
                input.append_value(&r.input);
                output.append_value(&r.output);
                system.append_value(&r.system);
                let mut bytes =
                    r.instruction.len() + r.input.len() + r.output.len() + r.system.len();
                for Exchange(user, assistant) in &r.history {
                    history.values().values().append_value(user);
                    history.values().values().append_value(assistant);
                    history.values().append(true);
                    bytes += user.len() + assistant.len();
                }
                history.append(true);
                bytes
            }
            Columns::Chat {
                names,
                who,
                what,
                reasoning,
                offsets,
                ..
            } => {
                let user_turn = r.user_turn();
                let mut bytes = 0;
                let mut turns = offsets.last().copied().unwrap_or(0);
                let count = chat_turns(r, &user_turn, *names).count();
                for (i, (name, text)) in chat_turns(r, &user_turn, *names).enumerate() {
                    who.append_value(name);
                    what.append_value(text);
                    bytes += text.len();
                    turns += 1;
                    if let Some(reasoning) = reasoning {
                        let value = turn_reasoning(r, true, (i, count), name);
                        reasoning.append_option(value);
                        bytes += value.map_or(0, str::len);
                    }
                }
                offsets.push(turns);
                bytes
            }
        }
    }

    /// The gathered rows as a batch of `schema`; the columns start empty again.
    fn take(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        let arrays: Vec<ArrayRef> = match self {
            Columns::Alpaca {
                instruction,
                input,
                output,
                system,
                history,
            } => vec![
                Arc::new(instruction.finish()),
                Arc::new(input.finish()),
                Arc::new(output.finish()),
                Arc::new(system.finish()),
                Arc::new(history.finish()),
            ],
            Columns::Chat {
                keys,
                who,
                what,
                reasoning,
                offsets,
                ..
            } => {
                let mut children: Vec<ArrayRef> =
                    vec![Arc::new(who.finish()), Arc::new(what.finish())];
                children.extend(reasoning.as_mut().map(|r| Arc::new(r.finish()) as ArrayRef));
                let with_reasoning = reasoning.is_some();
                let turns =
                    StructArray::try_new(turn_fields(*keys, with_reasoning), children, None)?;
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                vec![Arc::new(ListArray::try_new(
                    turn_item(*keys, with_reasoning),
                    offsets,
                    Arc::new(turns),
                    None,
                )?)]
            }
        };
        RecordBatch::try_new(schema.clone(), arrays)
    }
}

/// Writes records as one Parquet file into `W`.
pub struct ParquetSink<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    columns: Columns,
    rows: usize,
    text_bytes: usize,
}

impl<W: Write + Send> std::fmt::Debug for ParquetSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> ParquetSink<W> {
    /// A file of `format`'s columns (with `messages`' `reasoning_content` when `reasoning`),
    /// its pages compressed with zstd at `zstd_level` (1-22).
    pub fn new(
        out: W,
        format: OutputFormat,
        zstd_level: i32,
        reasoning: bool,
    ) -> Result<Self, ParquetError> {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .set_created_by(format!("instill {}", env!("CARGO_PKG_VERSION")))
            .build();
        let schema = schema(format, reasoning);
        Ok(ParquetSink {
            writer: ArrowWriter::try_new(out, schema.clone(), Some(props))?,
            schema,
            columns: Columns::new(format, reasoning),
            rows: 0,
            text_bytes: 0,
        })
    }

    /// Appends one record; returns the bytes of text its row holds.
    pub fn write(&mut self, record: &Record) -> Result<u64, ParquetError> {
        let bytes = self.columns.push(record);
        self.rows += 1;
        self.text_bytes += bytes;
        if self.rows >= BATCH_ROWS || self.text_bytes >= BATCH_TEXT_BYTES {
            self.flush_batch()?;
        }
        Ok(bytes as u64)
    }

    fn flush_batch(&mut self) -> Result<(), ParquetError> {
        if self.rows > 0 {
            let batch = self.columns.take(&self.schema)?;
            self.writer.write(&batch)?;
            self.rows = 0;
            self.text_bytes = 0;
        }
        Ok(())
    }

    /// Writes the last rows and the footer; returns the output.
    pub fn finish(mut self) -> Result<W, ParquetError> {
        self.flush_batch()?;
        self.writer.into_inner()
    }
}

//! Reading a Parquet file's rows a batch at a time (the reader decodes one row group at a time,
//! only the columns the layout reads), each row turned into the JSON object instill-core's
//! layout parser takes. Liberal in what it takes, as files written by `datasets`, pandas or
//! pyarrow vary: `utf8`, `large_utf8` and string views, binary columns holding UTF-8, every list
//! kind, dictionary-encoded columns, nulls anywhere (a null is an absent field), and any columns
//! besides the layout's (never read).

use std::fs::File;

use anyhow::{Context, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowDictionaryKeyType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, OffsetSizeTrait, RecordBatch};
use arrow_schema::{ArrowError, DataType};
use instill_core::{FieldError, InputFormat};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};

/// A Parquet file being read.
pub struct ParquetRows {
    reader: ParquetRecordBatchReader,
    format: InputFormat,
    /// The 1-based number of the next row.
    next_row: u64,
    total_rows: u64,
    size: u64,
}

impl std::fmt::Debug for ParquetRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetRows")
            .field("format", &self.format)
            .field("next_row", &self.next_row)
            .finish_non_exhaustive()
    }
}

/// Rows read together: the layout's columns, and the number of the first row in the file.
#[derive(Debug)]
pub struct RowBatch {
    batch: RecordBatch,
    first_row: u64,
}

impl ParquetRows {
    /// Opens `file` (named `label` in errors, `size` bytes): reads the footer, takes `format`
    /// or detects it from the column names, and checks that the columns it reads have types
    /// that can hold text. Batches hold at most `batch_rows` rows.
    pub fn open(
        label: &str,
        file: File,
        size: u64,
        format: Option<InputFormat>,
        batch_rows: usize,
    ) -> anyhow::Result<ParquetRows> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{label}: not a readable Parquet file"))?;
        let names: Vec<&str> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let format = match format {
            Some(f) => f,
            None => InputFormat::detect_columns(&names)
                .map_err(|e| anyhow::anyhow!("{label}: {e}; pass --format"))?,
        };
        let wanted: Vec<usize> = (0..names.len())
            .filter(|&i| format.fields().contains(&names[i]))
            .collect();
        if wanted.is_empty() {
            bail!(
                "{label}: none of the columns the {format} layout reads ({}) is in the file (its columns: {})",
                format.fields().join(", "),
                names.join(", ")
            );
        }
        for &i in &wanted {
            let field = &builder.schema().fields()[i];
            if !readable(field.data_type()) {
                bail!(
                    "{label}: column `{}` has type {}, which cannot hold text (expected strings, or lists and structs of them)",
                    field.name(),
                    field.data_type()
                );
            }
        }
        let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        if total_rows == 0 {
            bail!("{label}: the Parquet file has no rows");
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch_rows)
            .build()
            .with_context(|| format!("{label}: cannot read the Parquet file"))?;
        Ok(ParquetRows {
            reader,
            format,
            next_row: 1,
            total_rows,
            size,
        })
    }

    /// The layout the rows are read in.
    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// The next rows, or `None` after the last. The error says which rows could not be decoded.
    pub fn next_batch(&mut self) -> Result<Option<RowBatch>, ArrowError> {
        let Some(batch) = self.reader.next().transpose()? else {
            return Ok(None);
        };
        let first_row = self.next_row;
        self.next_row += batch.num_rows() as u64;
        Ok(Some(RowBatch { batch, first_row }))
    }

    /// The number of the first row not read yet (1-based).
    pub fn next_row(&self) -> u64 {
        self.next_row
    }

    /// About how many bytes of the file were read (for progress bars): the file's size in
    /// proportion to the rows read.
    pub fn bytes_read(&self) -> u64 {
        let done = self.next_row.saturating_sub(1).min(self.total_rows);
        u64::try_from(u128::from(self.size) * u128::from(done) / u128::from(self.total_rows))
            .unwrap_or(self.size)
    }
}

impl RowBatch {
    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// The 1-based number in the file of the batch's row `i`.
    pub fn row_number(&self, i: usize) -> u64 {
        self.first_row + i as u64
    }

    /// Appends row `i` to `out` as one JSON object of the layout's columns (a null becomes
    /// `null`, which the layout parser reads as an absent field).
    pub fn row_json(&self, i: usize, out: &mut Vec<u8>) -> Result<(), FieldError> {
        out.push(b'{');
        let schema = self.batch.schema();
        for (j, (field, column)) in schema.fields().iter().zip(self.batch.columns()).enumerate() {
            if j > 0 {
                out.push(b',');
            }
            let cell = Cell {
                array: column.as_ref(),
                row: i,
            };
            serde_json::to_writer(&mut *out, field.name())
                .and_then(|()| {
                    out.push(b':');
                    serde_json::to_writer(&mut *out, &cell)
                })
                .map_err(|e| FieldError {
                    line: 1,
                    column: None,
                    field: Some(field.name().clone()),
                    message: e.to_string(),
                })?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// Whether values of `dt` can be turned into JSON that may hold the text of a record.
fn readable(dt: &DataType) -> bool {
    match dt {
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            readable(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().all(|f| readable(f.data_type())),
        DataType::Dictionary(key, value) => key.is_dictionary_key_type() && readable(value),
        _ => false,
    }
}

/// One value of an Arrow array, serialised as JSON.
struct Cell<'a> {
    array: &'a dyn Array,
    row: usize,
}

impl serde::Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (a, i) = (self.array, self.row);
        if a.is_null(i) {
            return s.serialize_none();
        }
        match a.data_type() {
            DataType::Null => s.serialize_none(),
            DataType::Boolean => s.serialize_bool(a.as_boolean().value(i)),
            DataType::Int8 => s.serialize_i64(a.as_primitive::<Int8Type>().value(i).into()),
            DataType::Int16 => s.serialize_i64(a.as_primitive::<Int16Type>().value(i).into()),
            DataType::Int32 => s.serialize_i64(a.as_primitive::<Int32Type>().value(i).into()),
            DataType::Int64 => s.serialize_i64(a.as_primitive::<Int64Type>().value(i)),
            DataType::UInt8 => s.serialize_u64(a.as_primitive::<UInt8Type>().value(i).into()),
            DataType::UInt16 => s.serialize_u64(a.as_primitive::<UInt16Type>().value(i).into()),
            DataType::UInt32 => s.serialize_u64(a.as_primitive::<UInt32Type>().value(i).into()),
            DataType::UInt64 => s.serialize_u64(a.as_primitive::<UInt64Type>().value(i)),
            DataType::Float32 => s.serialize_f64(a.as_primitive::<Float32Type>().value(i).into()),
            DataType::Float64 => s.serialize_f64(a.as_primitive::<Float64Type>().value(i)),
            DataType::Utf8 => s.serialize_str(a.as_string::<i32>().value(i)),
            DataType::LargeUtf8 => s.serialize_str(a.as_string::<i64>().value(i)),
            DataType::Utf8View => s.serialize_str(a.as_string_view().value(i)),
            DataType::Binary => utf8(s, a.as_binary::<i32>().value(i)),
            DataType::LargeBinary => utf8(s, a.as_binary::<i64>().value(i)),
            DataType::BinaryView => utf8(s, a.as_binary_view().value(i)),
            DataType::List(_) => list::<i32, S>(s, a, i),
            DataType::LargeList(_) => list::<i64, S>(s, a, i),
            DataType::FixedSizeList(_, _) => {
                let values = a.as_fixed_size_list().value(i);
                seq(s, values.as_ref(), 0..values.len())
            }
            DataType::Struct(fields) => {
                let st = a.as_struct();
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (field, column) in fields.iter().zip(st.columns()) {
                    let cell = Cell {
                        array: column.as_ref(),
                        row: i,
                    };
                    map.serialize_entry(field.name(), &cell)?;
                }
                map.end()
            }
            DataType::Dictionary(key, _) => match key.as_ref() {
                DataType::Int8 => dictionary::<Int8Type, S>(s, a, i),
                DataType::Int16 => dictionary::<Int16Type, S>(s, a, i),
                DataType::Int32 => dictionary::<Int32Type, S>(s, a, i),
                DataType::Int64 => dictionary::<Int64Type, S>(s, a, i),
                DataType::UInt8 => dictionary::<UInt8Type, S>(s, a, i),
                DataType::UInt16 => dictionary::<UInt16Type, S>(s, a, i),
                DataType::UInt32 => dictionary::<UInt32Type, S>(s, a, i),
                DataType::UInt64 => dictionary::<UInt64Type, S>(s, a, i),
                other => Err(S::Error::custom(format!(
                    "unsupported dictionary key type {other}"
                ))),
            },
            other => Err(S::Error::custom(format!("unsupported type {other}"))),
        }
    }
}

/// Bytes that must be UTF-8 text.
fn utf8<S: Serializer>(s: S, bytes: &[u8]) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => s.serialize_str(text),
        Err(_) => Err(S::Error::custom("invalid UTF-8 in a binary value")),
    }
}

fn list<O: OffsetSizeTrait, S: Serializer>(
    s: S,
    a: &dyn Array,
    i: usize,
) -> Result<S::Ok, S::Error> {
    let list = a.as_list::<O>();
    let offsets = list.value_offsets();
    let (start, end) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
    seq(s, list.values().as_ref(), start..end)
}

/// The values `range` of `values` as a JSON array.
fn seq<S: Serializer>(
    s: S,
    values: &dyn Array,
    range: std::ops::Range<usize>,
) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(range.len()))?;
    for row in range {
        seq.serialize_element(&Cell { array: values, row })?;
    }
    seq.end()
}

fn dictionary<K: ArrowDictionaryKeyType, S: Serializer>(
    s: S,
    a: &dyn Array,
    i: usize,
) -> Result<S::Ok, S::Error> {
    let dict = a.as_dictionary::<K>();
    match dict.key(i) {
        Some(key) => serde::Serialize::serialize(
            &Cell {
                array: dict.values().as_ref(),
                row: key,
            },
            s,
        ),
        None => s.serialize_none(),
    }
}

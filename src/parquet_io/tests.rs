//! Parquet written by [`ParquetSink`] reads back, row by row, into the JSON the JSONL writer
//! writes; files in the shapes other tools write (large strings, nulls, dictionaries, binary,
//! extra columns) read too.

use std::sync::Arc;

use arrow_array::builder::{
    LargeStringBuilder, ListBuilder, StringBuilder, StringDictionaryBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use instill_core::{
    Columns, Exchange, InputFormat, OutputFormat, Record, parse_records, write_record,
};
use parquet::arrow::ArrowWriter;

use super::{ParquetRows, ParquetSink};

const LAYOUTS: [OutputFormat; 3] = [
    OutputFormat::Alpaca,
    OutputFormat::ShareGpt,
    OutputFormat::Messages,
];

fn records() -> Vec<Record> {
    let mut chat = Record::new("那番茄炒蛋要先炒什么？", "", "先炒蛋，盛出后再炒番茄。");
    chat.system = "你是一位耐心的厨师。".into();
    chat.history = vec![
        Exchange("我想学做饭。".into(), "好的！\n从番茄炒蛋开始。".into()),
        Exchange("Why that one?".into(), "Few steps, \"easy\" 🍳".into()),
    ];
    vec![
        Record::new("写一首关于春天的短诗。", "", "春风拂面，\n桃花笑开。"),
        Record::new("Translate into English.", "今天开会。", "We meet today."),
        Record::new("Quote \"tab\there\" \\ 🎉", "", ""),
        chat,
    ]
}

/// Every row of `path` (read `batch_rows` at a time) as the JSON object handed to the parser.
fn rows_json(
    path: &std::path::Path,
    format: Option<InputFormat>,
    batch_rows: usize,
) -> (InputFormat, Vec<String>) {
    let file = std::fs::File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    let mut rows = ParquetRows::open("t.parquet", file, size, format, batch_rows).unwrap();
    let mut out = Vec::new();
    let mut expected_row = 1;
    while let Some(batch) = rows.next_batch().unwrap() {
        for i in 0..batch.len() {
            assert_eq!(batch.row_number(i), expected_row);
            expected_row += 1;
            let mut json = Vec::new();
            batch.row_json(i, &mut json).unwrap();
            out.push(String::from_utf8(json).unwrap());
        }
    }
    assert_eq!(rows.bytes_read(), size);
    (rows.format(), out)
}

fn write_parquet(path: &std::path::Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

#[test]
fn each_layout_reads_back_as_the_jsonl_writer_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    for format in LAYOUTS {
        let path = dir.path().join(format!("{format}.parquet"));
        let mut sink =
            ParquetSink::new(std::fs::File::create(&path).unwrap(), format, 3, false).unwrap();
        for r in records() {
            sink.write(&r).unwrap();
        }
        sink.finish().unwrap();
        let (detected, rows) = rows_json(&path, None, 3);
        assert_eq!(detected, format.as_input());
        let (mut want, mut got) = (Vec::new(), Vec::new());
        for (r, json) in records().iter().zip(&rows) {
            write_record(r, format, Columns::default(), &mut want);
            let mut back = Vec::new();
            parse_records(json.as_bytes(), detected, &mut back).unwrap();
            for b in &back {
                write_record(b, format, Columns::default(), &mut got);
            }
        }
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(want).unwrap(),
            "{format}"
        );
    }
}

#[test]
fn messages_keep_reasoning_content_through_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.parquet");
    let mut records = records();
    records[0].reasoning = "春天：先想意象，再押韵。".into();
    records[3].reasoning = "The last turn's reasoning.".into();
    let format = OutputFormat::Messages;
    let mut sink =
        ParquetSink::new(std::fs::File::create(&path).unwrap(), format, 3, true).unwrap();
    for r in &records {
        sink.write(r).unwrap();
    }
    sink.finish().unwrap();
    let (_, rows) = rows_json(&path, None, 2);
    let every = Columns {
        reasoning: true,
        ..Columns::default()
    };
    let (mut want, mut got) = (Vec::new(), Vec::new());
    for (r, json) in records.iter().zip(&rows) {
        write_record(r, format, every, &mut want);
        let mut back = Vec::new();
        parse_records(json.as_bytes(), InputFormat::Messages, &mut back).unwrap();
        assert_eq!(back[0].reasoning, r.reasoning);
        write_record(&back[0], format, every, &mut got);
    }
    assert_eq!(
        String::from_utf8(got).unwrap(),
        String::from_utf8(want).unwrap()
    );
    // An assistant turn without reasoning carries "" (the column is there on every one).
    assert!(
        rows[1].contains("\"reasoning_content\":\"\""),
        "{}",
        rows[1]
    );
}

#[test]
fn the_columns_are_the_layouts_fields() {
    let names = |f| -> Vec<String> {
        super::write::schema(f, false)
            .fields()
            .iter()
            .map(|x| format!("{}: {}", x.name(), x.data_type()))
            .collect()
    };
    expect_test::expect![[r#"
        [
            [
                "instruction: Utf8",
                "input: Utf8",
                "output: Utf8",
                "system: Utf8",
                "history: List(non-null List(non-null Utf8))",
            ],
            [
                "conversations: List(non-null Struct(\"from\": non-null Utf8, \"value\": non-null Utf8))",
            ],
            [
                "messages: List(non-null Struct(\"role\": non-null Utf8, \"content\": non-null Utf8))",
            ],
        ]
    "#]]
    .assert_debug_eq(&LAYOUTS.map(names));
}

#[test]
fn files_in_other_tools_shapes_read_too() {
    // large_utf8 with nulls, a dictionary-encoded column, binary text, an extra int column,
    // and history as a nullable list of lists.
    let mut instruction = LargeStringBuilder::new();
    let mut system = StringDictionaryBuilder::<Int32Type>::new();
    let mut history = ListBuilder::new(ListBuilder::new(StringBuilder::new()));
    for i in 0..3 {
        instruction.append_value(format!("问题 {i}"));
        if i == 1 {
            system.append_null();
            history.append_null();
        } else {
            system.append_value("你是助手");
            history.values().values().append_value("hi");
            history.values().values().append_value("hello");
            history.values().append(true);
            history.append(true);
        }
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(vec![7, 8, 9]))),
        ("instruction", Arc::new(instruction.finish())),
        (
            "output",
            Arc::new(BinaryArray::from(vec!["答".as_bytes(), b"b", b"c"])),
        ),
        ("system", Arc::new(system.finish())),
        ("history", Arc::new(history.finish())),
    ];
    let batch =
        RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(n, a)| (n, a, true)))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.parquet");
    write_parquet(&path, &batch);
    let (format, rows) = rows_json(&path, None, 2);
    assert_eq!(format, InputFormat::Alpaca);
    expect_test::expect![[r#"
        [
            "{\"instruction\":\"问题 0\",\"output\":\"答\",\"system\":\"你是助手\",\"history\":[[\"hi\",\"hello\"]]}",
            "{\"instruction\":\"问题 1\",\"output\":\"b\",\"system\":null,\"history\":null}",
            "{\"instruction\":\"问题 2\",\"output\":\"c\",\"system\":\"你是助手\",\"history\":[[\"hi\",\"hello\"]]}",
        ]
    "#]]
    .assert_debug_eq(&rows);
    let mut back = Vec::new();
    parse_records(rows[1].as_bytes(), format, &mut back).unwrap();
    assert_eq!(back, vec![Record::new("问题 1", "", "b")]);
}

#[test]
fn unreadable_files_and_columns_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str, batch: &RecordBatch, format| {
        let path = dir.path().join(name);
        write_parquet(&path, batch);
        let file = std::fs::File::open(&path).unwrap();
        ParquetRows::open(name, file, 1, format, 10)
            .unwrap_err()
            .to_string()
    };
    let q = RecordBatch::try_from_iter([
        (
            "question",
            Arc::new(StringBuilder::new().finish()) as ArrayRef,
        ),
        (
            "answer",
            Arc::new(StringBuilder::new().finish()) as ArrayRef,
        ),
    ])
    .unwrap();
    let err = open("qa.parquet", &q, None);
    assert!(
        err.starts_with("qa.parquet: cannot detect the format from the columns (answer, question)"),
        "{err}"
    );
    let err = open("qa2.parquet", &q, Some(InputFormat::Messages));
    assert!(
        err.contains("none of the columns the messages layout reads (messages)"),
        "{err}"
    );
    let dates = Schema::new(vec![Field::new("instruction", DataType::Date32, false)]);
    let batch = RecordBatch::try_new(
        Arc::new(dates),
        vec![Arc::new(arrow_array::Date32Array::from(vec![1]))],
    )
    .unwrap();
    let err = open("dates.parquet", &batch, None);
    assert!(
        err.contains("column `instruction` has type Date32"),
        "{err}"
    );
    let empty = RecordBatch::try_from_iter([(
        "instruction",
        Arc::new(StringBuilder::new().finish()) as ArrayRef,
    )])
    .unwrap();
    let err = open("empty.parquet", &empty, None);
    assert!(
        err.contains("empty.parquet: the Parquet file has no rows"),
        "{err}"
    );
    let path = dir.path().join("cut.parquet");
    write_parquet(&path, &q);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = ParquetRows::open(
        "cut.parquet",
        std::fs::File::open(&path).unwrap(),
        1,
        None,
        10,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").starts_with("cut.parquet: not a readable Parquet file"),
        "{err:#}"
    );
}

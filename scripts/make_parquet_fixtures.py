#!/usr/bin/env python3
"""Parquet files as other tools write them, for `import`'s tests (tests/parquet.rs).

Run by developers, not by CI. Writes, under tests/fixtures/parquet/, each `NAME.parquet` beside
`NAME.jsonl` holding the same rows as JSON (what `import` must store for both alike):

- datasets_alpaca: written by `datasets` (`Dataset.from_list(...).to_parquet`), as the Hub
  serves Alpaca-style sets: `string` columns, a null `system`, `history` as list<list<string>>
  (null when none), extra columns (`id` int64, `tags` list<string>), row groups of 2 rows;
- pyarrow_sharegpt: pyarrow, `conversations` as list<struct<from: large_string, value:
  large_string>>, a `system` column, extra columns, large_list, row groups of 2 rows;
- pyarrow_messages: pyarrow, `messages` as list<struct<role: dictionary, content: string>> with
  an extra field in the struct, `messages` as the third column.

and the bad ones (no .jsonl): output_int64 (`output` int64), unknown_columns (`question`,
`answer`), robot_row3 (sharegpt whose third row has a speaker `robot`).

    python3 -m venv .peer-venv && .peer-venv/bin/pip install datasets pyarrow
    .peer-venv/bin/python scripts/make_parquet_fixtures.py
"""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "parquet")

ALPACA = [
    {"id": 1, "instruction": "写一首关于春天的短诗。", "input": "", "output": "春风拂面，\n桃花笑开。",
     "system": None, "history": None, "tags": ["zh", "poem"]},
    {"id": 2, "instruction": "Translate into English.", "input": "今天的会议改到下午三点。",
     "output": "Today's meeting moved to 3 p.m.", "system": "You translate.", "history": None,
     "tags": []},
    {"id": 3, "instruction": "Quote: \"tab\there\" and a backslash \\ and emoji 🎉", "input": "",
     "output": "ok\t✓", "system": None, "history": None, "tags": None},
    {"id": 4, "instruction": "那番茄炒蛋要先炒什么？", "input": "", "output": "先炒蛋，盛出后再炒番茄。",
     "system": "你是一位耐心的厨师。",
     "history": [["我想学做饭，从哪道菜开始？", "番茄炒蛋。\n步骤少，容易上手。"], ["Why?", "Few \"steps\" 🍳"]],
     "tags": ["chat"]},
    {"id": 5, "instruction": "Say hi.", "input": "", "output": "Hi!", "system": "", "history": [],
     "tags": None},
]

SHAREGPT = [
    [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！有什么可以帮你？"}],
    [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"},
     {"from": "gpt", "value": "4"}, {"from": "human", "value": "And \"3+3\"?\nExplain 🙂"},
     {"from": "gpt", "value": "6"}],
    [{"from": "human", "value": "写一句诗"}, {"from": "gpt", "value": "床前明月光。"}],
]

MESSAGES = [
    [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "天空为什么是蓝色的？"},
     {"role": "assistant", "content": "因为瑞利散射。"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!\nHow can I help?"},
     {"role": "user", "content": "A joke 😀"}, {"role": "assistant", "content": "Knock knock."}],
]


def jsonl(name, rows):
    with open(os.path.join(OUT, name + ".jsonl"), "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)

    ds = Dataset.from_list(ALPACA)
    ds.to_parquet(os.path.join(OUT, "datasets_alpaca.parquet"), batch_size=2)
    jsonl("datasets_alpaca", ALPACA)

    turn = pa.struct([("from", pa.large_string()), ("value", pa.large_string())])
    rows = [{"id": f"c{i}", "system": None, "conversations": c, "lang": None}
            for i, c in enumerate(SHAREGPT)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("id", pa.string()), ("system", pa.large_string()),
        ("conversations", pa.large_list(turn)), ("lang", pa.string())]))
    pq.write_table(table, os.path.join(OUT, "pyarrow_sharegpt.parquet"), row_group_size=2)
    jsonl("pyarrow_sharegpt", [{"conversations": c} for c in SHAREGPT])

    message = pa.struct([("role", pa.dictionary(pa.int8(), pa.string())), ("content", pa.string()),
                         ("name", pa.string())])
    rows = [{"source": "test", "score": 0.5, "messages": m} for m in MESSAGES]
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("source", pa.string()), ("score", pa.float64()), ("messages", pa.list_(message))]))
    pq.write_table(table, os.path.join(OUT, "pyarrow_messages.parquet"))
    jsonl("pyarrow_messages", [{"messages": m} for m in MESSAGES])

    pq.write_table(pa.table({"instruction": ["a", "b"], "output": pa.array([1, 2], pa.int64())}),
                   os.path.join(OUT, "output_int64.parquet"))
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}),
                   os.path.join(OUT, "unknown_columns.parquet"))
    bad = SHAREGPT[:2] + [[{"from": "human", "value": "hi"}, {"from": "robot", "value": "beep"}]]
    pq.write_table(pa.Table.from_pylist([{"conversations": c} for c in bad]),
                   os.path.join(OUT, "robot_row3.parquet"), row_group_size=2)


if __name__ == "__main__":
    main()

"""Loads an instill export the way its consumers do and prints what they saw, as JSON.

Usage: load_export.py DIR

- `datasets.load_dataset(DIR)`: every split with its rows and columns;
- `pyarrow`: every data file the card lists, read on its own (JSON Lines, zstd or not, or
  Parquet), with its rows and columns;
- LLaMA-Factory: each entry of `dataset_info.json` checked against the schema its data/README.md
  documents, then loaded the way its loader (`llamafactory.data.loader._load_single_dataset`)
  loads a `file_name`, and each row converted the way its alpaca / sharegpt converters read
  columns and tags (a `"ranking": true` alpaca entry: the prompt turns with `chosen` and
  `rejected`). An entry LLaMA-Factory would refuse is reported with its reason; an export without
  `dataset_info.json` (dpo-messages) has no entries.
"""

import io
import json
import os
import sys

import datasets
import huggingface_hub
import pyarrow.json as pj
import pyarrow.parquet as pq

# LLaMA-Factory's documented dataset_info.json keys (data/README.md) and its FILEEXT2TYPE.
LF_KEYS = {"hf_hub_url", "ms_hub_url", "script_url", "cloud_file_name", "file_name",
           "formatting", "ranking", "subset", "split", "folder", "num_samples", "columns", "tags"}
LF_COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images",
              "videos", "audios", "chosen", "rejected", "kto_tag"}
LF_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag",
           "function_tag", "system_tag"}
LF_FILE_TYPES = {"arrow": "arrow", "csv": "csv", "json": "json", "jsonl": "json",
                 "parquet": "parquet", "txt": "text"}


def card_files(root):
    """The data files per split from the card's YAML `configs:`."""
    card = huggingface_hub.DatasetCard.load(os.path.join(root, "README.md"))
    configs = card.data.to_dict()["configs"]
    return {f["split"]: f["path"] for f in configs[0]["data_files"]}


def read_with_pyarrow(path):
    if path.endswith(".parquet"):
        table = pq.read_table(path)
    else:
        raw = open(path, "rb").read()
        if path.endswith(".zst"):
            import zstandard
            raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
        table = pj.read_json(io.BytesIO(raw))
    return {"rows": table.to_pylist(), "columns": table.column_names}


def lf_entry(root, name, attr):
    """What LLaMA-Factory does with one entry: its error, or the rows it would train on."""
    unknown = set(attr) - LF_KEYS
    if unknown:
        return {"error": f"unknown keys {sorted(unknown)}"}
    if attr.get("formatting", "alpaca") not in ("alpaca", "sharegpt"):
        return {"error": f"formatting {attr.get('formatting')}"}
    if set(attr.get("columns", {})) - LF_COLUMNS or set(attr.get("tags", {})) - LF_TAGS:
        return {"error": "unknown columns or tags"}
    local = os.path.join(root, attr["file_name"])
    if os.path.isdir(local):
        files = [os.path.join(local, f) for f in os.listdir(local)]
    elif os.path.isfile(local):
        files = [local]
    else:
        return {"error": f"File {local} not found."}
    kinds = {LF_FILE_TYPES.get(os.path.splitext(f)[-1][1:]) for f in files}
    if None in kinds:
        return {"error": "Allowed file types: " + ",".join(LF_FILE_TYPES)}
    if len(kinds) != 1:
        return {"error": "File types should be identical."}
    ds = datasets.load_dataset(kinds.pop(), data_files=sorted(files), split=attr.get("split", "train"))
    return {"rows": [lf_convert(attr, row) for row in ds]}


def lf_convert(attr, row):
    """The prompt/response turns LLaMA-Factory's converters read from one row."""
    cols, tags = attr.get("columns", {}), attr.get("tags", {})
    if attr.get("formatting", "alpaca") == "alpaca":
        # DatasetAttr.join: with a `columns` object, a column it does not name is None (its
        # defaults, instruction/input/output, hold only without one).
        named = (lambda k, d: cols.get(k)) if "columns" in attr else (lambda k, d: d)
        turns = []
        if cols.get("history") and isinstance(row[cols["history"]], list):
            for user, assistant in row[cols["history"]]:
                turns += [("user", user), ("assistant", assistant)]
        query = row[named("query", "input")] if named("query", "input") else None
        prompt = row[named("prompt", "instruction")] if named("prompt", "instruction") else None
        turns.append(("user", "\n".join(x for x in (prompt, query) if x)))
        system = row[cols["system"]] if cols.get("system") else None
        if attr.get("ranking"):
            # The pairwise example: chosen and rejected, both strings.
            chosen, rejected = row[cols["chosen"]], row[cols["rejected"]]
            if not (isinstance(chosen, str) and isinstance(rejected, str)):
                return {"error": "ranking row whose chosen/rejected are not strings"}
            return {"system": system or "", "turns": turns, "chosen": chosen, "rejected": rejected}
        turns.append(("assistant", row[named("response", "output")]))
        return {"system": system or "", "turns": turns}
    messages = row[cols.get("messages", "conversations")]
    role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    names = {tags.get("user_tag", "human"): "user", tags.get("assistant_tag", "gpt"): "assistant"}
    system = ""
    if messages and messages[0][role] == tags.get("system_tag", "system"):
        system, messages = messages[0][content], messages[1:]
    turns = [(names[m[role]], m[content]) for m in messages]
    if attr.get("ranking"):
        # SharegptDatasetConverter: an odd number of turns (ending with the user's), then
        # chosen and rejected dicts spoken by the assistant.
        chosen, rejected = row[cols["chosen"]], row[cols["rejected"]]
        assistant = tags.get("assistant_tag", "gpt")
        if len(turns) % 2 == 0 or not all(
            isinstance(x, dict) and x[role] == assistant for x in (chosen, rejected)
        ):
            return {"error": f"invalid ranking row {row}"}
        return {"system": system, "turns": turns, "chosen": chosen[content], "rejected": rejected[content]}
    return {"system": system, "turns": turns}


def main():
    root = sys.argv[1]
    loaded = datasets.load_dataset(root)
    out = {"datasets": {}, "pyarrow": {}, "llamafactory": {}}
    for split, ds in loaded.items():
        out["datasets"][split] = {"rows": ds.to_list(), "columns": ds.column_names}
    for split, paths in card_files(root).items():
        out["pyarrow"][split] = [read_with_pyarrow(os.path.join(root, p)) for p in paths]
    info_path = os.path.join(root, "dataset_info.json")
    info = json.load(open(info_path)) if os.path.exists(info_path) else {}
    for name, attr in info.items():
        out["llamafactory"][name] = lf_entry(root, name, attr)
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    main()

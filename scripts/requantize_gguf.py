"""Writes a copy of a GGUF file with its Q4_1 tensors requantized to Q4_0 (metadata and every
other tensor as they are), so the batched-generation bench can measure ggml's repacked CPU
kernels, which exist for Q4_0 and Q4_K but not Q4_1:

    .peer-venv/bin/python scripts/requantize_gguf.py SmolLM2-135M-Instruct.Q4_1.gguf OUT.gguf
    INSTILL_SMOLLM2_GGUF=OUT.gguf cargo bench --bench local -- --engines llama-cpp

Each Q4_1 block is dequantized to f32 and quantized again with gguf-py's Q4_0 (ggml's reference
rounding), so the file is a speed fixture, not a better model: its greedy text may differ from
the Q4_1 file's. Needs `gguf` and `numpy` (in .peer-venv). Refuses to overwrite an existing file.
"""

import argparse
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import dequantize, quantize

SOURCE = GGMLQuantizationType.Q4_1
TARGET = GGMLQuantizationType.Q4_0


def copy_metadata(reader: GGUFReader, writer: GGUFWriter) -> None:
    """Every key-value field but the header's and the architecture (the writer adds those),
    with general.file_type set to the new type."""
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if field.name == "general.file_type":
            writer.add_file_type(LlamaFileType.MOSTLY_Q4_0)
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a GGUF file with Q4_1 tensors")
    p.add_argument("out", help="the file to write (must not exist)")
    args = p.parse_args()
    if os.path.exists(args.out):
        sys.exit(f"{args.out}: exists; choose another name")
    reader = GGUFReader(args.source)
    arch = reader.fields["general.architecture"].contents()
    tmp = f"{args.out}.tmp-{os.getpid()}"
    writer = GGUFWriter(tmp, arch=arch)
    copy_metadata(reader, writer)
    changed = 0
    for t in reader.tensors:
        if t.tensor_type == SOURCE:
            values = dequantize(t.data, SOURCE).astype(np.float32)
            writer.add_tensor(t.name, quantize(values, TARGET), raw_dtype=TARGET)
            changed += 1
        else:
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    if changed == 0:
        os.unlink(tmp) if os.path.exists(tmp) else None
        sys.exit(f"{args.source}: no {SOURCE.name} tensors to requantize")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, args.out)
    print(f"{args.out}: {changed} tensors {SOURCE.name} -> {TARGET.name}, {len(reader.tensors) - changed} as they were")
    return 0


if __name__ == "__main__":
    sys.exit(main())

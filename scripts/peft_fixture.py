#!/usr/bin/env python3
"""PEFT's side of the adapter compatibility test (run by developers, not by CI).

Loads the LoRA adapter that `instill train --lora` wrote (tests/fixtures/local/tiny-llama-lora,
made by the command below) onto the tiny Llama base with PEFT, and records the last-token logits
of the base fixture's prompts into the adapter directory's expected.json; the Rust test applies
the same adapter with instill's model and compares.

    instill train --model tests/fixtures/local/tiny-llama --data prompts/seeds/en.jsonl --lora \
        --max-steps 10 --lr 1e-2 --val-fraction 0 --max-len 128 --out tests/fixtures/local/tiny-llama-lora
    rm -r tests/fixtures/local/tiny-llama-lora/{checkpoint,loss.csv}
    .peer-venv/bin/pip install torch transformers peft
    .peer-venv/bin/python scripts/peft_fixture.py
"""

import json
import os

import torch
from peft import PeftModel
from transformers import LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "local")


def main():
    base = LlamaForCausalLM.from_pretrained(os.path.join(ROOT, "tiny-llama"), dtype=torch.float32)
    adapter = os.path.join(ROOT, "tiny-llama-lora")
    model = PeftModel.from_pretrained(base, adapter).eval()
    cases = json.load(open(os.path.join(ROOT, "tiny-llama", "expected.json")))["cases"]
    out = []
    for case in cases:
        with torch.no_grad():
            logits = model(torch.tensor([case["ids"]])).logits[0, -1].tolist()
        out.append({"ids": case["ids"], "logits": logits})
    with open(os.path.join(adapter, "expected.json"), "w") as f:
        json.dump({"cases": out}, f)


if __name__ == "__main__":
    main()

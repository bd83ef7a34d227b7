#!/usr/bin/env python3
"""trl's side of `cargo bench --bench train -- --dpo`: DPOTrainer with a fresh LoRA adapter (peft;
r 8, alpha 16, all seven projections; the reference is the base with the adapter off), sigmoid
loss, beta 0.1, on the same preference pairs (Alpaca's first records: the Alpaca prompt; chosen,
the record's output; rejected, the next record's output; EOS after each; max 128 tokens),
batch 4, one epoch in length order; tokens/s on the CPU, tokens counted as trl counts them (the
real tokens of both sides of every pair), as instill's bench does.

    .peer-venv/bin/pip install torch transformers peft trl gguf
    .peer-venv/bin/python scripts/bench_dpo_trl.py [--threads 2] [--pairs 40] [--tiny-pairs 200]
"""

import argparse
import json
import os
import tempfile
import time

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def pairs(tok, shared, n):
    """The pairs as text, in the order of their padded length (as instill buckets them)."""
    data = json.load(open(os.path.join(shared, "data", "alpaca_data.json")))[: n + 1]
    out = []
    for r, other in zip(data, data[1:]):
        i, x = r["instruction"], r["input"]
        prompt = (f"### Instruction:\n{i}\n\n### Response:\n" if not x
                  else f"### Instruction:\n{i}\n\n### Input:\n{x}\n\n### Response:\n")
        p = len(tok(prompt, add_special_tokens=False)["input_ids"])
        if p >= 128:
            continue
        longer = max(len(tok(o, add_special_tokens=False)["input_ids"]) + 1 for o in (r["output"], other["output"]))
        out.append((min(p + longer, 128), {"prompt": prompt, "chosen": r["output"], "rejected": other["output"]}))
    out.sort(key=lambda e: e[0])
    return [e[1] for e in out]


def run(name, model, tok, data, lr):
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    args = DPOConfig(output_dir=tempfile.mkdtemp(), beta=0.1, loss_type=["sigmoid"], learning_rate=lr,
                     per_device_train_batch_size=4, gradient_accumulation_steps=1, num_train_epochs=1,
                     max_length=128, max_grad_norm=1.0, warmup_steps=2, weight_decay=0.0,
                     train_sampling_strategy="sequential", logging_steps=1, save_strategy="no",
                     report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
                     bf16=False)  # f32, as instill's bench (trl turns bf16 autocast on by default)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(data),
                         processing_class=tok, peft_config=lora)
    t0 = time.perf_counter()
    trainer.train()
    dt = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = trainer._total_train_tokens
    print(f"{name:<26} {trainer.state.global_step:>3} steps  {tokens / dt:>8.1f} tokens/s  "
          f"loss {losses[0]:.3f} → {losses[-1]:.3f}  ({dt:.1f} s)", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pairs", type=int, default=40, help="SmolLM2's pairs (one epoch)")
    ap.add_argument("--tiny-pairs", type=int, default=200, help="the tiny model's pairs (one epoch)")
    ap.add_argument("--shared", default=os.environ.get("INSTILL_SHARED", os.path.join(ROOT, "..", "shared")))
    ap.add_argument("--gguf", default=os.environ.get("INSTILL_SMOLLM2_GGUF", os.path.expanduser(
        "~/.cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    import transformers, peft, trl  # noqa: E401
    print(f"PyTorch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
          f"trl {trl.__version__}, {args.threads} threads")
    d, f = os.path.split(args.gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    # transformers dequantizes the GGUF to plain f32 weights but still marks the model quantized,
    # which its Trainer refuses to train: it is not.
    model.hf_quantizer = None
    if not isinstance(getattr(type(model), "is_quantized", None), property):
        model.is_quantized = False
    run("smollm2-135m dpo lora", model, tok, pairs(tok, args.shared, args.pairs), 2e-4)
    tiny = os.path.join(ROOT, "tests", "fixtures", "local", "tiny-llama")
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    run("tiny dpo lora", model, tok, pairs(tok, args.shared, args.tiny_pairs), 1e-2)


if __name__ == "__main__":
    main()

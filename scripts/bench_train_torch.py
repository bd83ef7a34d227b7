#!/usr/bin/env python3
"""PyTorch + PEFT side of `cargo bench --bench train`: the same data (first 200 Alpaca records,
Alpaca prompt, max 128 tokens, batch 4, sorted by length), the same batches in the same order
(instill's seeded shuffle of the length buckets, seed 1, reproduced below), the same LoRA (r 8,
alpha 16, all seven projections), AdamW; tokens/s on the CPU.

    .peer-venv/bin/python scripts/bench_train_torch.py [--steps 10] [--threads 2] [--lora-dropout 0]
"""

import argparse
import json
import os
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def examples(tok, shared):
    data = json.load(open(os.path.join(shared, "data", "alpaca_data.json")))[:200]
    out = []
    for r in data:
        i, x, o = r["instruction"], r["input"], r["output"]
        prompt = (f"### Instruction:\n{i}\n\n### Response:\n" if not x
                  else f"### Instruction:\n{i}\n\n### Input:\n{x}\n\n### Response:\n")
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        resp = tok(o, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if not p or len(p) >= 128:
            continue
        ids = p + resp[: 128 - len(p)]
        out.append((ids, len(p)))
    return out


def batches(ex, size=4):
    """instill's length buckets (trainer/src/data.rs `buckets`): sorted by (length, index), cut
    into runs of `size`."""
    order = sorted(range(len(ex)), key=lambda i: (len(ex[i][0]), i))
    return [order[i:i + size] for i in range(0, len(order), size)]


M64 = (1 << 64) - 1


def splitmix_shuffle(items, seed):
    """instill's `SplitMix::shuffle` (core/src/rng.rs): Fisher-Yates on SplitMix64."""
    state = seed & M64
    for i in range(len(items) - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        j = z % (i + 1)
        items[i], items[j] = items[j], items[i]
    return items


def step_batch(bs, step, seed=1):
    """The batch instill's trainer (trainer/src/train.rs `fit`, `epoch_order`) takes at `step`:
    each epoch walks the buckets in an order shuffled with seed ^ epoch * 0x9E3779B9."""
    epoch, pos = divmod(step, len(bs))
    order = splitmix_shuffle(list(range(len(bs))), seed ^ ((epoch * 0x9E3779B9) & M64))
    return bs[order[pos]]


def run(name, model, ex, steps, lr):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    bs = batches(ex)
    tokens, t0 = 0, time.perf_counter()
    first = last = None
    for step in range(steps):
        members = step_batch(bs, step)
        t = max(len(ex[i][0]) for i in members)
        ids = torch.zeros((len(members), t), dtype=torch.long)
        labels = torch.full((len(members), t), -100, dtype=torch.long)
        for row, i in enumerate(members):
            seq, start = ex[i]
            ids[row, :len(seq)] = torch.tensor(seq)
            labels[row, start:len(seq)] = torch.tensor(seq[start:])
            tokens += len(seq)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        first = first if first is not None else loss.item()
        last = loss.item()
    dt = time.perf_counter() - t0
    print(f"{name:<26} {steps:>3} steps  {tokens / dt:>8.1f} tokens/s  loss {first:.3f} → {last:.3f}  ({dt:.1f} s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--shared", default=os.environ.get("INSTILL_SHARED", os.path.join(ROOT, "..", "shared")))
    ap.add_argument("--gguf", default=os.path.expanduser("~/.cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=args.lora_dropout, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    print(f"PyTorch {torch.__version__}, {args.threads} threads")
    d, f = os.path.split(args.gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    run("smollm2-135m lora", get_peft_model(model, lora), examples(tok, args.shared), args.steps, 2e-4)
    tiny = os.path.join(ROOT, "tests", "fixtures", "local", "tiny-llama")
    tok = AutoTokenizer.from_pretrained(tiny)
    ex = examples(tok, args.shared)
    run("tiny lora", get_peft_model(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32), lora), ex, args.steps * 5, 1e-2)
    run("tiny full", AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32), ex, args.steps * 5, 3e-3)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch (transformers) side of `cargo bench --bench local`: the same prompts, the same greedy
token counts, tokens/s on the CPU at batch 1 and 8.

SmolLM2 is loaded by transformers from the same GGUF file, dequantized to f32 (transformers
cannot run Q4_1 itself); the tiny Llama from the safetensors fixture.

    .peer-venv/bin/python scripts/bench_local_torch.py [--tokens 64] [--runs 3] [--threads 2]
"""

import argparse
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "Write a short poem about the sea.",
    "Give three tips for staying healthy.",
    "请用一句话解释什么是机器学习。",
    "List five animals that live in the ocean.",
    "Translate into French: the cat sleeps on the roof.",
    "写一首关于春天的诗。",
    "Summarise the plot of Hamlet in two sentences.",
    "What is the difference between a list and a tuple in Python?",
]

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def bench(name, model, tok, tokens, runs, batches):
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    for batch in batches:
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                         add_generation_prompt=True)
                 for p in (PROMPTS * 2)[:batch]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        rates = []
        for _ in range(runs):
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens,
                                     do_sample=False, pad_token_id=tok.pad_token_id)
            generated = (out.shape[1] - enc["input_ids"].shape[1]) * batch
            rates.append(generated / (time.perf_counter() - t))
        print(f"{name:<21} {batch:>5}   {statistics.median(rates):>10.1f}                 "
              + " ".join(f"{r:.1f}" for r in rates))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--gguf", default=os.path.expanduser(
        "~/.cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"PyTorch {torch.__version__}, {args.threads} threads")
    print(f"model                 batch   tokens/s (median of {args.runs})   runs")
    d, f = os.path.split(args.gguf)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    bench("smollm2-135m-f32", model, tok, args.tokens, args.runs, [1, 8])
    tiny = os.path.join(ROOT, "tests/fixtures/local/tiny-llama")
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny)
    bench("tiny-llama", model, tok, args.tokens, args.runs, [1, 8])


if __name__ == "__main__":
    main()

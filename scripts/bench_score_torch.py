#!/usr/bin/env python3
"""PyTorch (transformers) side of `cargo bench --bench score`: answer perplexity and IFD on the
same Alpaca records with SmolLM2-135M-Instruct (the Q4_1 GGUF, dequantized to f32 by
transformers), rendered with the model's chat template, cut to 1024 tokens and batched as
`instill score --metric` does: chunks of 64 records; each chunk's sequences (the answer after its
prompt, and for IFD also after the answer-alone context) sorted by length into right-padded
batches of at most 4096 tokens; one forward pass per batch, log-softmax, the answer tokens'
mean NLL per sequence. Tokens/s = answer tokens scored / time in the forward passes.

    .peer-venv/bin/python scripts/bench_score_torch.py [--records 64] [--runs 3] [--threads 2]
"""

import argparse
import json
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MAX_LEN, BATCH_TOKENS, CHUNK = 1024, 4096, 64


def render(tok, r, eos):
    """Prompt, answer-alone context and answer ids, as scripts/ifd_reference.py renders them."""
    user = r["instruction"] if not r["input"].strip() else r["instruction"] + "\n\n" + r["input"]
    m = [{"role": "user", "content": user}]
    with_gen = tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
    without = tok.apply_chat_template(m, tokenize=False, add_generation_prompt=False)
    enc = lambda text: tok.encode(text, add_special_tokens=False)
    prompt, marker = enc(with_gen), enc(with_gen[len(without):])
    answer = enc(r["output"]) + [eos]
    bos = tok.bos_token_id
    alone = ([bos] if bos is not None and prompt[:1] == [bos] and marker[:1] != [bos] else []) + marker
    n = min(len(answer), MAX_LEN - len(prompt))
    return prompt, alone, answer[:n]


def buckets(seqs):
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i][0]), i))
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(seqs[i][0]) > BATCH_TOKENS:
            out.append(cur)
            cur = []
        cur.append(i)
    return out + ([cur] if cur else [])


def losses(model, seqs):
    """Mean answer NLL of each (ids, answer_start) sequence."""
    out = [0.0] * len(seqs)
    for members in buckets(seqs):
        t = max(len(seqs[i][0]) for i in members)
        ids = torch.zeros((len(members), t), dtype=torch.long)
        mask = torch.zeros((len(members), t), dtype=torch.long)
        for row, i in enumerate(members):
            ids[row, :len(seqs[i][0])] = torch.tensor(seqs[i][0])
            mask[row, :len(seqs[i][0])] = 1
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1], -1)
        picked = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        for row, i in enumerate(members):
            ids_i, start = seqs[i]
            out[i] = -picked[row, start - 1:len(ids_i) - 1].mean().item()
    return out


def score(model, samples, ifd):
    tokens = 0
    for c in range(0, len(samples), CHUNK):
        seqs = []
        for prompt, alone, answer in samples[c:c + CHUNK]:
            tokens += len(answer)
            seqs.append((prompt + answer, len(prompt)))
            if ifd:
                seqs.append((alone + answer, len(alone)))
        losses(model, seqs)
    return tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--shared", default=os.environ.get("INSTILL_SHARED", "../shared"))
    ap.add_argument("--gguf", default=os.environ.get("INSTILL_SMOLLM2_GGUF", os.path.expanduser(
        "~/.cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.shared, "data", "alpaca_data.json"), encoding="utf-8") as f:
        records = json.load(f)[:args.records]
    d, f = os.path.split(args.gguf)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    samples = [render(tok, r, tok.eos_token_id) for r in records]
    print(f"PyTorch {torch.__version__}, {args.threads} threads, {len(samples)} Alpaca records, "
          f"SmolLM2-135M (f32), {args.runs} runs")
    print("metric   answer tokens   tokens/s (median)   runs")
    for metric in ["ppl", "ifd"]:
        rates = []
        for _ in range(args.runs):
            t = time.perf_counter()
            tokens = score(model, samples, metric == "ifd")
            rates.append(tokens / (time.perf_counter() - t))
        print(f"{metric:<8} {tokens:>13}   {statistics.median(rates):>17.1f}   "
              + " ".join(f"{r:.1f}" for r in rates))


if __name__ == "__main__":
    main()

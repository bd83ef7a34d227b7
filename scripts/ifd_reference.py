#!/usr/bin/env python3
"""Reference answer losses (perplexity, IFD) with transformers, for `instill score --metric`.

Run by developers, not by CI (CI has no torch). Writes tests/fixtures/local/ifd.json: a handful of
records (English and Chinese, one with an input, one with a system prompt and an earlier turn, one
whose answer is cut at max_len) and, for the tiny Llama fixture and for SmolLM2-135M-Instruct (the
Q4_1 GGUF, which transformers loads dequantized to f32), each record's token ids and losses:

- prompt: the chat template rendered for system, history and the user turn (instruction, then the
  input after a blank line), with the generation prompt; tokenized with no special tokens added;
- answer: the output's tokens, then EOS (instill trains on exactly these);
- alone: what the answer is scored after without its instruction, after Cherry_LLM's IFD code
  (which scores '### Response:' + output behind the tokenizer's BOS): BOS when the prompt opens
  with it and the marker does not, then the template's generation prompt (the rendering with
  add_generation_prompt less the one without);
- both sequences keep the first min(len(answer), max_len - len(prompt)) answer tokens;
- given / alone_loss: the mean NLL (nats) of those answer tokens after prompt / after alone, from
  one unpadded forward pass each; ppl = exp(given), ifd = given / alone_loss.

The Rust side checks that instill renders the same ids (src/render.rs) and computes the same
losses (tests/score_metric.rs), so the comparison tests the model and the loss, not tokenizing.

    python3 -m venv .peer-venv && .peer-venv/bin/pip install torch transformers gguf accelerate
    .peer-venv/bin/python scripts/ifd_reference.py [--gguf PATH]
"""

import argparse
import json
import math
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "local", "ifd.json")

LONG = ("The sea is calm in the morning. Gulls circle above the harbour and the boats go out one "
        "by one. By noon the wind rises, the waves grow, and the fishermen turn for home. ") * 3

RECORDS = [
    {"instruction": "Give three tips for staying healthy.", "input": "",
     "output": "1. Eat fruit and vegetables.\n2. Sleep eight hours.\n3. Walk every day.",
     "system": "", "history": []},
    {"instruction": "请用一句话解释什么是机器学习。", "input": "",
     "output": "机器学习是让计算机从数据中学习规律的方法。", "system": "", "history": []},
    {"instruction": "Translate the sentence into French.", "input": "The cat sleeps on the roof.",
     "output": "Le chat dort sur le toit.", "system": "", "history": []},
    {"instruction": "把下面的句子改写得更正式一些。", "input": "我们明天去公园玩吧。",
     "output": "我们明天一同前往公园游览。", "system": "", "history": []},
    {"instruction": "And times three?", "input": "", "output": "Twelve.",
     "system": "You are a concise assistant.", "history": [["What is two plus two?", "Four."]]},
    {"instruction": "Write a short poem about the sea.", "input": "", "output": LONG,
     "system": "", "history": []},
]

# Per model: a limit that cuts the long answer and no other.
MAX_LEN = {"tiny-llama": 160, "smollm2": 110}


def messages(r):
    user = r["instruction"] if not r["input"].strip() else r["instruction"] + "\n\n" + r["input"]
    out = [{"role": "system", "content": r["system"]}] if r["system"] else []
    for u, a in r["history"]:
        out += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return out + [{"role": "user", "content": user}]


def render(tok, r, eos):
    m = messages(r)
    with_gen = tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
    without = tok.apply_chat_template(m, tokenize=False, add_generation_prompt=False)
    assert with_gen.startswith(without), (with_gen, without)
    enc = lambda text: tok.encode(text, add_special_tokens=False)
    prompt, marker = enc(with_gen), enc(with_gen[len(without):])
    answer = enc(r["output"]) + [eos]
    bos = tok.bos_token_id
    alone = ([bos] if bos is not None and prompt[:1] == [bos] and marker[:1] != [bos] else []) + marker
    return prompt, alone, answer


def answer_nll(model, context, answer):
    ids = torch.tensor([context + answer])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(context)
    picked = [logp[p - 1, ids[0, p]].item() for p in range(start, start + len(answer))]
    return -sum(picked) / len(picked)


def score(name, model, tok, eos):
    max_len = MAX_LEN[name]
    samples = []
    for r in RECORDS:
        prompt, alone, answer = render(tok, r, eos)
        n = min(len(answer), max_len - len(prompt))
        assert n > 0, f"{name}: the prompt fills max_len {max_len}"
        given = answer_nll(model, prompt, answer[:n])
        alone_loss = answer_nll(model, alone, answer[:n])
        samples.append({"prompt": prompt, "alone": alone, "answer": answer, "tokens": n,
                        "truncated": n < len(answer), "given": given, "alone_loss": alone_loss,
                        "ppl": math.exp(given), "ifd": given / alone_loss})
        print(f"{name:<11} prompt {len(prompt):>3} alone {len(alone):>2} answer {len(answer):>3} "
              f"scored {n:>3}  given {given:.5f} alone {alone_loss:.5f} "
              f"ppl {math.exp(given):9.3f} ifd {given / alone_loss:.5f}")
    cut = [s["truncated"] for s in samples]
    assert cut == [False] * (len(RECORDS) - 1) + [True], f"{name}: truncated {cut}"
    return {"max_len": max_len, "samples": samples}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=os.path.expanduser(
        "~/.cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    torch.manual_seed(0)
    out = {"records": RECORDS, "models": {}}
    tiny = os.path.join(ROOT, "tests", "fixtures", "local", "tiny-llama")
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny)
    out["models"]["tiny-llama"] = score("tiny-llama", model, tok, tok.eos_token_id)
    d, f = os.path.split(args.gguf)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    out["models"]["smollm2"] = score("smollm2", model, tok, tok.eos_token_id)
    with open(OUT, "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    print("wrote", os.path.relpath(OUT, ROOT))


if __name__ == "__main__":
    main()

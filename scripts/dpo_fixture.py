#!/usr/bin/env python3
"""trl's side of the DPO check (run by developers, not by CI).

Puts the tiny Llama base (tests/fixtures/local/tiny-llama) under trl's DPOTrainer with a LoRA
adapter whose weights are the tiny-llama-lora fixture's (B non-zero, so the policy differs from
the reference), and lets trl's own code compute, for a few preference pairs of token ids: each
pair's policy and reference sequence log-probabilities (the reference is the base with the
adapter switched off, as trl does for a fresh PEFT adapter) and the loss of all the pairs in one
batch, for the sigmoid and ipo losses at beta 0.1. Writes them to
tests/fixtures/local/dpo/expected.json; trainer/tests/dpo.rs computes the same with instill.

Everything goes through trl: DataCollatorForPreference pads the pairs (chosen rows, then
rejected rows, completion mask), DPOTrainer._compute_loss gathers the log-probabilities and
computes the loss and the metrics it logs, compute_ref_log_probs the reference's; all in f32
(trl's DPOConfig turns bf16 autocast on by default: turned off). A pair's
policy log-probabilities are read from the metrics (logps/chosen, logps/rejected) of a batch of
that pair alone.

Versions used: torch 2.15.0, transformers 5.24.0, peft 0.21.2, trl 1.16.0 (Python 3.11).

    .peer-venv/bin/pip install torch transformers peft trl
    .peer-venv/bin/python scripts/dpo_fixture.py
"""

import json
import os
import tempfile

import torch
from datasets import Dataset
from peft import LoraConfig, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaForCausalLM
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "local")
BETA = 0.1

# Prompt, chosen and rejected token ids (vocabulary 400, EOS 2): different lengths, so the
# batch is padded, and a chosen side shorter than its rejected one.
PAIRS = [
    {"prompt_ids": [1, 17, 99, 230, 4], "chosen_ids": [20, 57, 94, 2], "rejected_ids": [31, 8, 2]},
    {"prompt_ids": [1, 5, 6, 7, 8, 9, 10, 11], "chosen_ids": [40, 41, 2], "rejected_ids": [300, 301, 302, 303, 2]},
    {"prompt_ids": [1, 250], "chosen_ids": [12, 13, 14, 15, 16, 17, 2], "rejected_ids": [12, 13, 14, 2]},
    {"prompt_ids": [1, 77, 78, 79], "chosen_ids": [2], "rejected_ids": [399, 2]},
]


def trainer_for(loss_type):
    base = LlamaForCausalLM.from_pretrained(os.path.join(ROOT, "tiny-llama"), dtype=torch.float32)
    adapter = os.path.join(ROOT, "tiny-llama-lora")
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    lora = LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
                      target_modules=cfg["target_modules"], task_type="CAUSAL_LM")
    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "tiny-llama"))
    text = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    args = DPOConfig(output_dir=tempfile.mkdtemp(), beta=BETA, loss_type=[loss_type], report_to=[],
                     use_cpu=True, per_device_train_batch_size=len(PAIRS),
                     bf16=False)  # trl defaults to bf16 autocast; instill's reference is f32
    trainer = DPOTrainer(model=base, args=args, train_dataset=text, processing_class=tok, peft_config=lora)
    # The fixture's adapter into the fresh one (the reference stays the base: adapters off).
    state = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    result = set_peft_model_state_dict(trainer.model, state)
    assert not [k for k in result.unexpected_keys if "lora" in k], result.unexpected_keys
    trainer.model.eval()
    return trainer


def compute(trainer, pairs):
    """trl's loss of `pairs` as one batch, and the metrics it logged for it."""
    batch = DataCollatorForPreference(pad_token_id=0)(pairs)
    trainer._metrics["eval"].clear()
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, batch, return_outputs=False)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return loss.item(), metrics


def main():
    out = {"beta": BETA, "pairs": PAIRS, "losses": {}}
    for loss_type in ["sigmoid", "ipo"]:
        trainer = trainer_for(loss_type)
        loss, metrics = compute(trainer, PAIRS)
        out["losses"][loss_type] = {
            "loss": loss,
            "reward_margin": metrics["rewards/margins"],
            "reward_accuracy": metrics["rewards/accuracies"],
            "logps_chosen": metrics["logps/chosen"],
            "logps_rejected": metrics["logps/rejected"],
        }
        if loss_type == "sigmoid":
            batch = DataCollatorForPreference(pad_token_id=0)(PAIRS)
            ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
            logps = []
            for i, pair in enumerate(PAIRS):
                _, m = compute(trainer, [pair])
                logps.append({
                    "policy_chosen": m["logps/chosen"],
                    "policy_rejected": m["logps/rejected"],
                    "reference_chosen": ref_chosen[i].item(),
                    "reference_rejected": ref_rejected[i].item(),
                })
            out["logps"] = logps
    os.makedirs(os.path.join(ROOT, "dpo"), exist_ok=True)
    with open(os.path.join(ROOT, "dpo", "expected.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()

"""llama.cpp through llama-cpp-python, the peer of `cargo bench --bench local` (which runs this
script itself when .peer-venv/bin/python exists): greedy generation of --tokens new tokens from
the same prompt token ids (EOS ignored: `Llama.generate` does not stop at it), prefill included,
on --threads threads, batch 1. Prints one JSON line: the rates of each run and their median.

    .peer-venv/bin/python scripts/bench_local_llamacpp.py --model SmolLM2-135M-Instruct.Q4_1.gguf \
        --prompt-ids '[1, 2, 3]' [--tokens 128] [--runs 3] [--threads 2]
"""

import argparse
import json
import statistics
import time

import llama_cpp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", required=True, help="JSON list of token ids")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    prompt = json.loads(args.prompt_ids)
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=4096,
        n_batch=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    rates = []
    for _ in range(args.runs):
        # Forget the previous run: no prefix of the prompt is reused from the KV cache.
        llm.reset()
        started = time.perf_counter()
        n = 0
        for _token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            n += 1
            if n >= args.tokens:
                break
        rates.append(n / (time.perf_counter() - started))
    print(
        json.dumps(
            {
                "version": llama_cpp.__version__,
                "threads": args.threads,
                "rates": rates,
                "median": statistics.median(rates),
            }
        )
    )


if __name__ == "__main__":
    main()

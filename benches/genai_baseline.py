#!/usr/bin/env python3
"""onnxruntime-genai baseline: TTFT and steady-state decode speed on one model folder.

    .venv/genai/bin/python benches/genai_baseline.py --model .bench/bench-250m-genai \
        --prompt-tokens 512 --decode-tokens 128 --runs 3

Prompt construction (deterministic, reproducible from Rust with the `tokenizers` crate):
  1. load <model>/tokenizer.json and encode SENTENCE (below) with add_special_tokens=False
     -> `s` (a list of ids);
  2. prompt = [bos_token_id] + (s repeated as often as needed)[: prompt_tokens - 1]
     where bos_token_id = genai_config.json model.bos_token_id (0 for the edge-tiny tokenizer);
     so the prompt is exactly `prompt_tokens` ids long and starts with BOS.
  The ids are fed directly (no chat template, no re-tokenization).

Measurement, per run (one untimed warm-up run first, same prompt):
  - fresh og.Generator with do_sample=False, max_length = prompt + decode tokens and
    min_length = the same, so EOS can never end the run early (random weights emit anything);
  - TTFT = wall time of append_tokens(prompt) (the prefill) + the first generate_next_token();
  - decode = the remaining (decode_tokens - 1) generate_next_token() calls;
    decode_tok_s = (decode_tokens - 1) / their wall time.
  Reported figures are the medians over --runs. Model load time is excluded.
  intra_op_num_threads defaults to os.cpu_count() (set through og.Config.overlay); give the
  Rust engine the same thread count when comparing.
The last line printed is JSON:
  {"engine":"onnxruntime-genai","ttft_s":...,"decode_tok_s":...,...}
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

SENTENCE = ("The machine on line 3 was checked by the technician on Monday, "
            "and the weather in Berlin is sunny today.")


def build_prompt(model_dir: Path, n: int) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    s = tok.encode(SENTENCE, add_special_tokens=False).ids
    bos = json.loads((model_dir / "genai_config.json").read_text())["model"]["bos_token_id"]
    body = (s * (n // len(s) + 1))[: n - 1]
    return [bos] + body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="intra-op threads (default: os.cpu_count(); 0 = onnxruntime's own default, "
                         "which on this 2-vCPU VM is ONE thread: ~45 tok/s instead of ~79)")
    a = ap.parse_args()

    import numpy as np
    import onnxruntime_genai as og

    model_dir = Path(a.model)
    cfg = og.Config(str(model_dir))
    if a.threads:
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": a.threads}}}}))
    t = time.perf_counter()
    model = og.Model(cfg)
    load_s = time.perf_counter() - t
    prompt = build_prompt(model_dir, a.prompt_tokens)
    total = a.prompt_tokens + a.decode_tokens
    print(f"model {model_dir} loaded in {load_s:.2f}s; onnxruntime-genai {og.__version__}; "
          f"prompt {len(prompt)} tokens (first ids {prompt[:8]}), decode {a.decode_tokens}; "
          f"threads {a.threads or 'default'}; cpus {os.cpu_count()}")

    def one_run() -> tuple[float, float, list[int]]:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=total, min_length=total, batch_size=1)
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(np.array([prompt], dtype=np.int32))
        gen.generate_next_token()
        t1 = time.perf_counter()
        out = [int(gen.get_next_tokens()[0])]
        for _ in range(a.decode_tokens - 1):
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        t2 = time.perf_counter()
        return t1 - t0, (a.decode_tokens - 1) / (t2 - t1), out

    one_run()  # warm-up
    ttfts, rates = [], []
    for i in range(a.runs):
        ttft, rate, out = one_run()
        ttfts.append(ttft)
        rates.append(rate)
        print(f"run {i + 1}: TTFT {ttft * 1000:.1f} ms, decode {rate:.1f} tok/s "
              f"({len(out)} tokens, first {out[:4]})")
    res = {
        "engine": "onnxruntime-genai",
        "version": og.__version__,
        "model": str(model_dir),
        "prompt_tokens": a.prompt_tokens,
        "decode_tokens": a.decode_tokens,
        "runs": a.runs,
        "threads": a.threads or None,
        "ttft_s": round(statistics.median(ttfts), 4),
        "decode_tok_s": round(statistics.median(rates), 2),
        "ttft_s_all": [round(x, 4) for x in ttfts],
        "decode_tok_s_all": [round(x, 2) for x in rates],
    }
    print(f"median: TTFT {res['ttft_s'] * 1000:.1f} ms, decode {res['decode_tok_s']:.1f} tok/s")
    print(json.dumps(res))


if __name__ == "__main__":
    main()

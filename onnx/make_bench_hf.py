#!/usr/bin/env python3
"""Write a RANDOM-weight ~246M-parameter Llama HF folder for benchmarking (not a useful model).

    python onnx/make_bench_hf.py --tokenizer-from onnx/models/edge-tiny-genai --out .bench/build/hf-bench-250m

Shape matches the model measured in shared ORT.md: hidden 1024, 16 layers, 16 heads / 4 KV heads
(head_dim 64), intermediate 2816, vocab 32000 -> 246.0 M parameters (65.5 M of them in the
untied embedding + lm_head).

Tokenizer: the tiny model's byte-level BPE (4096 ids) extended with 27904 plain added tokens
"<extra_4096>" ... "<extra_31999>" so that every id the random model can emit decodes.
Only the tokenizer is taken from the tiny model; its weights are not needed.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

SEED = 4321


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-from", default="onnx/models/edge-tiny-genai")
    ap.add_argument("--out", default=".bench/build/hf-bench-250m")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--max-pos", type=int, default=2048)
    a = ap.parse_args()

    import torch
    from tokenizers import AddedToken, Tokenizer
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    src, out = Path(a.tokenizer_from), Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    base = tok.get_vocab_size(with_added_tokens=True)
    if a.vocab > base:
        tok.add_tokens([AddedToken(f"<extra_{i}>", special=False, normalized=False)
                        for i in range(base, a.vocab)])
    assert tok.get_vocab_size(with_added_tokens=True) == a.vocab, tok.get_vocab_size()
    tok.save(str(out / "tokenizer.json"))
    tc = json.loads((src / "tokenizer_config.json").read_text())
    tc.pop("added_tokens_decoder", None)  # rebuilt by transformers from tokenizer.json
    tc["model_max_length"] = a.max_pos
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")

    ids = {t: tok.token_to_id(t) for t in ("<s>", "</s>", "<pad>", "<|end|>")}
    cfg = LlamaConfig(
        vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
        head_dim=a.hidden // a.heads, max_position_embeddings=a.max_pos, rope_theta=10000.0,
        rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
        bos_token_id=ids["<s>"], eos_token_id=[ids["<|end|>"], ids["</s>"]], pad_token_id=ids["<pad>"],
        initializer_range=0.02, torch_dtype="float32",
    )
    model = LlamaForCausalLM(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    print(f"random Llama: {n / 1e6:.1f} M parameters")
    model.generation_config = GenerationConfig(bos_token_id=ids["<s>"], eos_token_id=cfg.eos_token_id,
                                               pad_token_id=ids["<pad>"], do_sample=False)
    model.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

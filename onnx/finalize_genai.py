#!/usr/bin/env python3
"""Turn an onnxruntime-genai builder output folder into the committed layout.

    python onnx/finalize_genai.py --build .venv/build/genai-out --hf .venv/build/hf-tiny \
        --out onnx/models/edge-tiny-genai

Keeps model.onnx (+ model.onnx.data), genai_config.json, tokenizer.json, tokenizer_config.json.
The tokenizer files are copied from the HF folder (the builder re-saves them through
transformers 5, which drops the inline chat_template and renames classes); genai_config's
eos/bos/pad ids and context_length are checked against config.json / generation_config.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--hf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-tokenizer-check", action="store_true")
    a = ap.parse_args()
    build, hf, out = Path(a.build), Path(a.hf), Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    cfg = json.loads((hf / "config.json").read_text())
    gen = json.loads((hf / "generation_config.json").read_text()) if (hf / "generation_config.json").exists() else {}
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    gc = json.loads((build / "genai_config.json").read_text())
    m = gc["model"]
    m["eos_token_id"] = eos
    m["bos_token_id"] = cfg["bos_token_id"]
    m["pad_token_id"] = cfg["pad_token_id"]
    m["context_length"] = cfg["max_position_embeddings"]
    gc["search"]["max_length"] = cfg["max_position_embeddings"]
    assert gc["search"]["past_present_share_buffer"] is True
    assert m["vocab_size"] == cfg["vocab_size"]
    (out / "genai_config.json").write_text(json.dumps(gc, indent=4) + "\n")

    for name in ("model.onnx", "model.onnx.data"):
        if (build / name).exists():
            shutil.copy2(build / name, out / name)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(hf / name, out / name)
    for p in sorted(out.iterdir()):
        print(f"{p.stat().st_size:>10d}  {p}")

    if not a.no_tokenizer_check:
        # onnxruntime-genai's own tokenizer must load the folder and agree with HF ids
        import onnxruntime_genai as og
        from transformers import AutoTokenizer

        model = og.Model(str(out))
        t = og.Tokenizer(model)
        hf_tok = AutoTokenizer.from_pretrained(out)
        for s in ["The machine on line 3", "Zürich café €12 工場 🔧", "<|user|>\nHello!<|end|>\n"]:
            a_ids = list(t.encode(s))
            b_ids = hf_tok.encode(s, add_special_tokens=True)
            print(f"og.Tokenizer {a_ids} / transformers {b_ids} / decode {t.decode(a_ids)!r}")


if __name__ == "__main__":
    main()

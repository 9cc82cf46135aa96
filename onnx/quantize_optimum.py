#!/usr/bin/env python3
"""INT8-quantize an Optimum text-generation-with-past export and assemble the final folder.

    python onnx/quantize_optimum.py --export .venv/build/optimum-fp32 --hf .venv/build/hf-tiny \
        --out onnx/models/edge-tiny-optimum

The final folder holds only: model.onnx (dynamic int8: MatMulInteger + DynamicQuantizeLinear,
single file, no external data), config.json, generation_config.json, tokenizer.json,
tokenizer_config.json, special_tokens_map.json.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

KEEP_FROM_HF = ["config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True)
    ap.add_argument("--hf", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    exp, hf, out = Path(a.export), Path(a.hf), Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    src = exp / "model.onnx"
    tmp = exp / "model.int8.onnx"
    quantize_dynamic(
        model_input=str(src),
        model_output=str(tmp),
        weight_type=QuantType.QInt8,
        per_channel=False,
        reduce_range=False,
        use_external_data_format=False,
    )
    m = onnx.load(str(tmp))
    onnx.save_model(m, str(out / "model.onnx"), save_as_external_data=False)
    onnx.checker.check_model(str(out / "model.onnx"))
    # configs + tokenizer: take them from the HF folder (carries our chat_template);
    # config.json from the export (Optimum may add fields) if present.
    for name in KEEP_FROM_HF:
        s = hf / name
        if s.exists():
            shutil.copy2(s, out / name)
    for p in sorted(out.iterdir()):
        print(f"{p.stat().st_size:>10d}  {p}")


if __name__ == "__main__":
    main()

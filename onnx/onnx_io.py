#!/usr/bin/env python3
"""Print (and optionally dump as JSON / markdown) an ONNX model's inputs, outputs and op counts.

    python onnx/onnx_io.py onnx/models/edge-tiny-optimum/model.onnx [--json out.json]
"""
from __future__ import annotations

import argparse
import collections
import json

import onnx


def dim_str(d) -> str:
    if d.HasField("dim_value"):
        return str(d.dim_value)
    return d.dim_param or "?"


def describe(path: str) -> dict:
    m = onnx.load(path, load_external_data=False)
    ty = {1: "float32", 7: "int64", 6: "int32", 10: "float16", 16: "bfloat16", 3: "int8", 2: "uint8"}

    def vi(v):
        t = v.type.tensor_type
        return {"name": v.name, "dtype": ty.get(t.elem_type, str(t.elem_type)),
                "shape": [dim_str(d) for d in t.shape.dim]}

    ops = collections.Counter(n.op_type for n in m.graph.node)
    return {
        "inputs": [vi(v) for v in m.graph.input],
        "outputs": [vi(v) for v in m.graph.output],
        "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--json")
    a = ap.parse_args()
    d = describe(a.model)
    print(f"== {a.model}")
    for k in ("inputs", "outputs"):
        print(f"{k}:")
        for v in d[k]:
            print(f"  {v['name']:32s} {v['dtype']:8s} [{', '.join(v['shape'])}]")
    print("opset:", d["opset"])
    print("ops:", d["ops"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(d, f, indent=1)


if __name__ == "__main__":
    main()

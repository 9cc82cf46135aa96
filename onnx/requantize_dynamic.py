#!/usr/bin/env python3
"""Rewrites an onnxruntime-genai CPU int8 model (MatMulNBits, 8 bits, block-wise scales) into
dynamic int8 quantization on ONNX Runtime's integer GEMM: int8 weights with one float scale per
output column, activations quantized to 8 bits at run time. Everything else (GroupQueryAttention,
norms, inputs and outputs, genai_config.json) is unchanged, so the result is still an
onnxruntime-genai model folder that both engines can run.

Why: on CPUs with AMX or AVX512-VNNI, ONNX Runtime's QGemm kernels (MatMulInteger,
DynamicQuantizeMatMul) are several times faster than MatMulNBits when more than one row is
multiplied (prefill, batched decode); one row (single-stream decode) costs about the same.

Activations (--activations):
  per-row (default): each row gets its own scale (Abs, ReduceMax, Div, Round, then uint8 with
      offset 128 into MatMulInteger, and the scales applied to the exact int32 product). A row's
      result never depends on the other rows, so a sequence decodes the same tokens alone or in a
      batch, and a prompt the same whether its prefix came from the cache or not.
  per-tensor: com.microsoft DynamicQuantizeMatMul, what `quantize_dynamic` produces: one scale
      for the whole input, so one sequence's outlier activations coarsen its batch neighbours'
      precision. Slightly faster; the gateway's batching guarantee does not hold for it.

    python onnx/requantize_dynamic.py --src DIR --out DIR [--activations per-row|per-tensor]

Weights are dequantized exactly ((q - zero_point) * block scale) and requantized symmetrically
per column (scale = max |w| / 127), so each weight moves by at most half a column step.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def dequantize(q: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, k: int, n: int,
               block: int) -> np.ndarray:
    """MatMulNBits 8-bit weight [N, blocks, block] -> float [K, N]."""
    blocks = q.shape[1]
    q = q.reshape(n, blocks, block).astype(np.float32)
    s = scales.reshape(n, blocks, 1).astype(np.float32)
    zp = (np.full((n, blocks, 1), 128.0, np.float32) if zero_points is None
          else zero_points.reshape(n, blocks, 1).astype(np.float32))
    w = ((q - zp) * s).reshape(n, blocks * block)[:, :k]
    return np.ascontiguousarray(w.T)


C_AXIS, C_TINY, C_127, C_128F, C_128U = ("rq_axis_last", "rq_tiny", "rq_127", "rq_128f", "rq_128u")


def per_row_matmul(name: str, a_in: str, w: str, w_scale: str, bias: str, out: str) -> list:
    """Y = A @ W with A quantized to uint8 per row (symmetric: scale = max |row| / 127, stored
    with offset 128): every row gets its own scale, so a row's result never depends on the other
    rows of the batch, and the integer product (exact int32) runs on the QGemm u8s8 kernels."""
    p = name + "/"
    mk = helper.make_node
    nodes = [
        mk("Abs", [a_in], [p + "abs"], name=p + "Abs"),
        mk("ReduceMax", [p + "abs", C_AXIS], [p + "max"], name=p + "ReduceMax", keepdims=1),
        mk("Max", [p + "max", C_TINY], [p + "max_nz"], name=p + "Max"),
        mk("Div", [p + "max_nz", C_127], [p + "a_scale"], name=p + "Scale"),
        mk("Div", [a_in, p + "a_scale"], [p + "scaled"], name=p + "Div"),
        mk("Round", [p + "scaled"], [p + "rounded"], name=p + "Round"),
        mk("Add", [p + "rounded", C_128F], [p + "shifted"], name=p + "Shift"),
        mk("Cast", [p + "shifted"], [p + "a_q"], name=p + "CastU8", to=onnx.TensorProto.UINT8),
        mk("MatMulInteger", [p + "a_q", w, C_128U], [p + "acc"], name=p + "MatMulInteger"),
        mk("Cast", [p + "acc"], [p + "acc_f"], name=p + "CastF", to=onnx.TensorProto.FLOAT),
        mk("Mul", [p + "acc_f", p + "a_scale"], [p + "row_scaled"], name=p + "MulRow"),
    ]
    if bias:
        nodes += [mk("Mul", [p + "row_scaled", w_scale], [p + "col_scaled"], name=p + "MulCol"),
                  mk("Add", [p + "col_scaled", bias], [out], name=p + "Bias")]
    else:
        nodes.append(mk("Mul", [p + "row_scaled", w_scale], [out], name=p + "MulCol"))
    return nodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--activations", choices=["per-row", "per-tensor"], default="per-row",
                    help="per-row (default): each row quantized alone, batch-invariant results; "
                         "per-tensor: com.microsoft DynamicQuantizeMatMul, one scale for the whole "
                         "input, so a row's result depends on the rows batched with it")
    a = ap.parse_args()

    model = onnx.load(str(a.src / "model.onnx"), load_external_data=True)
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1

    new_nodes, drop, add = [], set(), []
    converted = 0
    need_constants = False
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or node.domain != "com.microsoft":
            new_nodes.append(node)
            continue
        bits, k, n, block = attr(node, "bits"), attr(node, "K"), attr(node, "N"), attr(node, "block_size")
        if bits != 8:
            raise SystemExit(f"{node.name}: only 8-bit MatMulNBits can be rewritten (found {bits})")
        ins = list(node.input) + [""] * 6
        a_in, b_name, s_name, zp_name, g_idx, bias = ins[:6]
        if g_idx:
            raise SystemExit(f"{node.name}: g_idx is not supported")
        zp = numpy_helper.to_array(inits[zp_name]) if zp_name else None
        if zp is not None and zp.dtype != np.uint8:
            raise SystemExit(f"{node.name}: zero points of type {zp.dtype} are not supported")
        w = dequantize(numpy_helper.to_array(inits[b_name]), numpy_helper.to_array(inits[s_name]),
                       zp, k, n, block)
        col = np.abs(w).max(axis=0) / 127.0
        col[col == 0] = 1.0
        wq = np.clip(np.rint(w / col), -127, 127).astype(np.int8)
        base = b_name.removesuffix("_Q8")
        add += [numpy_helper.from_array(wq, base + "_DQ8"),
                numpy_helper.from_array(col.astype(np.float32), base + "_DQ8_scale")]
        name = node.name.removesuffix("_Q8") + "_DQ8"
        if a.activations == "per-tensor":
            inputs = [a_in, base + "_DQ8", base + "_DQ8_scale", "", bias] if bias else \
                     [a_in, base + "_DQ8", base + "_DQ8_scale"]
            new_nodes.append(helper.make_node("DynamicQuantizeMatMul", inputs, list(node.output),
                                              name=name, domain="com.microsoft"))
        else:
            new_nodes += per_row_matmul(name, a_in, base + "_DQ8", base + "_DQ8_scale", bias,
                                        node.output[0])
            need_constants = True
        for name in (b_name, s_name, zp_name):
            if name:
                consumers[name] -= 1
                if consumers[name] == 0:
                    drop.add(name)
        converted += 1

    if need_constants:
        add += [numpy_helper.from_array(np.array([-1], np.int64), C_AXIS),
                numpy_helper.from_array(np.array(1e-30, np.float32), C_TINY),
                numpy_helper.from_array(np.array(127.0, np.float32), C_127),
                numpy_helper.from_array(np.array(128.0, np.float32), C_128F),
                numpy_helper.from_array(np.array(128, np.uint8), C_128U)]
        if not any(o.domain in ("", "ai.onnx") and o.version >= 18 for o in model.opset_import):
            raise SystemExit("per-row activations need opset 18 or later (ReduceMax with axes input)")
    kept = [i for i in model.graph.initializer if i.name not in drop]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + add)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)

    a.out.mkdir(parents=True, exist_ok=True)
    for f in a.src.iterdir():
        if f.name not in ("model.onnx", "model.onnx.data"):
            shutil.copy2(f, a.out / f.name)
    target = a.out / "model.onnx"
    data = a.out / "model.onnx.data"
    if data.exists():
        data.unlink()
    onnx.save(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=1024)
    form = "DynamicQuantizeMatMul" if a.activations == "per-tensor" else "per-row int8 MatMulInteger"
    print(f"rewrote {converted} MatMulNBits nodes as {form}: {target}")


if __name__ == "__main__":
    main()

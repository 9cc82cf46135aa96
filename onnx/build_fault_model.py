"""Builds tests/fixtures/edge-tiny-genai-faulty.onnx: the graph of the committed tiny genai model
(onnx/models/edge-tiny-genai) with a guard that
makes ONNX Runtime fail the run (a Gather index out of bounds) for some inputs, so tests can
prove that a failing run affects only the request that caused it. Same weights, same outputs
for every other input (the guard adds an exact 0.0 to the logits).

A run fails when
  - any input id equals POISON_TOKEN (3, `<pad>`: the tokenizer never emits it for text, so
    only a token-id prompt can carry it; it fails the prefill), or
  - the attention mask of any row sums to POISON_LENGTH (a decode step at that position: the
    way to fail a *batched* decode step that several sequences share).

The file holds the graph only; its weights stay external ("model.onnx.data"), so tests lay out
the package in a temporary directory: the source package's files, with this file as
model.onnx. (ONNX Runtime refuses external data reached through a symlink out of the model
directory, and a second copy of the weights in the repository would be 8.5 MB.)

Run: bash onnx/build_fault_model.sh   (creates .venv/faults with pinned onnx + numpy)
"""

import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

POISON_TOKEN = 3
POISON_LENGTH = 200

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "onnx", "models", "edge-tiny-genai")
DST = os.path.join(ROOT, "tests", "fixtures", "edge-tiny-genai-faulty.onnx")


def main() -> int:
    model = onnx.load(os.path.join(SRC, "model.onnx"), load_external_data=False)
    graph = model.graph
    producers = [n for n in graph.node if "logits" in n.output]
    if len(producers) != 1:
        sys.exit("expected one node producing 'logits'")
    producer = producers[0]
    producer.output[list(producer.output).index("logits")] = "fault_logits_raw"

    def const(name, value, dtype):
        graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))

    const("fault_poison_token", POISON_TOKEN, np.int64)
    const("fault_poison_length", POISON_LENGTH, np.int64)
    const("fault_axis1", [1], np.int64)
    const("fault_out_of_range", [1000], np.int64)
    const("fault_table", [0.0], np.float32)
    nodes = [
        # any(input_ids == POISON_TOKEN) as 0/1
        helper.make_node("Equal", ["input_ids", "fault_poison_token"], ["fault_id_eq"]),
        helper.make_node("Cast", ["fault_id_eq"], ["fault_id_eq_i"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["fault_id_eq_i"], ["fault_id_hit"], keepdims=0),
        # any(sum(attention_mask[row]) == POISON_LENGTH) as 0/1
        helper.make_node("ReduceSum", ["attention_mask", "fault_axis1"], ["fault_row_len"], keepdims=0),
        helper.make_node("Equal", ["fault_row_len", "fault_poison_length"], ["fault_len_eq"]),
        helper.make_node("Cast", ["fault_len_eq"], ["fault_len_eq_i"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["fault_len_eq_i"], ["fault_len_hit"], keepdims=0),
        helper.make_node("Max", ["fault_id_hit", "fault_len_hit"], ["fault_hit"]),
        # index 0 (fine) or 1000 (out of bounds for a 1-element table: ORT fails the run)
        helper.make_node("Mul", ["fault_hit", "fault_out_of_range"], ["fault_index"]),
        helper.make_node("Gather", ["fault_table", "fault_index"], ["fault_zero"], axis=0),
        helper.make_node("Add", ["fault_logits_raw", "fault_zero"], ["logits"]),
    ]
    graph.node.extend(nodes)
    # (onnx.checker would look for the external data beside the working directory; ORT
    # loading the package in tests/faults.rs is the check.)
    onnx.save(model, DST)
    print(f"wrote {DST} (poison token {POISON_TOKEN}, poison length {POISON_LENGTH})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Produce tests/fixtures/reference_greedy.json (greedy reference outputs of both tiny models).

Two stages, because the two layouts need different venvs:

  1. optimum venv (transformers 4.57, onnxruntime 1.31.1, optimum-onnx):
       python onnx/reference.py optimum --models onnx/models --hf .venv/build/hf-tiny \
           --stage .venv/build/reference_stage1.json
     - input_ids: text = tokenizer.encode(prompt, add_special_tokens=True) (BOS prepended);
                  chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                         tokenize=True) (the template emits BOS itself; no second BOS).
     - edge-tiny-optimum outputs: plain onnxruntime loop (prefill whole prompt, then one token
       per step; present.N.* fed back as past_key_values.N.*; attention_mask all ones;
       position_ids = arange; argmax over the last logits row, first index on ties),
       cross-checked with optimum's ORTModelForCausalLM.generate(do_sample=False).
     - also fp32 transformers greedy (HF folder) for comparison.
  2. genai venv (onnxruntime-genai 0.18):
       python onnx/reference.py genai --models onnx/models --stage .venv/build/reference_stage1.json \
           --out tests/fixtures/reference_greedy.json
     - edge-tiny-genai outputs with og.Generator (do_sample=False), same input_ids.
  3. (separately, genai venv) float16 model:
       python onnx/reference.py genai-fp16 --model onnx/models/edge-tiny-genai-fp16 \
           --cases tests/fixtures/reference_greedy.json --out tests/fixtures/reference_greedy_fp16.json
     - the edge-tiny-genai cases (same input_ids) on the float16 package, with og.Generator
       (CPU provider) and cross-checked with a plain onnxruntime loop (float16 KV concatenated
       step by step, no shared buffer); both must agree. Also reports agreement with the int8
       model's ids.

Every case carries its own "max_new_tokens" (24 = the top-level default, except one text
case with 8 so that finish_reason "length" is covered).
"min_top2_logit_gap" is the smallest (top-1 minus top-2) logit difference over the generated
steps: a case with a tiny gap (< ~0.05) can legitimately flip under a different thread count
or kernel; tests may compare such cases loosely.
Note: quantize_dynamic's DynamicQuantizeLinear picks ONE activation scale per tensor, i.e.
over all positions of the call, so the optimum int8 logits depend on how the prompt is fed;
the fixture uses "whole prompt in one call, then one token per call".
output_ids exclude the prompt and the stop token; finish_reason is "stop" when an eos id
(generation_config eos_token_id: <|end|> and </s>) was generated, else "length".
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

MAX_NEW = 24

# (prompt, max_new_tokens): the tiny model ends almost every sentence with </s> well before
# 24 tokens, so the last case uses a smaller per-case budget to exercise finish_reason "length".
TEXT_PROMPTS = [
    ("The machine on line 3", MAX_NEW),
    ("The branch office in Zürich opens", MAX_NEW),
    ("Maintenance report: the boiler on line 2", MAX_NEW),
    ("Chloé works at the café next to the", MAX_NEW),
    ("Temperature 21 °C ☀️ €5. The machine on line 3", MAX_NEW),
    ("The branch office in Málaga", 6),
]
CHATS = [
    [{"role": "system", "content": "You are a helpful maintenance assistant for the plant."},
     {"role": "user", "content": "What is the status of the press on line 4?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is the weather in Málaga?"}],
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You answer questions about the branch office."},
     {"role": "user", "content": "Where is the warehouse?"},
     {"role": "assistant", "content": "The warehouse is in Porto."},
     {"role": "user", "content": "Thank you."}],
]


def finish(ids: list[int], eos: set[int], max_new: int) -> tuple[list[int], str]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i], "stop"
    return ids[:max_new], "length"


def eos_ids(model_dir: Path) -> list[int]:
    gc = json.loads((model_dir / "generation_config.json").read_text()) \
        if (model_dir / "generation_config.json").exists() else {}
    e = gc.get("eos_token_id")
    if e is None:
        e = json.loads((model_dir / "genai_config.json").read_text())["model"]["eos_token_id"]
    return e if isinstance(e, list) else [e]


# ---------------------------------------------------------------- stage 1
def top2_gap(row) -> float:
    import numpy as np

    r = np.sort(np.asarray(row, dtype=np.float64).reshape(-1))
    return float(r[-1] - r[-2])


def ort_greedy(model_path: Path, input_ids: list[int], eos: set[int], max_new: int) -> tuple[list[int], list[float]]:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    out_names = [o.name for o in sess.get_outputs()]
    # [b, kv_heads, past, head_dim]
    shp = inputs[past_names[0]].shape
    kvh, hd = shp[1], shp[3]
    past = {n: np.zeros((1, kvh, 0, hd), dtype=np.float32) for n in past_names}
    ids = list(input_ids)
    cur = np.array([ids], dtype=np.int64)
    pos0 = 0
    gen: list[int] = []
    gaps: list[float] = []
    for _ in range(max_new):
        total = pos0 + cur.shape[1]
        feed = {"input_ids": cur,
                "attention_mask": np.ones((1, total), dtype=np.int64),
                "position_ids": np.arange(pos0, total, dtype=np.int64)[None, :]}
        feed.update(past)
        outs = dict(zip(out_names, sess.run(out_names, feed)))
        nxt = int(np.argmax(outs["logits"][0, -1]))
        gen.append(nxt)
        gaps.append(top2_gap(outs["logits"][0, -1]))
        if nxt in eos:
            break
        for n in past_names:
            past[n] = outs[n.replace("past_key_values.", "present.")]
        pos0 = total
        cur = np.array([[nxt]], dtype=np.int64)
    return gen, gaps


def stage_optimum(a) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = Path(a.models)
    odir = models / "edge-tiny-optimum"
    tok = AutoTokenizer.from_pretrained(odir)
    eos = set(eos_ids(odir))
    cases = []
    for p, n in TEXT_PROMPTS:
        cases.append({"kind": "text", "prompt": p, "max_new_tokens": n,
                      "input_ids": tok.encode(p, add_special_tokens=True)})
    for msgs in CHATS:
        ii = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(ii, dict) or hasattr(ii, "keys"):
            ii = ii["input_ids"]
        rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        assert ii == tok.encode(rendered, add_special_tokens=False), "chat ids mismatch"
        assert ii[0] == tok.bos_token_id and ii[1] != tok.bos_token_id
        cases.append({"kind": "chat", "messages": msgs, "max_new_tokens": MAX_NEW,
                      "rendered": rendered, "input_ids": list(ii)})

    # fp32 transformers reference
    hf = AutoModelForCausalLM.from_pretrained(a.hf, torch_dtype=torch.float32).eval()
    for c in cases:
        x = torch.tensor([c["input_ids"]])
        with torch.no_grad():
            o = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=c["max_new_tokens"],
                            do_sample=False, eos_token_id=sorted(eos), pad_token_id=tok.pad_token_id)
        ids, fr = finish(o[0, x.shape[1]:].tolist(), eos, c["max_new_tokens"])
        c["fp32_transformers"] = {"output_ids": ids, "finish_reason": fr, "text": tok.decode(ids)}

    # optimum int8: plain ORT loop (the fixture) + ORTModelForCausalLM cross-check
    ort_model = None
    try:
        from optimum.onnxruntime import ORTModelForCausalLM
        ort_model = ORTModelForCausalLM.from_pretrained(odir, use_cache=True, use_io_binding=False)
    except Exception as e:  # noqa: BLE001
        print("ORTModelForCausalLM unavailable:", repr(e))
    for c in cases:
        gen, gaps = ort_greedy(odir / "model.onnx", c["input_ids"], eos, c["max_new_tokens"])
        ids, fr = finish(gen, eos, c["max_new_tokens"])
        c["optimum_ort_loop"] = {"output_ids": ids, "finish_reason": fr, "text": tok.decode(ids),
                                 "min_top2_logit_gap": round(min(gaps), 4)}
        if ort_model is not None:
            x = torch.tensor([c["input_ids"]])
            o = ort_model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=c["max_new_tokens"],
                                   do_sample=False, eos_token_id=sorted(eos), pad_token_id=tok.pad_token_id)
            ids2, fr2 = finish(o[0, x.shape[1]:].tolist(), eos, c["max_new_tokens"])
            c["optimum_generate_agrees"] = (ids2 == ids and fr2 == fr)
            if not c["optimum_generate_agrees"]:
                c["optimum_generate"] = {"output_ids": ids2, "finish_reason": fr2}
    Path(a.stage).write_text(json.dumps({"eos_token_ids": sorted(eos), "cases": cases},
                                        indent=1, ensure_ascii=False))
    for c in cases:
        print(c["kind"], repr(c.get("prompt") or c["messages"][-1]["content"]))
        print("   fp32   :", repr(c["fp32_transformers"]["text"]), c["fp32_transformers"]["finish_reason"])
        print("   optimum:", repr(c["optimum_ort_loop"]["text"]), c["optimum_ort_loop"]["finish_reason"],
              "generate agrees:", c.get("optimum_generate_agrees"))


# ---------------------------------------------------------------- stage 2
def genai_greedy(model, input_ids: list[int], max_new: int) -> tuple[list[int], list[float]]:
    import numpy as np
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(input_ids) + max_new, batch_size=1)
    gen = og.Generator(model, params)
    gen.append_tokens(np.array([input_ids], dtype=np.int32))
    out: list[int] = []
    gaps: list[float] = []
    while not gen.is_done() and len(out) < max_new:
        gaps.append(top2_gap(gen.get_logits()))
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return out, gaps


def stage_genai(a) -> None:
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    models = Path(a.models)
    gdir = models / "edge-tiny-genai"
    stage = json.loads(Path(a.stage).read_text())
    eos = set(eos_ids(gdir))
    assert eos == set(stage["eos_token_ids"]), (eos, stage["eos_token_ids"])
    model = og.Model(str(gdir))
    ogtok = og.Tokenizer(model)
    tok5 = AutoTokenizer.from_pretrained(gdir)  # transformers 5.x: must give the same ids
    fixture = {"max_new_tokens": MAX_NEW, "eos_token_ids": sorted(eos), "cases": []}
    report = []
    for name in ("edge-tiny-genai", "edge-tiny-optimum"):
        for c in stage["cases"]:
            ii = c["input_ids"]
            if c["kind"] == "text":
                assert tok5.encode(c["prompt"], add_special_tokens=True) == ii, "tf5 text ids differ"
                og_ids = list(ogtok.encode(c["prompt"]))
                c.setdefault("og_tokenizer_text_ids_match", og_ids == ii or og_ids == ii[1:])
            else:
                r5 = tok5.apply_chat_template(c["messages"], add_generation_prompt=True, tokenize=False)
                assert r5 == c["rendered"], "tf5 chat render differs"
                assert tok5.encode(r5, add_special_tokens=False) == ii, "tf5 chat ids differ"
            if name == "edge-tiny-genai":
                gen, gaps = genai_greedy(model, ii, c["max_new_tokens"])
                ids, fr = finish(gen, eos, c["max_new_tokens"])
                produced_by = "onnxruntime-genai 0.18.0 Python API (og.Generator, do_sample=False)"
                c["genai"] = {"output_ids": ids, "finish_reason": fr}
                gap = round(min(gaps), 4)
            else:
                ids, fr = c["optimum_ort_loop"]["output_ids"], c["optimum_ort_loop"]["finish_reason"]
                gap = c["optimum_ort_loop"]["min_top2_logit_gap"]
                produced_by = "plain onnxruntime 1.31.1 Python loop (argmax, KV present->past)"
                if c.get("optimum_generate_agrees"):
                    produced_by += "; equals optimum ORTModelForCausalLM.generate"
            case = {"model": name, "kind": c["kind"]}
            if c["kind"] == "text":
                case["prompt"] = c["prompt"]
            else:
                case["messages"] = c["messages"]
            case.update({"max_new_tokens": c["max_new_tokens"], "input_ids": ii, "output_ids": ids, "finish_reason": fr,
                         "output_text": ogtok.decode(ids) if ids else "",
                         "min_top2_logit_gap": gap,
                         "produced_by": produced_by})
            fixture["cases"].append(case)
    # agreement report
    for c in stage["cases"]:
        g, o, f = c["genai"], c["optimum_ort_loop"], c["fp32_transformers"]
        report.append({
            "kind": c["kind"], "prompt": c.get("prompt") or c["messages"][-1]["content"],
            "genai==optimum": g == {"output_ids": o["output_ids"], "finish_reason": o["finish_reason"]},
            "genai==fp32": g == {"output_ids": f["output_ids"], "finish_reason": f["finish_reason"]},
            "optimum==fp32": o["output_ids"] == f["output_ids"],
            "optimum_generate_agrees": c.get("optimum_generate_agrees"),
            "og_tokenizer_text_ids_match": c.get("og_tokenizer_text_ids_match"),
            "fp32_text": f["text"], "genai_text": ogtok.decode(g["output_ids"]) if g["output_ids"] else "",
            "optimum_text": o["text"],
        })
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    Path(a.report).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    for r in report:
        print(json.dumps(r, ensure_ascii=False))


# ---------------------------------------------------------------- stage 3 (rebuilt tiny models)
def np_kv_name(mdir: Path) -> str:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(mdir / "model.onnx"), providers=["CPUExecutionProvider"])
    kv = next(i.type for i in sess.get_inputs() if i.name.startswith("past_key_values."))
    return "float16 KV" if "float16" in kv else "float32 KV"

def ort_greedy_gqa(model_path: Path, input_ids: list[int], eos: set[int], max_new: int,
                   kv_heads: int, head_size: int) -> tuple[list[int], list[float]]:
    """Plain onnxruntime loop for a GroupQueryAttention graph: KV grown by concatenation (GQA
    accepts past != present buffers), KV in the graph's own element type, no position_ids."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    kv_dtype = np.float16 if inputs[past_names[0]].type == "tensor(float16)" else np.float32
    out_names = [o.name for o in sess.get_outputs()]
    past = {n: np.zeros((1, kv_heads, 0, head_size), dtype=kv_dtype) for n in past_names}
    cur = np.array([list(input_ids)], dtype=np.int64)
    total = 0
    gen: list[int] = []
    gaps: list[float] = []
    for _ in range(max_new):
        total += cur.shape[1]
        feed = {"input_ids": cur, "attention_mask": np.ones((1, total), dtype=np.int64)}
        feed.update(past)
        outs = dict(zip(out_names, sess.run(out_names, feed)))
        last = outs["logits"][0, -1].astype(np.float32)
        nxt = int(np.argmax(last))
        gen.append(nxt)
        gaps.append(top2_gap(last))
        if nxt in eos:
            break
        for n in past_names:
            past[n] = outs[n.replace("past_key_values.", "present.")]
        cur = np.array([[nxt]], dtype=np.int64)
    return gen, gaps


def stage_genai_variant(a) -> None:
    """Greedy reference ids for a rebuild of the tiny genai model (float16, dynamic int8): from
    onnxruntime-genai, checked against a plain onnxruntime loop, compared with the int8 ids."""
    import onnxruntime_genai as og

    mdir = Path(a.model)
    name = mdir.name
    base = json.loads(Path(a.cases).read_text())
    cases = [c for c in base["cases"] if c["model"] == "edge-tiny-genai"]
    assert cases, "no edge-tiny-genai cases in " + a.cases
    eos = set(eos_ids(mdir))
    assert eos == set(base["eos_token_ids"]), (eos, base["eos_token_ids"])
    gc = json.loads((mdir / "genai_config.json").read_text())["model"]["decoder"]
    config = og.Config(str(mdir))
    config.clear_providers()  # the builder's config asks for cuda; this is the CPU reference
    model = og.Model(config)
    ogtok = og.Tokenizer(model)
    fixture = {"max_new_tokens": base["max_new_tokens"], "eos_token_ids": sorted(eos), "cases": []}
    report = []
    for c in cases:
        gen, gaps = genai_greedy(model, c["input_ids"], c["max_new_tokens"])
        ids, fr = finish(gen, eos, c["max_new_tokens"])
        loop, loop_gaps = ort_greedy_gqa(mdir / "model.onnx", c["input_ids"], eos, c["max_new_tokens"],
                                         gc["num_key_value_heads"], gc["head_size"])
        loop_ids, loop_fr = finish(loop, eos, c["max_new_tokens"])
        assert (loop_ids, loop_fr) == (ids, fr), ("og and the plain loop disagree", c, ids, loop_ids)
        case = {k: c[k] for k in ("kind", "prompt", "messages") if k in c}
        case = {"model": name, **case,
                "max_new_tokens": c["max_new_tokens"], "input_ids": c["input_ids"], "output_ids": ids,
                "finish_reason": fr, "output_text": ogtok.decode(ids) if ids else "",
                "min_top2_logit_gap": round(min(min(gaps), min(loop_gaps)), 4),
                "produced_by": "onnxruntime-genai 0.18.0 Python API (og.Generator, CPU provider, do_sample=False); "
                               f"equals a plain onnxruntime 1.31.1 loop (KV concatenated, {np_kv_name(mdir)})"}
        fixture["cases"].append(case)
        report.append({"prompt": c.get("prompt") or c["messages"][-1]["content"],
                       "variant==int8": ids == c["output_ids"] and fr == c["finish_reason"],
                       "variant_text": case["output_text"], "int8_text": c["output_text"],
                       "min_top2_logit_gap": case["min_top2_logit_gap"]})
    Path(a.out).write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    Path(a.report).parent.mkdir(parents=True, exist_ok=True)
    Path(a.report).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    for r in report:
        print(json.dumps(r, ensure_ascii=False))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s1 = sub.add_parser("optimum")
    s1.add_argument("--models", default="onnx/models")
    s1.add_argument("--hf", default=".venv/build/hf-tiny")
    s1.add_argument("--stage", default=".venv/build/reference_stage1.json")
    s2 = sub.add_parser("genai")
    s2.add_argument("--models", default="onnx/models")
    s2.add_argument("--stage", default=".venv/build/reference_stage1.json")
    s2.add_argument("--out", default="tests/fixtures/reference_greedy.json")
    s2.add_argument("--report", default=".venv/build/reference_agreement.json")
    # Rebuilds of the tiny genai model (float16; the dynamic-int8 rewrite of requantize_dynamic.py),
    # each checked the same way against the int8 cases.
    for suffix in ("fp16", "dq"):
        v = sub.add_parser(f"genai-{suffix}")
        v.add_argument("--model", default=f"onnx/models/edge-tiny-genai-{suffix}")
        v.add_argument("--cases", default="tests/fixtures/reference_greedy.json")
        v.add_argument("--out", default=f"tests/fixtures/reference_greedy_{suffix}.json")
        v.add_argument("--report", default=f".venv/build/reference_agreement_{suffix}.json")
    a = ap.parse_args()
    {"optimum": stage_optimum, "genai": stage_genai, "genai-fp16": stage_genai_variant,
     "genai-dq": stage_genai_variant}[a.cmd](a)


if __name__ == "__main__":
    main()

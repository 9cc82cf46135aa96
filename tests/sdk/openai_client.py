"""Drives edge-gateway with the official OpenAI Python SDK, changing only base_url.

Run by tests/openai_sdk.rs: `python openai_client.py BASE_URL MODEL`. Prints one JSON object
with what the SDK saw; the Rust test asserts on it. Any SDK-side parsing failure raises and
fails the test.
"""
import json
import sys

import openai
from openai import OpenAI


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key="unused-on-the-edge", max_retries=0)
    out = {}

    out["models"] = [m.id for m in client.models.list()]

    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "You are a maintenance assistant."},
                  {"role": "user", "content": "What happened on line 3?"}],
        max_tokens=32, temperature=0)
    out["chat_text"] = chat.choices[0].message.content
    out["chat_finish"] = chat.choices[0].finish_reason
    out["chat_usage"] = chat.usage.model_dump()

    pieces, usage, finishes = [], None, []
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "You are a maintenance assistant."},
                  {"role": "user", "content": "What happened on line 3?"}],
        max_tokens=32, temperature=0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    out["stream_text"] = "".join(pieces)
    out["stream_usage"] = usage
    out["stream_finishes"] = finishes

    completion = client.completions.create(model=model, prompt="The machine on line 3", max_tokens=16, temperature=0)
    out["completion_text"] = completion.choices[0].text

    # The SDK asks for base64 by default and decodes it; float is the explicit alternative.
    models = out["models"]
    embedding_model = next((m for m in models if m != model), None)
    if embedding_model is not None:
        b64 = client.embeddings.create(model=embedding_model, input=["pump vibration", "hello"])
        flt = client.embeddings.create(model=embedding_model, input="pump vibration", encoding_format="float")
        out["embeddings"] = {
            "count": len(b64.data),
            "dims": len(b64.data[0].embedding),
            "max_abs_diff_base64_vs_float": max(abs(a - b) for a, b in zip(b64.data[0].embedding, flt.data[0].embedding)),
            "prompt_tokens": b64.usage.prompt_tokens,
        }

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        out["not_found"] = None
    except openai.NotFoundError as e:
        out["not_found"] = {"status": e.status_code, "code": e.code}

    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], n=2)
        out["bad_request"] = None
    except openai.BadRequestError as e:
        out["bad_request"] = {"status": e.status_code, "param": e.param}

    print(json.dumps(out))


if __name__ == "__main__":
    main()

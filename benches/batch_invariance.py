#!/usr/bin/env python3
"""Does batching change what a sequence generates? Sends N greedy completions (random token-id
prompts, fixed seed) one at a time, then all at once, to a running gateway, and compares the
generated ids. Python standard library only.

    python3 benches/batch_invariance.py --url http://127.0.0.1:8080 --model bench-250m-genai

Start the gateway with `engine.max_concurrent_sequences` >= N and the prefix cache off (the
requests also send `x-edge-cache: off`). A random-weight model has small logit gaps, so any
numeric coupling between the rows of a batch shows up within a few tokens. Prints one JSON line;
exit status 1 when any sequence differs.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import urllib.parse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="gateway base URL, without /v1")
    ap.add_argument("--model", required=True)
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    url = urllib.parse.urlparse(a.url)
    rng = random.Random(a.seed)
    prompts = [[rng.randrange(100, 4000) for _ in range(rng.randrange(20, 80))] for _ in range(a.sequences)]

    def generate(prompt: list[int], out: list, i: int) -> None:
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        body = {"model": a.model, "prompt": prompt, "max_tokens": a.max_tokens, "temperature": 0,
                "return_token_ids": True, "ignore_eos": True}
        c.request("POST", "/v1/completions", json.dumps(body),
                  {"content-type": "application/json", "x-edge-cache": "off"})
        r = c.getresponse()
        reply = json.loads(r.read())
        if r.status != 200:
            raise SystemExit(f"HTTP {r.status}: {reply}")
        out[i] = reply["choices"][0]["token_ids"]

    solo: list = [None] * a.sequences
    for i, p in enumerate(prompts):
        generate(p, solo, i)
    together: list = [None] * a.sequences
    threads = [threading.Thread(target=generate, args=(p, together, i)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    differ = [i for i in range(a.sequences) if solo[i] != together[i]]
    first = [next((k for k, (x, y) in enumerate(zip(solo[i], together[i])) if x != y), None) for i in differ]
    print(json.dumps({"model": a.model, "sequences": a.sequences, "max_tokens": a.max_tokens,
                      "differ_when_batched": len(differ), "first_divergence_at": first}))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

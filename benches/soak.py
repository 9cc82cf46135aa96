"""Load driver and sampler of benches/soak.sh (Python standard library only).

Workers loop over a fixed mix of requests until the deadline; a sampler thread reads the
gateway's RSS and open file descriptors from /proc and its KV bytes from /metrics every
interval, and each interval's client-side p99 latency is computed from the requests that
finished in it. "Errors" are answers the mix did not expect: a 5xx, a connection failure, a
stream without [DONE], or a bad request that was not refused with a 4xx.
"""

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

# (kind, weight): what one worker iteration sends.
MIX = [
    ("chat", 25),
    ("completion", 15),
    ("chat_stream", 15),
    ("cancelled_stream", 5),
    ("embeddings", 15),
    ("explain", 10),
    ("bad_request", 15),
]

WORDS = ("pump press line valve torque shift sensor belt motor seal filter alarm reset "
         "pressure coolant spindle conveyor bearing inspection schedule").split()

# Explicit scores keep every request on the edge (no cloud, no human review), so the run
# measures the local path; the PII detector never fires on these words.
HEADERS = {"content-type": "application/json", "x-risk-score": "5", "x-complexity-score": "0.2"}

BAD_BODIES = [
    b"{not json",
    json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}).encode(),
    json.dumps({"model": "M", "messages": [{"role": "user", "content": "x"}], "n": 3}).encode(),
    json.dumps({"model": "M", "messages": []}).encode(),
    json.dumps({"model": "M", "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 50}).encode(),
    json.dumps({"model": "M", "messages": [{"role": "user", "content": "x"}], "temperature": 9}).encode(),
]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []  # (finished_at, seconds, kind)
        self.counts = {}
        self.errors = {}

    def record(self, kind, seconds, error=None):
        with self.lock:
            self.latencies.append((time.monotonic(), seconds, kind))
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if error:
                key = f"{kind}: {error}"
                self.errors[key] = self.errors.get(key, 0) + 1


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


class Client:
    def __init__(self, url, model, embed_model):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.model, self.embed_model = model, embed_model

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def post(self, path, body):
        c = self.conn()
        try:
            c.request("POST", path, body=body, headers=HEADERS)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def one(self, kind, rng):
        """Sends one request of `kind`; returns an error string or None."""
        chat = {"model": self.model, "max_tokens": rng.randint(8, 32), "temperature": 0.7,
                "messages": [{"role": "system", "content": "You are a maintenance assistant."},
                             {"role": "user", "content": words(rng, rng.randint(5, 40))}]}
        if kind == "chat":
            status, _ = self.post("/v1/chat/completions", json.dumps(chat).encode())
            return None if status == 200 else f"status {status}"
        if kind == "completion":
            body = {"model": self.model, "prompt": words(rng, rng.randint(5, 60)),
                    "max_tokens": rng.randint(8, 32)}
            status, _ = self.post("/v1/completions", json.dumps(body).encode())
            return None if status == 200 else f"status {status}"
        if kind == "explain":
            status, _ = self.post("/v1/route/explain", json.dumps(chat).encode())
            return None if status == 200 else f"status {status}"
        if kind == "embeddings":
            body = {"model": self.embed_model,
                    "input": [words(rng, rng.randint(3, 30)) for _ in range(rng.randint(1, 8))]}
            status, _ = self.post("/v1/embeddings", json.dumps(body).encode())
            return None if status == 200 else f"status {status}"
        if kind == "bad_request":
            body = rng.choice(BAD_BODIES).replace(b'"M"', json.dumps(self.model).encode())
            status, _ = self.post("/v1/chat/completions", body)
            return None if 400 <= status < 500 else f"bad request answered {status}"
        if kind in ("chat_stream", "cancelled_stream"):
            chat["stream"] = True
            chat["max_tokens"] = rng.randint(16, 64)
            c = self.conn()
            try:
                c.request("POST", "/v1/chat/completions", body=json.dumps(chat).encode(), headers=HEADERS)
                r = c.getresponse()
                if r.status != 200:
                    return f"status {r.status}"
                if kind == "cancelled_stream":
                    # Read the first event, then hang up: the gateway must cancel the generation.
                    r.readline()
                    return None
                body = r.read().decode("utf-8", "replace")
                if "data: [DONE]" not in body:
                    return "stream without [DONE]"
                if '"error"' in body:
                    return "error event in stream"
                return None
            finally:
                c.close()
        return f"unknown kind {kind}"


def worker(client, stats, deadline, seed):
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    while time.monotonic() < deadline:
        kind = rng.choice(kinds)
        started = time.monotonic()
        try:
            error = client.one(kind, rng)
        except Exception as e:  # noqa: BLE001 - any failure to get an answer is an error
            error = type(e).__name__
        stats.record(kind, time.monotonic() - started, error)


def scrape(client, name):
    c = client.conn()
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def proc_sample(pid):
    rss = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def p99(values):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))]


def wait_ready(client, pid, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            sys.exit("soak: the gateway exited during startup")
        try:
            c = client.conn()
            c.request("GET", "/readyz")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                c = client.conn()
                c.request("GET", "/v1/models")
                models = json.loads(c.getresponse().read())
                c.close()
                ids = [m["id"] for m in models["data"]]
                embed = [m["id"] for m in models["data"] if m.get("metadata", {}).get("type") == "embedding"]
                gen = [i for i in ids if i not in embed]
                return gen[0], (embed[0] if embed else None)
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("soak: the gateway did not become ready")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--log")
    ap.add_argument("--duration", type=float, default=1800)
    ap.add_argument("--interval", type=float)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json")
    ap.add_argument("--max-error-rate", type=float)
    ap.add_argument("--max-rss-growth-mb", type=float)
    args = ap.parse_args()
    interval = args.interval or min(60.0, max(5.0, args.duration / 10))

    probe = Client(args.url, None, None)
    model, embed_model = wait_ready(probe, args.pid)
    if embed_model is None:
        MIX[:] = [(k, w) for k, w in MIX if k != "embeddings"]
    client = Client(args.url, model, embed_model)
    stats = Stats()
    start = time.monotonic()
    deadline = start + args.duration
    threads = [threading.Thread(target=worker, args=(client, stats, deadline, i), daemon=True)
               for i in range(args.concurrency)]
    for t in threads:
        t.start()

    samples = []
    died = False
    seen = 0
    print(f"{'t_s':>6} {'rss_mb':>8} {'cache_mb':>8} {'fds':>5} {'kv_bytes':>10} {'requests':>8} {'errors':>6} {'p99_ms':>8}",
          flush=True)
    next_at = start + interval
    while True:
        time.sleep(max(0.0, min(next_at, deadline) - time.monotonic()))
        now = time.monotonic()
        if not os.path.exists(f"/proc/{args.pid}"):
            died = True
            break
        rss, fds = proc_sample(args.pid)
        try:
            kv = scrape(client, "edge_gateway_kv_cache_bytes")
            # The prefix cache fills up to cache.max_bytes by design: RSS growth up to it is
            # the cache warming, not a leak.
            cache = scrape(client, "edge_gateway_prefix_cache_bytes")
        except OSError:
            kv = cache = None
        with stats.lock:
            window = stats.latencies[seen:]
            seen = len(stats.latencies)
            errors = sum(stats.errors.values())
        # Streams are excluded from latency: their length is the test's choice, not the gateway's.
        lat = [s for _, s, k in window if k not in ("chat_stream", "cancelled_stream", "bad_request")]
        sample = {"t_s": round(now - start, 1), "rss_bytes": rss, "open_fds": fds, "kv_bytes": kv,
                  "prefix_cache_bytes": cache,
                  "requests": len(window), "errors_total": errors,
                  "p99_ms": None if p99(lat) is None else round(p99(lat) * 1000, 1)}
        samples.append(sample)
        cache_mb = f"{cache / 2**20:.1f}" if cache is not None else "-"
        print(f"{sample['t_s']:>6} {rss / 2**20:>8.1f} {cache_mb:>8} {fds:>5} {kv if kv is not None else '-':>10} "
              f"{len(window):>8} {errors:>6} {sample['p99_ms'] if sample['p99_ms'] is not None else '-':>8}",
              flush=True)
        if now >= deadline:
            break
        next_at += interval
    for t in threads:
        t.join(timeout=130)

    total = sum(stats.counts.values())
    errors = sum(stats.errors.values())
    first, last = (samples[0], samples[-1]) if samples else ({}, {})
    rss_growth = (last.get("rss_bytes") or 0) - (first.get("rss_bytes") or 0)
    p99s = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
    report = {
        "duration_s": args.duration, "interval_s": interval, "concurrency": args.concurrency,
        "model": model, "gateway_died": died, "requests": total, "by_kind": stats.counts,
        "errors": errors, "error_rate": errors / total if total else 0.0, "errors_by_kind": stats.errors,
        "rss_first_bytes": first.get("rss_bytes"), "rss_last_bytes": last.get("rss_bytes"),
        "rss_growth_bytes": rss_growth,
        # Once the bounded caches are full, growth should stop: the second half tells a leak.
        "rss_growth_second_half_bytes": (last.get("rss_bytes") or 0)
        - (samples[len(samples) // 2].get("rss_bytes") or 0 if samples else 0),
        "prefix_cache_growth_bytes": (last.get("prefix_cache_bytes") or 0) - (first.get("prefix_cache_bytes") or 0),
        "fds_first": first.get("open_fds"), "fds_last": last.get("open_fds"),
        "p99_first_ms": p99s[0] if p99s else None, "p99_last_ms": p99s[-1] if p99s else None,
        "p99_drift": (p99s[-1] / p99s[0]) if len(p99s) > 1 and p99s[0] else None,
        "samples": samples,
    }
    print(f"\nrequests {total} ({', '.join(f'{k} {v}' for k, v in sorted(stats.counts.items()))})")
    print(f"error rate {report['error_rate']:.4%} ({errors})" + (f": {stats.errors}" if errors else ""))
    print(f"RSS {(first.get('rss_bytes') or 0) / 2**20:.1f} -> {(last.get('rss_bytes') or 0) / 2**20:.1f} MiB "
          f"(growth {rss_growth / 2**20:+.1f} MiB, of which prefix cache "
          f"{report['prefix_cache_growth_bytes'] / 2**20:+.1f} MiB, bounded by cache.max_bytes); "
          f"open fds {first.get('open_fds')} -> {last.get('open_fds')}")
    print(f"RSS growth over the second half: {report['rss_growth_second_half_bytes'] / 2**20:+.1f} MiB")
    if report["p99_drift"] is not None:
        print(f"p99 {p99s[0]} -> {p99s[-1]} ms (drift x{report['p99_drift']:.2f}; "
              f"min {min(p99s)}, max {max(p99s)})")
    if died:
        print("THE GATEWAY DIED" + (f"; see its log: {args.log}" if args.log else ""))
    path = args.json or os.path.join(".bench", f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"json: {path}")
    failed = died
    if args.max_error_rate is not None and report["error_rate"] > args.max_error_rate:
        print(f"FAIL: error rate above {args.max_error_rate}")
        failed = True
    if args.max_rss_growth_mb is not None and rss_growth / 2**20 > args.max_rss_growth_mb:
        print(f"FAIL: RSS grew more than {args.max_rss_growth_mb} MiB")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

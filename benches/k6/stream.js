// k6 load script for edge-gateway (or any OpenAI-compatible server), for teams that use k6.
// `edge-gateway loadtest` measures TTFT and inter-token latency per token; k6 reads a streamed
// body in one piece, so here TTFT is approximated by time to first byte of the SSE response
// and throughput comes from the usage chunk.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080/v1 -e MODEL=edge-tiny-genai \
//          -e VUS=8 -e DURATION=60s -e PROMPT_TOKENS=64 -e MAX_TOKENS=64 benches/k6/stream.js
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080/v1';
const MODEL = __ENV.MODEL || 'edge-tiny-genai';
const PROMPT_TOKENS = parseInt(__ENV.PROMPT_TOKENS || '64', 10);
const MAX_TOKENS = parseInt(__ENV.MAX_TOKENS || '64', 10);
const API_KEY = __ENV.API_KEY || '';

export const options = {
  vus: parseInt(__ENV.VUS || '8', 10),
  duration: __ENV.DURATION || '60s',
  thresholds: { http_req_failed: ['rate<0.01'] },
};

const ttfb = new Trend('edge_ttfb_ms', true);
const generated = new Counter('edge_generated_tokens');
const perStream = new Trend('edge_stream_tok_s');

export default function () {
  // Exact-length prompts as token ids (ids 100..999 avoid special tokens in small vocabularies).
  const prompt = Array.from({ length: PROMPT_TOKENS }, () => 100 + Math.floor(Math.random() * 900));
  const body = JSON.stringify({
    model: MODEL, prompt, max_tokens: MAX_TOKENS, temperature: 0, ignore_eos: true,
    stream: true, stream_options: { include_usage: true },
  });
  const headers = { 'content-type': 'application/json' };
  if (API_KEY) headers.authorization = `Bearer ${API_KEY}`;
  const res = http.post(`${BASE_URL}/completions`, body, { headers, timeout: '300s' });
  check(res, {
    'status 200': (r) => r.status === 200,
    'stream ended': (r) => typeof r.body === 'string' && r.body.includes('data: [DONE]'),
  });
  ttfb.add(res.timings.waiting);
  const usage = (res.body || '').split('\n\n')
    .map((e) => e.replace(/^data: /, ''))
    .filter((d) => d.startsWith('{') && d.includes('"usage"'))
    .map((d) => JSON.parse(d).usage)
    .filter((u) => u && u.completion_tokens)
    .pop();
  if (usage) {
    generated.add(usage.completion_tokens);
    const streaming = (res.timings.duration - res.timings.waiting) / 1000;
    if (streaming > 0) perStream.add(usage.completion_tokens / streaming);
  }
}

//! Criterion benchmark of the per-token hot path outside ONNX Runtime: greedy argmax and
//! temperature/top-k/top-p sampling over a 32k vocabulary.

use criterion::{criterion_group, criterion_main, Criterion};
use edge_gateway::engine::sampling::{argmax, Sampler, SamplingParams};

fn logits(vocab: usize) -> Vec<f32> {
    (0..vocab)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
        .collect()
}

fn bench_sampling(c: &mut Criterion) {
    let l = logits(32_000);
    c.bench_function("argmax_32k", |b| {
        b.iter(|| argmax(std::hint::black_box(&l)))
    });
    let mut sampler = Sampler::new(SamplingParams {
        temperature: 0.8,
        top_k: 50,
        top_p: 0.95,
        seed: Some(1),
    });
    c.bench_function("top_k50_top_p095_32k", |b| {
        b.iter(|| sampler.sample(std::hint::black_box(&l)))
    });
    let mut full = Sampler::new(SamplingParams {
        temperature: 0.8,
        top_k: 0,
        top_p: 0.95,
        seed: Some(1),
    });
    c.bench_function("top_p095_32k", |b| {
        b.iter(|| full.sample(std::hint::black_box(&l)))
    });
}

criterion_group!(benches, bench_sampling);
criterion_main!(benches);

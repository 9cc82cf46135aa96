//! The committed INT8 embedding model against the fp32 PyTorch reference
//! (`tests/fixtures/embeddings_reference.json`, written by `onnx/build_embedding_model.py`),
//! through the real encoder workers and ONNX Runtime: cosine >= 0.99 per sentence, batched
//! vectors equal to one-by-one vectors, truncation and input errors.

#![expect(clippy::expect_used, reason = "tests fail loudly")]

use std::path::PathBuf;
use std::sync::Arc;

use edge_gateway::embeddings::{
    cosine, EmbedError, EmbedInput, EmbeddingPackage, Encoder, EncoderOptions,
};
use edge_gateway::engine::runtime;
use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn encoder(cache_max_bytes: u64) -> Arc<Encoder> {
    let env = runtime::environment(None).expect("ONNX Runtime (run `make ort`)");
    let package =
        EmbeddingPackage::load(&repo("onnx/models/all-minilm-l6-v2-int8"), None).expect("package");
    Encoder::start(
        env,
        package,
        &EncoderOptions {
            workers: 1,
            max_queue: 16,
            run_batch: 32,
            max_input_tokens: 256,
            cache_max_bytes,
            intra_threads: 2,
        },
    )
    .expect("encoder starts")
}

struct Fixture {
    text: String,
    tokens: usize,
    embedding: Vec<f32>,
}

fn fixtures() -> Vec<Fixture> {
    let raw =
        std::fs::read_to_string(repo("tests/fixtures/embeddings_reference.json")).expect("fixture");
    let v: Value = serde_json::from_str(&raw).expect("json");
    v["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| Fixture {
            text: s["text"].as_str().expect("text").to_string(),
            tokens: s["tokens"].as_u64().expect("tokens") as usize,
            embedding: s["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("float") as f32)
                .collect(),
        })
        .collect()
}

fn texts(f: &[Fixture]) -> Vec<EmbedInput> {
    f.iter().map(|x| EmbedInput::Text(x.text.clone())).collect()
}

#[test]
fn int8_embeddings_match_the_fp32_pytorch_reference() {
    let enc = encoder(0);
    let fixtures = fixtures();
    assert!(fixtures.len() >= 10);
    let got = enc.embed_blocking(texts(&fixtures), true).expect("embed");
    let mut worst = 1.0f32;
    for (f, e) in fixtures.iter().zip(&got) {
        assert_eq!(e.vector.len(), 384);
        assert_eq!(e.tokens, f.tokens, "token count of {:?}", f.text);
        let norm: f32 = e.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
        let c = cosine(&e.vector, &f.embedding);
        assert!(c >= 0.99, "cosine {c} < 0.99 for {:?}", f.text);
        worst = worst.min(c);
    }
    println!("min cosine INT8 vs fp32 reference: {worst:.5}");
    // Unrelated sentences are not near-identical: the vectors carry meaning.
    let a = &got[0].vector;
    let b = &got[7].vector;
    assert!(cosine(a, b) < 0.5, "{}", cosine(a, b));
}

#[test]
fn batched_vectors_equal_one_by_one_vectors() {
    let enc = encoder(0);
    let fixtures = fixtures();
    let batched = enc.embed_blocking(texts(&fixtures), true).expect("batch");
    for (f, b) in fixtures.iter().zip(&batched) {
        let single = enc
            .embed_blocking(vec![EmbedInput::Text(f.text.clone())], true)
            .expect("single");
        let c = cosine(&single[0].vector, &b.vector);
        assert!(
            c > 0.9999,
            "batched differs from single ({c}) for {:?}",
            f.text
        );
    }
}

#[test]
fn long_inputs_are_truncated_or_refused_and_bad_inputs_are_errors() {
    let enc = encoder(1 << 20);
    let long = fixtures()
        .into_iter()
        .find(|f| f.tokens == 256)
        .expect("a fixture at the 256-token limit");
    // Truncated: exactly the model's maximum, and the reference (truncated the same way).
    let got = enc
        .embed_blocking(vec![EmbedInput::Text(long.text.clone())], true)
        .expect("truncated");
    assert_eq!(got[0].tokens, 256);
    assert!(cosine(&got[0].vector, &long.embedding) >= 0.99);
    // Not truncated: an error naming the input, even though the vector is now cached.
    let err = enc
        .embed_blocking(
            vec![
                EmbedInput::Text("short".into()),
                EmbedInput::Text(long.text.clone()),
            ],
            false,
        )
        .expect_err("too long");
    match err {
        EmbedError::TooLong {
            index,
            limit,
            tokens,
        } => {
            assert_eq!((index, limit), (1, 256));
            assert!(tokens > 256);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        enc.embed_blocking(vec![EmbedInput::Text(String::new())], false),
        Err(EmbedError::Empty { index: 0 })
    ));
    assert!(matches!(
        enc.embed_blocking(vec![EmbedInput::Tokens(vec![7592, 40_000])], false),
        Err(EmbedError::InvalidToken {
            index: 0,
            id: 40_000,
            ..
        })
    ));
    // Token ids get the special tokens the tokenizer adds: same vector as the text.
    let by_ids = enc
        .embed_blocking(vec![EmbedInput::Tokens(vec![7592])], false)
        .expect("ids");
    let by_text = enc
        .embed_blocking(vec![EmbedInput::Text("hello".into())], false)
        .expect("text");
    assert_eq!(by_ids[0].tokens, 3);
    assert!(cosine(&by_ids[0].vector, &by_text[0].vector) > 0.9999);
}

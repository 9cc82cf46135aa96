//! Local inference: ONNX Runtime setup, model packages, KV state, sampling, the generation loop
//! and the worker pool that owns the sessions.

pub mod budget;
pub mod chat_template;
pub mod error;
pub mod generate;
pub mod kv;
pub mod layout;
pub mod package;
pub mod providers;
pub mod rowquant;
pub mod runner;
pub mod runtime;
pub mod sampling;
pub mod scheduler;
pub mod slots;
pub mod tokenizer;
pub mod worker;

pub use error::{InferenceError, ModelError};
pub use generate::{FinishReason, GenerationEvent, GenerationParams};
pub use worker::{CompletedGeneration, Engine, EngineOptions, GenerationRequest, SubmitError};

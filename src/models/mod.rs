//! The served models: each id has a stable version and optionally a candidate taking a canary
//! share of traffic and a previous version kept for rollback. Versions are verified, loaded in
//! the background and swapped in atomically; in-flight requests finish on the version they
//! started on.

pub mod canary;
pub mod loader;
pub mod registry;
pub mod state_file;

pub use loader::{LoadError, LoadedModel, ModelLoader, UNVERSIONED};
pub use registry::{ModelRegistry, RegistryError, RegistrySettings, Role, Served, ServedModelSpec};

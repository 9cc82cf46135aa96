//! Human review: requests the policy routes to `human_review` are stored durably (SQLite, WAL,
//! `synchronous=FULL`), answered 202 with a review id, and wait for a reviewer to approve them
//! onto a route (`edge` or `cloud:<name>`) or reject them.
//!
//! The store is blocking; handlers call it through `web::block`. It is not a hot path: one
//! fsync per accepted request is the price of never losing one.

pub mod error;
pub mod metrics_names;
pub mod model;
pub mod store;

pub use error::ReviewError;
pub use model::{ApprovedRoute, NewReview, Review, ReviewState};
pub use store::{ReviewStore, StoreOptions, MAX_LIST_LIMIT, SCHEMA_VERSION};

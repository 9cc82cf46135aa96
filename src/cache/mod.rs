//! Caches that save recomputation: the KV prefix cache (system prompts, shared context,
//! earlier chat turns).

pub mod prefix;

pub use prefix::{PrefixCache, PrefixCacheSettings, PrefixMatch};

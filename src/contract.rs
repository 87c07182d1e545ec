//! Payload contracts: what a trigger accepts from a caller beyond who it is. Per trigger,
//! `contract = { schema, draft, content_types, max_body, query, headers }` (`raw`)
//! compiles with the policy (`compiled`: the schema file read and compiled once, media
//! types, patterns) and is checked on the request path after authentication and the rate
//! limit, before any secret is fetched or the upstream is contacted (`proxy/payload.rs`).
//!
//! One file per concern: the media types (`media`), query and header rules (`names`),
//! the JSON Schema and its draft (`schema`), strict JSON reading (`strict`: duplicate
//! keys, lone surrogates, unsafe integers), and how a contract moved between two policies
//! (`diff`, for `check --diff`). Refusals are [`crate::denial::PayloadRefusal`]s: rules
//! and pointers, never the caller's values.

mod compiled;
pub mod diff;
mod media;
mod names;
mod raw;
mod schema;
pub mod strict;

pub use compiled::{Contract, DEFAULT_MAX_BODY};
pub use media::{MediaType, MediaTypes};
pub use names::{NameRules, PROTOCOL_HEADERS, QueryUnbuildable, UnlistedNames};
pub use raw::{ByteSize, RawContract, RawNameRules};
pub use schema::{PayloadSchema, SchemaDraft};

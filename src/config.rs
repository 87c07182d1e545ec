//! The policy file's loader, independent of what the file says: the source text and its
//! `FILE:LINE:COL` locations, section-by-section deserialization that collects every
//! error, compile diagnostics keyed by path, human durations, and the did-you-mean
//! hints. The sections themselves are typed by their owners (`policy::raw` puts the
//! document together; each domain owns its `Raw*` types).

mod diagnostics;
mod duration;
mod load;

pub use diagnostics::{ConfigError, Diagnostics, KeyPath, Mark, did_you_mean};
pub use duration::HumanDuration;
pub use load::{Document, Section, SourceFile, read_source};

//! The request path: `handle` → `admit` → `forward` → one run record.

mod permit;

pub use permit::Permit;

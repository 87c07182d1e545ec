//! Proof that a call passed every check of `admit`.

/// Only `admit` builds a `Permit`; secret resolution and forwarding require one, so a
/// call that was not admitted cannot reach the vault or the upstream.
#[derive(Debug)]
pub struct Permit {
    _sealed: (),
}

impl Permit {
    /// Issued by `admit` once every check passed.
    pub(in crate::proxy) fn issue() -> Self {
        Self { _sealed: () }
    }

    /// A permit for unit tests of modules that require one.
    #[cfg(test)]
    #[allow(dead_code)] // used by other modules' unit tests
    pub(crate) fn for_tests() -> Self {
        Self { _sealed: () }
    }
}

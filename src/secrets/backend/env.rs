//! The `env` backend: environment variables, path `flows/token` read as `{prefix}FLOWS_TOKEN`.

use crate::secrets::error::SecretError;
use crate::secrets::reference::SecretRef;
use crate::secrets::value::SecretValue;

/// The environment variable a reference names: `prefix` + path upper-cased with `/`, `-`
/// and `.` turned into `_`.
pub(crate) fn env_var_name(prefix: &str, path: &str) -> String {
    let mut name = prefix.to_owned();
    name.extend(path.chars().map(|c| if matches!(c, '/' | '-' | '.') { '_' } else { c.to_ascii_uppercase() }));
    name
}

/// Reads the variable the reference names; unset is `NotFound`.
pub(crate) fn fetch(prefix: &str, reference: &SecretRef) -> Result<SecretValue, SecretError> {
    let var = env_var_name(prefix, &reference.path);
    #[expect(clippy::disallowed_methods, reason = "an env vault's secrets are environment variables")]
    let value = std::env::var(&var);
    match value {
        Ok(v) => Ok(SecretValue::new(v)),
        Err(_) => Err(SecretError::NotFound { reference: reference.to_string() }),
    }
}

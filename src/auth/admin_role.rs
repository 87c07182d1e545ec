//! Who is looking at the admin API: the workflow engines' viewer / owner /
//! administrator split, deciding who sees private fields and who may reload.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An admin API caller's role. Nobody, whatever the role, can read a secret value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Sees runs and the redacted policy.
    Viewer,
    /// Also sees private fields and may reload the policy.
    Owner,
    /// Same powers as an owner.
    Administrator,
}

impl AdminRole {
    /// Private parameters and private fields are shown to owners and administrators.
    pub fn can_see_private(self) -> bool {
        matches!(self, Self::Owner | Self::Administrator)
    }

    /// `POST /reload` is allowed to owners and administrators.
    pub fn can_reload(self) -> bool {
        matches!(self, Self::Owner | Self::Administrator)
    }

    /// The role's name as written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Owner => "owner",
            Self::Administrator => "administrator",
        }
    }
}

impl fmt::Display for AdminRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `viewer`, `owner` or `administrator`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown admin role {0:?} (expected viewer, owner or administrator)")]
pub struct UnknownRole(pub String);

impl FromStr for AdminRole {
    type Err = UnknownRole;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "viewer" => Ok(Self::Viewer),
            "owner" => Ok(Self::Owner),
            "administrator" | "admin" => Ok(Self::Administrator),
            _ => Err(UnknownRole(text.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owners_and_administrators_see_private_and_reload() {
        assert!(!AdminRole::Viewer.can_see_private());
        assert!(!AdminRole::Viewer.can_reload());
        for role in [AdminRole::Owner, AdminRole::Administrator] {
            assert!(role.can_see_private());
            assert!(role.can_reload());
        }
        assert_eq!("Owner".parse::<AdminRole>(), Ok(AdminRole::Owner));
        assert!("root".parse::<AdminRole>().is_err());
    }
}

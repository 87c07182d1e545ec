//! What a policy change changes (`flowgate check --diff OLD NEW`).

//! Browser sign-in to the console: people open `/ui`, sign in at the admin identity's
//! provider (OIDC authorization code flow with PKCE `S256`, `state` and `nonce`), and get a
//! short-lived session cookie bound to server-side state; API clients keep sending bearer
//! tokens. The HTTP side (redirects, callback, sign-out) is `console::sign_in`; the ID token
//! is checked by `auth` (`KeyStores::verify_id_token`) with the identity's own keys and the
//! same admin rules as a bearer token.
//!
//! # Layout
//! | file | concern |
//! |---|---|
//! | `signin/settings.rs` | `[admin.sign_in]` as written ([`RawSignIn`]) and compiled ([`SignIn`]) |
//! | `signin/cookie.rs` | the `__Host-` cookies: reading an id out of `Cookie`, `Set-Cookie` lines |
//! | `signin/session.rs` | [`Sessions`]: sign-ins in progress and signed-in sessions, bounded, by generation |

mod cookie;
mod session;
mod settings;

pub use cookie::{CookieLookup, LOGIN_COOKIE, OpaqueId, SESSION_COOKIE, clear_cookie, find_id, set_cookie};
pub use session::{Begun, MAX_PENDING, PENDING_LIFETIME, Pending, PendingError, SessionLimits, SessionView, Sessions};
pub use settings::{RawSignIn, SignIn, SignInContext, compile_sign_in};

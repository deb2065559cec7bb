//! [`Fallback`]: what a bind does when its selectors match nothing. It sits
//! below both the config file (which can set it) and the resolver (which
//! applies it), so neither imports the other for it.

use serde::{Deserialize, Serialize};

/// What to do when the selectors match nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Serve on loopback only, and say so.
    #[default]
    Loopback,
    /// Serve nothing: `serve` exits 69.
    Fail,
}

//! [`Error`]: why a gateway could not start. Each variant says what to change.

use meshgate_core::registry::RegistryError;
use meshgate_core::source::SourceError;
use meshgate_core::SelectorError;

use super::bind::BindError;

/// Starting failed. Each variant says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A selector that cannot be used (unknown mode, bad CIDR, ...).
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A configuration meshgate refuses (non-loopback without a token).
    #[error("{0}")]
    Refused(String),
    /// Nothing matched and the fallback is [`Fallback::Fail`](meshgate_core::Fallback::Fail).
    #[error("{0}")]
    NothingMatched(String),
    /// Two providers claim one name (a build problem).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The host's interfaces could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An address could not be bound (nothing was left listening).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Following interface changes could not start.
    #[error("watch interfaces: {0}; pass .follow(false) to resolve once")]
    Watch(String),
}

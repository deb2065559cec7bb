//! [`CliError`]: why a command failed, and the exit code each cause maps to.

use meshgate_core::config::ConfigError;
use meshgate_core::registry::RegistryError;
use meshgate_core::selector::SelectorError;
use meshgate_core::source::SourceError;

use crate::gateway;

/// A command failed; each variant maps to an exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Bad selector or flag (exit 2).
    #[error(transparent)]
    Usage(#[from] SelectorError),
    /// A flag's value that cannot be used (exit 2).
    #[error("{0}")]
    BadFlag(String),
    /// Refused configuration (exit 78).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Refused configuration with a message (exit 78).
    #[error("{0}")]
    Refused(String),
    /// Nothing matched and `--fallback fail` (exit 69).
    #[error("{0}")]
    NothingMatched(String),
    /// The provider registry is broken (exit 70).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Reading interfaces failed (exit 71).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// `status`: no gateway answers on this host's loopback door (exit 3).
    #[error("{0}")]
    NoGateway(String),
    /// Anything else at run time (exit 1).
    #[error("{0}")]
    Runtime(String),
    /// Writing the answer to stdout failed (exit 74): a full disk, say.
    #[error("write to stdout: {0}")]
    Output(std::io::Error),
    /// A command that answers and still fails (`explain` with nothing to
    /// bind): the answer goes to stdout, the error to stderr, its exit code.
    #[error("{error}")]
    WithAnswer {
        /// What goes to stdout.
        answer: String,
        /// Why it fails.
        error: Box<CliError>,
    },
}

impl CliError {
    /// The process exit code for this error (the CLI contract in docs/serving.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::BadFlag(_) => 2,
            Self::NothingMatched(_) => 69,
            Self::Registry(_) => 70,
            Self::Source(_) => 71,
            Self::Config(_) | Self::Refused(_) => 78,
            Self::Runtime(_) => 1,
            Self::NoGateway(_) => 3,
            Self::Output(_) => 74,
            Self::WithAnswer { error, .. } => error.exit_code(),
        }
    }
}

impl From<gateway::Error> for CliError {
    fn from(e: gateway::Error) -> Self {
        match e {
            gateway::Error::Selector(e) => Self::Usage(e),
            gateway::Error::Refused(m) => Self::Refused(m),
            gateway::Error::NothingMatched(m) => Self::NothingMatched(m),
            gateway::Error::Registry(e) => Self::Registry(e),
            gateway::Error::Source(e) => Self::Source(e),
            gateway::Error::Bind(e) => Self::Runtime(e.to_string()),
            gateway::Error::Watch(m) => Self::Runtime(m),
        }
    }
}

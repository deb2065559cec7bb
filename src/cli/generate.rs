//! `meshgate completions SHELL` and `meshgate man`: shell completions and the
//! man page, generated from the same clap definition as the parser, so they
//! cannot drift from the flags.

use clap::CommandFactory as _;

use super::args::Cli;
use super::error::CliError;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "meshgate", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The man page, meshgate(1), in roff.
pub fn man_page() -> Result<String, CliError> {
    let mut out = Vec::new();
    // The package version only: the page must not change with each commit.
    clap_mangen::Man::new(Cli::command().version(env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .map_err(|e| CliError::Runtime(format!("render the man page: {e}")))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

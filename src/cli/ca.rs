//! `meshgate ca`: the local CA's certificate (`--tls internal`), to import
//! into browsers and devices. PEM on stdout (DER with `--der`, what phones
//! take); on stderr its SHA-256 fingerprint (to compare with what a device
//! shows before trusting it), its name constraints and where it lives. It
//! reads the same state directory as `serve` (`--state-dir`,
//! `MESHGATE_STATE_DIR`, the config file's `state_dir`, the default), never
//! makes a CA, and never reads (let alone prints) its key.

use std::io::Write as _;

use meshgate_core::config::FileConfig;

use super::args::CaArgs;
use super::error::CliError;
use super::settings::{default_config_path, state_dir_of};
use crate::tls::{running_as_root, CaCertificate};

/// Runs `meshgate ca`: the PEM to print (empty with `--der`: the DER is
/// written here, being bytes).
pub fn ca(args: &CaArgs) -> Result<String, CliError> {
    let path = args
        .config
        .clone()
        .or_else(|| default_config_path(running_as_root(), |k| std::env::var_os(k)).filter(|p| p.is_file()));
    let file = match &path {
        Some(p) => Some((p.clone(), FileConfig::load(p)?)),
        None => None,
    };
    let dir = state_dir_of(args.state_dir.as_ref(), file.as_ref().map(|(p, f)| (p.as_path(), f)))?;
    // The certificate alone: this command never reads the key.
    let ca = CaCertificate::read(&dir).map_err(|e| CliError::Refused(e.to_string()))?;
    eprintln!("SHA-256 fingerprint: {}", ca.fingerprint_sha256());
    eprintln!("name constraints: {}", ca.constraints().describe());
    eprintln!("certificate: {}", ca.path().display());
    if args.der {
        let mut out = std::io::stdout().lock();
        match out.write_all(ca.der()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(CliError::Output(e)),
            _ => return Ok(String::new()),
        }
    }
    Ok(ca.pem())
}

//! The `meshgate` binary: parse, set up logging, call the library, map errors to
//! exit codes. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use meshgate::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate: failed to start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Explain(args)) => cli::explain(&args, meshgate::core::source::system().as_ref()).await,
            Some(Command::Providers(args)) => cli::providers(&args),
            Some(Command::Serve(_)) | None => Err(cli::CliError::Runtime("serve is not built yet".into())),
        }
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshgate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

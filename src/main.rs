//! The `meshgate` binary: parse, set up logging, call the library, map errors to
//! exit codes. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use meshgate::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = !matches!(cli.command, Some(Command::Explain(_) | Command::Providers(_) | Command::Peers(_)));
    if serving {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    // explain and providers answer at once: one thread starts fastest.
    let mut builder = if serving {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate: failed to start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let source = meshgate::core::source::system();
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Explain(args)) => cli::explain(&args, source.as_ref()).await,
            Some(Command::Providers(args)) => cli::providers(&args),
            Some(Command::Peers(mut args)) => {
                // Without --bind (or a config's bind), the WireGuard interfaces.
                if args.bind.bind.is_empty() && args.bind.config.is_none() {
                    args.bind.bind = vec!["wireguard".into()];
                }
                cli::peers(&args, source.as_ref()).await
            }
            Some(Command::Serve(args)) => cli::serve(&args, source.as_ref()).await.map(|()| String::new()),
            None => cli::serve(&cli.serve, source.as_ref()).await.map(|()| String::new()),
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

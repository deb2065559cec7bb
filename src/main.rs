//! The `meshgate` binary: parse, set up logging, call the library, write the
//! answer, map errors to exit codes. Everything else lives in the library.

use std::io::Write as _;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use meshgate::cli::{self, Cli, CliError, Command};

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are answers: one that cannot be written
        // (`--help > /dev/full`) is a failure, as for every other answer.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return match write_stdout(&e.render().to_string()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            };
        }
        Err(e) => e.exit(),
    };
    if let Err(e) = cli::apply_env(&mut cli) {
        return fail(&e);
    }
    let serve_args = match &cli.command {
        Some(Command::Serve(args)) => Some(args),
        None => Some(&cli.serve),
        Some(_) => None,
    };
    // With JSON logs (a journal, a collector) the last word is a JSON line too.
    let mut json = false;
    if let Some(args) = serve_args {
        if let Err(e) = cli::init_logging(&args.log) {
            return fail(&e);
        }
        json = args.log.log_format == Some(cli::LogFormat::Json);
    }
    let fail = |e: &CliError| if json { fail_json(e) } else { fail(e) };
    // One thread: the other commands answer at once, and serve hands its
    // connections to worker threads of its own (gateway::workers).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate: failed to start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let source = meshgate::core::source::system();
    let result = runtime.block_on(async {
        match &cli.command {
            Some(Command::Explain(args)) => cli::explain(args, source.as_ref()).await,
            Some(Command::Providers(args)) => cli::providers(args),
            Some(Command::Peers(args)) => {
                // Without --bind (or a config's bind), the WireGuard interfaces.
                let mut args = args.clone();
                if args.bind.bind.is_empty() && args.bind.config.is_none() {
                    args.bind.bind = vec!["wireguard".into()];
                }
                cli::peers(&args, source.as_ref()).await
            }
            Some(Command::Status(args)) => cli::status(args).await,
            Some(Command::Completions(args)) => Ok(cli::completions(args.shell)),
            Some(Command::Man(_)) => cli::man_page(),
            Some(Command::Ca(args)) => cli::ca(args),
            Some(Command::Serve(args)) => cli::serve(args, source.as_ref()).await.map(|()| String::new()),
            None => cli::serve(&cli.serve, source.as_ref()).await.map(|()| String::new()),
        }
    });
    match result {
        Ok(text) => match write_stdout(&text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Err(CliError::WithAnswer { answer, error }) => match write_stdout(&answer) {
            Ok(()) => fail(&error),
            Err(e) => fail(&e),
        },
        Err(e) => fail(&e),
    }
}

/// Writes the answer. A reader that went away (`| head -1`) is no error:
/// it had what it wanted; any other failure (a full disk) is exit 74.
fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

/// A fatal error as one JSON record shaped like the log's, with its exit
/// code. Written directly, not through the log filter: a `--log-level off`
/// must not make the last word vanish.
fn fail_json(e: &CliError) -> ExitCode {
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    let mut timestamp = String::new();
    let _ = SystemTime.format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut timestamp));
    let record = serde_json::json!({
        "timestamp": timestamp,
        "level": "ERROR",
        "message": e.to_string(),
        "exit_code": e.exit_code(),
        "target": "meshgate",
    });
    let _ = writeln!(std::io::stderr(), "{record}");
    ExitCode::from(e.exit_code())
}

fn fail(e: &CliError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "meshgate: {e}");
    ExitCode::from(e.exit_code())
}

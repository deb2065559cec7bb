//! `meshgate serve`: settings → token → options → the library's [`Gateway`]
//! (resolution → listeners → serve until a signal, following interface changes
//! unless `--no-follow`), printing a line per listener from its events.

use std::time::Duration;

use meshgate_core::source::InterfaceSource;

use super::args::ServeArgs;
use super::error::CliError;
use super::print::{event_line, say};
use super::settings::{browser_policy, load_token, registry, serve_options, settings};
use crate::gateway::{app, shutdown_signal, Gateway, Proxy};

/// Runs `serve` until SIGINT/SIGTERM.
pub async fn run(args: &ServeArgs, source: &dyn InterfaceSource) -> Result<(), CliError> {
    let registry = registry()?;
    let settings = settings(&args.bind, registry)?;
    let file = settings.file.as_ref().map(|(p, f)| (p.as_path(), f));
    let token = load_token(args, std::env::var("MESHGATE_TOKEN").ok(), file.map(|(_, f)| f))?;
    let options = serve_options(args, file)?;
    let follow = !args.no_follow && file.and_then(|(_, f)| f.follow).unwrap_or(true);
    let stop = shutdown_signal();

    let builder = Gateway::builder()
        .selectors(settings.selectors.clone())
        .resolve_options(settings.resolve.clone())
        .token(token.clone())
        .follow(follow)
        .wait(args.wait.map(Duration::from_secs))
        .limits(options.server_limits)
        .browser_policy(browser_policy(args, file.map(|(_, f)| f)))
        .source(source)
        .on_event(|event| {
            if let Some(line) = event_line(event) {
                say(&line);
            }
        });
    let running = match options.upstream {
        Some(upstream) => {
            let proxy = Proxy::new(upstream, options.upstream_limits, token);
            tracing::info!(
                upstream = %proxy.upstream(),
                "forwarding to the upstream; meshgate's own routes are under /_meshgate/"
            );
            builder.start_upstream(proxy).await?
        }
        None => builder.open_path("/healthz").signin("").start_with(|state| app(state.clone())).await?,
    };
    running.run_until(stop).await;
    Ok(())
}

//! An existing axum app adopting meshgate: instead of binding `0.0.0.0:8080`
//! (everywhere) it listens only on the networks named in `APP_BIND`, with the
//! token rules, and follows interface changes.
//!
//! ```sh
//! cargo run --example embed                                   # loopback, port 8080
//! APP_BIND=wireguard APP_TOKEN=$(cat /etc/app/token) cargo run --example embed
//! ```

use std::process::ExitCode;

use axum::routing::get;
use axum::Router;
use meshgate::gateway::{Event, Gateway, Token};

/// The app as it was: nothing here knows about meshgate.
fn app() -> Router {
    Router::new().route("/", get(|| async { "hello from my app\n" })).route("/healthz", get(|| async { "ok\n" }))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let bind = std::env::var("APP_BIND").unwrap_or_else(|_| "loopback".into());
    let port = match std::env::var("APP_PORT").map(|p| p.parse::<u16>()) {
        Err(_) => 8080,
        Ok(Ok(p)) => p,
        Ok(Err(_)) => {
            eprintln!("embed: APP_PORT must be a port number such as 8080");
            return ExitCode::from(2);
        }
    };
    let token = match std::env::var("APP_TOKEN").ok().map(|t| Token::new(&t, "APP_TOKEN")).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("embed: {e}");
            return ExitCode::from(78);
        }
    };

    // Before: axum::serve(tokio::net::TcpListener::bind("0.0.0.0:8080").await?, app()).await
    // The library prints nothing: the app says what it wants from the events.
    let served = Gateway::builder()
        .bind(bind.split(','))
        .port(port)
        .token(token)
        .open_path("/healthz")
        .on_event(|event| match event {
            Event::Listening { listener: l, .. } => {
                println!("app: listening on {}:{} ({})", l.address, l.port, l.provider)
            }
            Event::Stopped { listener: l, .. } => println!("app: stopped listening on {}:{}", l.address, l.port),
            _ => {}
        })
        .serve(app())
        .await;

    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}

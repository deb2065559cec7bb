//! The accept loop of one TCP or TLS service's listener, and the life of
//! each connection: the cap (the connection layer's [`Admission`], as for
//! HTTP), served on the worker that accepted it, the peer's identity (the same
//! [`PeerLookup`](crate::gateway::PeerLookup) as HTTP), admission by that
//! identity before a single byte goes anywhere, the caller's share (a peer's
//! key or node over all its addresses, else its IPv4 address or IPv6 /64, as
//! for HTTP), TLS when the service terminates it, the upstream connect under
//! its timeout, the optional PROXY v2 header, then [`pipe`](super::pipe::pipe)
//! until the connection ends.
//!
//! A refused connection is closed at once: nothing is read from it, nothing
//! is connected on its behalf. It is counted and logged aggregated
//! ([`Refusals`](super::refusals::Refusals)).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};

use super::handler::{TcpHandler, TcpStats};
use super::pipe::{pipe, Ended, Socket};
use super::proxy_v2;
use super::refusals::WINDOW;
use crate::gateway::admission::Admission;
use crate::gateway::context::{AppState, ListenerCtx, Stats};
use crate::gateway::identity::PeerIdentity;
use crate::gateway::metrics::ACCESS_TARGET;
use crate::gateway::service::Target;
use crate::gateway::slots::ShareKey;

/// How long open TCP connections may go on once their listener stops (the
/// service was removed or the gateway is shutting down).
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Everything one TCP accept loop needs.
pub(crate) struct TcpListen {
    pub(crate) listener: tokio::net::TcpListener,
    pub(crate) ctx: ListenerCtx,
    /// The interface the listener's address is on (for the peer lookup).
    pub(crate) interface: Option<Arc<str>>,
    pub(crate) state: AppState,
    pub(crate) admission: Arc<Admission>,
    pub(crate) handler: Arc<TcpHandler>,
    /// Other workers accept from this listener's socket too (`workers::accept_turn`).
    pub(crate) shared: bool,
}

/// Accepts until `stop`; then open connections get [`DRAIN_GRACE`] to end.
pub(crate) async fn tcp_accept_loop(listen: TcpListen, stop: oneshot::Receiver<()>) {
    let TcpListen { listener, ctx, interface, state, admission, handler, shared } = listen;
    let connections = if ctx.loopback { &admission.loopback_connections } else { &admission.connections };
    let slots = (!ctx.loopback).then_some(&admission.slots);
    let (drain, draining) = watch::channel(false);
    let mut flush = tokio::time::interval(WINDOW);
    tokio::pin!(stop);
    loop {
        // On a worker well ahead of another, a moment for it to accept first.
        crate::gateway::workers::accept_turn(shared).await;
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            _ = flush.tick() => {
                if let Some(line) = handler.refusals.flush(Instant::now()) {
                    tracing::warn!(service = %handler.name(), "{line}");
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        TcpStats::bump(&handler.stats().accepted);
        let open = crate::gateway::workers::open();
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let _ = stream.set_nodelay(true);
        #[cfg(test)]
        crate::gateway::workers::note_accept();
        let (handler, state, interface, slots, mut draining) =
            (handler.clone(), state.clone(), interface.clone(), slots.cloned(), draining.clone());
        let task = async move {
            let _on_worker = open;
            let lookup = state.peer_lookup().cloned();
            let identity = match (&lookup, interface.as_deref()) {
                (Some(l), Some(iface)) if !ctx.loopback => l.identify(iface, peer).await,
                _ => None,
            };
            // Loopback admits as it does for HTTP; off it, the mesh decides.
            if !ctx.loopback && !handler.admits(lookup.as_ref(), identity.as_ref()) {
                TcpStats::bump(&handler.stats().refused_peer);
                if let Some(line) = handler.refusals.note(peer.ip(), Instant::now()) {
                    tracing::warn!(service = %handler.name(), "{line}");
                }
                // Closed now: nothing read, nothing connected on its behalf.
                drop(stream);
                return;
            }
            // Each caller (a peer's key or tailnet node over all its
            // addresses; without an identity, an IPv4 address or an IPv6
            // /64) gets its share of the listener's connections, as for
            // HTTP; one past it is closed at once. Admitted by the mesh
            // above, it is vouched for.
            let slot = match &slots {
                None => None,
                Some(slots) => match slots.admit(ShareKey::of(peer.ip(), identity.as_ref()), true) {
                    Some(slot) => Some(slot),
                    None => {
                        Stats::bump(&state.stats().per_address_refused);
                        TcpStats::bump(&handler.stats().refused_share);
                        tracing::debug!(%peer, service = %handler.name(), "closed a connection at once: its caller holds its share");
                        return;
                    }
                },
            };
            let _held = (permit, &slot);
            let stop = async {
                if *draining.borrow() {
                    tokio::time::sleep(DRAIN_GRACE).await;
                    return Ended::Stopped;
                }
                let _ = draining.changed().await;
                tokio::time::sleep(DRAIN_GRACE).await;
                Ended::Stopped
            };
            let revoked = revoked(&handler, &state, &lookup, identity.as_ref(), ctx.loopback);
            let stop = async {
                tokio::select! {
                    e = stop => e,
                    e = revoked => e,
                }
            };
            serve(stream, peer, ctx, identity.as_ref(), &handler, stop).await;
        };
        // Served where it was accepted (on a worker: the first free one to
        // accept it); nothing moves between threads.
        drop(tokio::spawn(task));
    }
    drop(listener);
    drop(draining);
    let _ = drain.send(true);
    drain.closed().await;
}

/// Resolves with [`Ended::Stopped`] once the peer is no longer admitted
/// (its service's access or the top-level rules changed); never on loopback.
async fn revoked(
    handler: &TcpHandler,
    state: &AppState,
    lookup: &Option<Arc<dyn crate::gateway::PeerLookup>>,
    identity: Option<&PeerIdentity>,
    loopback: bool,
) -> Ended {
    if loopback {
        return std::future::pending().await;
    }
    let mut service = handler.access_changes();
    let mut top = state.revocation();
    loop {
        tokio::select! {
            r = service.changed() => if r.is_err() { return std::future::pending().await },
            () = top.revoked() => {}
        }
        if !handler.admits(lookup.as_ref(), identity) {
            TcpStats::bump(&handler.stats().revoked);
            tracing::info!(service = %handler.name(), "closed a connection: its peer is no longer allowed");
            return Ended::Stopped;
        }
    }
}

/// One admitted connection: TLS if the service terminates it, the upstream,
/// the PROXY header, the bytes.
async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: ListenerCtx,
    identity: Option<&PeerIdentity>,
    handler: &TcpHandler,
    stop: impl std::future::Future<Output = Ended>,
) {
    match &handler.tls {
        None => to_upstream(stream, peer, ctx, identity, handler, stop).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => to_upstream(tls, peer, ctx, identity, handler, stop).await,
            Err(e) => {
                if !e.is_noise() {
                    tracing::debug!(service = %handler.name(), %peer, error = %e, "TLS handshake failed");
                }
            }
        },
    }
}

async fn to_upstream<C: Socket>(
    mut client: C,
    peer: SocketAddr,
    ctx: ListenerCtx,
    identity: Option<&PeerIdentity>,
    handler: &TcpHandler,
    stop: impl std::future::Future<Output = Ended>,
) {
    let stats = handler.stats();
    let connect = async {
        match (handler.literal_target(), handler.target()) {
            (Some(addr), _) => tokio::net::TcpStream::connect(addr).await.map(Upstream::Tcp),
            (None, Target::Tcp { host, port }) => {
                tokio::net::TcpStream::connect((host.as_str(), *port)).await.map(Upstream::Tcp)
            }
            (None, Target::Unix(path)) => tokio::net::UnixStream::connect(path).await.map(Upstream::Unix),
        }
    };
    let upstream = match tokio::time::timeout(handler.connect_timeout(), connect).await {
        Ok(Ok(u)) => u,
        failed => {
            TcpStats::bump(&stats.upstream_failed);
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer in {} s", handler.connect_timeout().as_secs_f64()),
            };
            tracing::warn!(service = %handler.name(), upstream = %handler.target(), %peer, "cannot reach the upstream: {why}; closing the client's connection");
            // Closed, not left hanging: the client sees the service is down.
            let _ = client.shutdown().await;
            return;
        }
    };
    TcpStats::bump(&stats.admitted);
    stats.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let ended = match upstream {
        Upstream::Tcp(mut u) => {
            let _ = u.set_nodelay(true);
            forward(&mut client, &mut u, peer, ctx, identity, handler, stop).await
        }
        Upstream::Unix(mut u) => forward(&mut client, &mut u, peer, ctx, identity, handler, stop).await,
    };
    stats.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let name = identity.and_then(|id| id.name.clone().or_else(|| id.login.clone()).or_else(|| id.key.clone()));
    // The access log (when on): one line per forwarded connection, naming the
    // service; refused ones are counted and logged aggregated instead.
    if tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        let (up, down) = match ended {
            Ended::Closed { up, down } => (up.to_string(), down.to_string()),
            _ => ("-".to_owned(), "-".to_owned()),
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: ACCESS_TARGET,
            service = %handler.name(),
            listener = %ctx.local,
            peer = %peer,
            identity = name.as_deref().unwrap_or("-"),
            ended = ended.as_str(),
            bytes_up = %up,
            bytes_down = %down,
            duration_ms = format_args!("{ms:.3}"),
            "tcp connection"
        );
    }
    match ended {
        Ended::Closed { up, down } => {
            stats.bytes_up.fetch_add(up, std::sync::atomic::Ordering::Relaxed);
            stats.bytes_down.fetch_add(down, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(service = %handler.name(), %peer, peer_name = name.as_deref().unwrap_or("-"), up, down, "connection closed");
        }
        Ended::Idle => {
            TcpStats::bump(&stats.idle_closed);
            tracing::debug!(service = %handler.name(), %peer, "closed an idle connection");
        }
        other => tracing::debug!(service = %handler.name(), %peer, ended = ?other, "connection ended"),
    }
}

enum Upstream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn forward<C: Socket, U: Socket>(
    client: &mut C,
    upstream: &mut U,
    peer: SocketAddr,
    ctx: ListenerCtx,
    identity: Option<&PeerIdentity>,
    handler: &TcpHandler,
    stop: impl std::future::Future<Output = Ended>,
) -> Ended {
    if handler.proxy_protocol() {
        let header = proxy_v2::header(peer, ctx.local, identity);
        if let Err(e) = upstream.write_all(&header).await {
            return Ended::Failed(e.kind());
        }
    }
    let stop = async {
        stop.await;
    };
    pipe(client, upstream, handler.idle_timeout(), stop).await
}

/// Connection-level accept errors are the client's problem; anything else
/// (out of file descriptors) gets a pause so the loop does not spin.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing for 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

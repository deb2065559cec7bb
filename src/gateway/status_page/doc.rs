//! [`StatusDoc`]: everything the status page shows, gathered once per read
//! from the gateway's state, the caller's request and the OS (the WireGuard
//! peers of the interfaces served). The HTML page renders it; `/status`
//! carries it as JSON too, and `meshgate status` prints it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;
use meshgate_core::wgpeer::{read_peers, ReadLimits, WgKind};
use meshgate_core::PublicKey;
use serde::Serialize;

use super::board::{BoardEvent, Counters, PeerRead, ServiceInfo, TailnetCaller, BUCKET_SECONDS};
use super::certinfo::{cert_info, CertInfo};
use crate::gateway::auth::token_matches;
use crate::gateway::context::{unix_now, AppState, ListenerCtx, LiveListener, LiveView};
use crate::gateway::identity::{allowed_now, PeerIdentity};
use crate::gateway::metrics::REFUSAL_CODES;
use crate::gateway::session::cookie_values;
use crate::gateway::tcp::TCP_REFUSED_PEER;

/// The TCP services' counter of connections accepted (what a TCP service's
/// `requests` on the page counts).
const TCP_ACCEPTED: &str = "tcp_accepted_total";

/// Everything the page shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusDoc {
    /// meshgate's version.
    pub version: &'static str,
    /// Seconds since the gateway started.
    pub uptime_seconds: u64,
    /// When this was gathered, seconds since the Unix epoch.
    pub now: u64,
    /// Who asked, and by what right.
    pub you: You,
    /// Each service with its listeners.
    pub services: Vec<ServiceDoc>,
    /// True when loopback stands in because nothing matched.
    pub fallback: bool,
    /// The resolver's reason for it.
    pub fallback_reason: Option<String>,
    /// Where meshgate serves, in words ("no WireGuard address: serving on loopback only").
    pub state: String,
    /// True when the state is a fallback or nothing but loopback serves.
    pub loopback_only: bool,
    /// The WireGuard interfaces served, with their peers.
    pub interfaces: Vec<InterfaceDoc>,
    /// Interfaces of meshes that name callers by login (tailnet).
    pub login_meshes: Vec<String>,
    /// The tailnet logins and tags let in without a token.
    pub allowed_logins: Vec<String>,
    /// The tailnet callers tailscaled named, most recently seen first (at
    /// most [`TAILNET_CALLERS_KEPT`](super::board::TAILNET_CALLERS_KEPT)).
    pub tailnet_callers: Vec<TailnetCaller>,
    /// The certificate served, when listeners speak TLS.
    pub certificate: Option<CertDoc>,
    /// Recent events, newest first.
    pub events: Vec<BoardEvent>,
    /// The counters behind `/metrics`.
    pub counters: CountersDoc,
    /// Responses per bar, oldest first (`null`: before the gateway started).
    pub rate: RateDoc,
}

/// The caller.
#[derive(Debug, Clone, Serialize)]
pub struct You {
    /// `loopback`, `token`, `session`, `peer` or `none`.
    pub door: &'static str,
    /// In words.
    pub words: String,
    /// The mesh's word on the caller, as `whoami` has it.
    pub identity: Option<PeerIdentity>,
    /// True when the caller is an allowed peer now.
    pub allowed: bool,
    /// The caller's address.
    pub address: Option<String>,
}

/// One service and its listeners.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceDoc {
    /// What the program said about it.
    #[serde(flatten)]
    pub info: ServiceInfo,
    /// Its listeners.
    pub listeners: Vec<LiveListener>,
    /// An HTTP service's responses sent so far (every listener), or a TCP
    /// or TLS service's connections accepted.
    pub requests: u64,
}

/// A WireGuard interface served.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceDoc {
    /// Its name, as the OS gives it.
    pub interface: String,
    /// `kernel` or `userspace`.
    pub wireguard: &'static str,
    /// Why its peers could not be read, if they could not.
    pub error: Option<String>,
    /// Its peers.
    pub peers: Vec<PeerDoc>,
}

/// One WireGuard peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerDoc {
    /// Its `[peers]` name.
    pub name: Option<String>,
    /// Its public key, base64.
    pub key: String,
    /// The first 8 characters of the key.
    pub short_key: String,
    /// True when it is let in without a token.
    pub allowed: bool,
    /// Its allowed-ips.
    pub allowed_ips: Vec<String>,
    /// Where its packets last came from.
    pub endpoint: Option<String>,
    /// Its last handshake, seconds since the Unix epoch (`None`: never).
    pub last_handshake: Option<u64>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
}

/// The certificate served.
#[derive(Debug, Clone, Serialize)]
pub struct CertDoc {
    /// Where it comes from, in words.
    pub mode: String,
    /// Names, expiry, pin.
    #[serde(flatten)]
    pub info: CertInfo,
    /// Where to download the CA certificate (internal CA).
    pub ca_url: Option<String>,
}

/// One refusal counter.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// Why, in words.
    pub reason: String,
    /// How many so far.
    pub count: u64,
}

/// The counters behind `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct CountersDoc {
    /// Responses sent.
    pub responses: u64,
    /// Client connections open now.
    pub open_connections: i64,
    /// Listeners opened since start.
    pub listener_attaches: u64,
    /// Listeners closed since start.
    pub listener_detaches: u64,
    /// Refusals by reason.
    pub refusals: Vec<Refusal>,
}

/// The request-rate history.
#[derive(Debug, Clone, Serialize)]
pub struct RateDoc {
    /// Seconds per bar.
    pub bucket_seconds: u64,
    /// Responses per bar, oldest first.
    pub buckets: Vec<Option<u64>>,
}

/// What a request says about its caller.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// The listener it came in on.
    pub ctx: Option<ListenerCtx>,
    /// Its identity, if the mesh gave one.
    pub caller: Option<&'a PeerIdentity>,
    /// Its headers (token, cookie).
    pub headers: &'a HeaderMap,
    /// Its address.
    pub peer: Option<SocketAddr>,
}

fn reason_of(code: u16) -> &'static str {
    match code {
        401 => "no token, session or allowed peer (401)",
        403 => "browser guard: another origin (403)",
        421 => "Host guard: a name not served here (421)",
        413 => "body too large (413)",
        502 => "upstream unreachable (502)",
        504 => "upstream too slow (504)",
        _ => "refused",
    }
}

/// The counters now, as the board samples them.
pub fn counters(state: &AppState) -> (Counters, CountersDoc) {
    let stats = state.stats();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let totals = stats.meter.totals();
    let mut refusals: Vec<Refusal> = REFUSAL_CODES
        .iter()
        .zip(totals.refusals)
        .map(|(&code, count)| Refusal { reason: reason_of(code).to_owned(), count })
        .collect();
    refusals.push(Refusal { reason: "sign-in refused".into(), count: get(&stats.signin_refused) });
    refusals
        .push(Refusal { reason: "address over its connection share".into(), count: get(&stats.per_address_refused) });
    if let Some(tls) = state.tls_stats() {
        let t = tls.snapshot();
        refusals.push(Refusal { reason: "TLS handshake failed".into(), count: t.failed });
        refusals.push(Refusal { reason: "not TLS on a TLS listener".into(), count: t.garbage });
    }
    // Each TCP service's connections refused for their peer (its share
    // refusals are in "address over its connection share" already).
    for (service, count) in stats.meter.service_counter(TCP_REFUSED_PEER) {
        refusals.push(Refusal { reason: format!("TCP service {service}: peer not allowed"), count });
    }
    let listeners = state.view().listeners.len() as u64;
    let detached = get(&stats.meter.detached);
    let sample = Counters {
        responses: totals.responses,
        refusals: refusals.iter().map(|r| (r.reason.clone(), r.count)).collect(),
    };
    let doc = CountersDoc {
        responses: totals.responses,
        open_connections: totals.open,
        listener_attaches: detached + listeners,
        listener_detaches: detached,
        refusals,
    };
    (sample, doc)
}

/// A selector's name as people write it.
fn mesh_name(selector: &str) -> String {
    let known = [
        ("wireguard", "WireGuard"),
        ("tailnet", "tailnet"),
        ("yggdrasil", "Yggdrasil"),
        ("zerotier", "ZeroTier"),
        ("nebula", "Nebula"),
        ("netbird", "NetBird"),
        ("netmaker", "Netmaker"),
        ("openvpn", "OpenVPN"),
        ("tinc", "tinc"),
        ("husarnet", "Husarnet"),
        ("firezone", "Firezone"),
        ("cloudflare-warp", "Cloudflare WARP"),
        ("lan", "LAN"),
    ];
    known.iter().find(|(k, _)| *k == selector).map_or_else(|| selector.to_owned(), |(_, v)| (*v).to_owned())
}

/// Where meshgate serves, in words.
pub fn state_words(view: &LiveView) -> (String, bool) {
    if view.fallback {
        let what = view
            .fallback_reason
            .as_deref()
            .and_then(|r| r.split_once(" matched nothing"))
            .map(|(what, _)| what.split(", ").map(mesh_name).collect::<Vec<_>>().join(" or "));
        let text = match what {
            Some(w) => format!("no {w} address: serving on loopback only"),
            None => "nothing matched: serving on loopback only".to_owned(),
        };
        return (text, true);
    }
    let mesh: Vec<&LiveListener> = view.listeners.iter().filter(|l| !l.listener.is_loopback()).collect();
    if view.listeners.is_empty() {
        return ("not listening".to_owned(), true);
    }
    if mesh.is_empty() {
        return ("serving on loopback only, as the bind asks".to_owned(), true);
    }
    let mut providers: Vec<String> = mesh.iter().map(|l| mesh_name(&l.listener.provider)).collect();
    providers.dedup();
    let n = mesh.len();
    (
        format!(
            "serving on {} ({n} address{}){}",
            providers.join(", "),
            if n == 1 { "" } else { "es" },
            if mesh.len() < view.listeners.len() { " and loopback" } else { "" }
        ),
        false,
    )
}

fn you(state: &AppState, asker: &Asker<'_>) -> You {
    let allowed = allowed_now(state.peer_lookup(), asker.caller);
    let token = state.credentials().is_some_and(|c| token_matches(asker.headers, c.token()));
    let session =
        state.credentials().is_some_and(|c| cookie_values(asker.headers).any(|v| c.sessions().check(v).is_ok()));
    let who = asker.caller.map(|c| {
        c.name
            .clone()
            .or_else(|| c.login.clone())
            .or_else(|| c.key.as_deref().map(|k| format!("peer {}…", &k[..k.len().min(8)])))
            .unwrap_or_else(|| "an unnamed peer".to_owned())
    });
    let (door, words) = if asker.ctx.is_some_and(|c| c.loopback) {
        ("loopback", "this host, through the loopback door (no credentials needed here)".to_owned())
    } else if allowed {
        ("peer", format!("{}, an allowed peer of {}", who.as_deref().unwrap_or("a peer"), mesh_of(asker.caller)))
    } else if token {
        ("token", format!("{}, with the bearer token", who.as_deref().unwrap_or("a caller")))
    } else if session {
        ("session", format!("{}, signed in (a session cookie)", who.as_deref().unwrap_or("a browser")))
    } else {
        ("none", "a caller without credentials".to_owned())
    };
    You { door, words, identity: asker.caller.cloned(), allowed, address: asker.peer.map(|p| p.ip().to_string()) }
}

fn mesh_of(caller: Option<&PeerIdentity>) -> String {
    caller.map_or_else(|| "the mesh".to_owned(), |c| format!("{} on {}", mesh_name(&c.mesh), c.interface))
}

/// The WireGuard peers of the interfaces `view` serves (read from the OS,
/// bounded by [`ReadLimits`]'s default, off the async threads; one read
/// answers every view for [`PEERS_FRESH`](super::board::PEERS_FRESH)).
async fn interfaces(state: &AppState, view: &LiveView) -> Vec<InterfaceDoc> {
    let mut names: Vec<String> = view
        .listeners
        .iter()
        .filter(|l| !l.listener.is_loopback())
        .filter_map(|l| l.listener.interface.clone())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Vec::new();
    }
    let board = state.status_board();
    let read = board
        .peers(&names, || async {
            board.count_peer_read();
            let Ok(snapshot) = meshgate_core::source::os().snapshot().await else { return Vec::new() };
            let wanted: Vec<_> = snapshot.interfaces.into_iter().filter(|i| names.contains(&i.name)).collect();
            tokio::task::spawn_blocking(move || {
                wanted
                    .into_iter()
                    .filter_map(|iface| {
                        let how = match WgKind::of(&iface)? {
                            WgKind::Kernel { .. } => "kernel",
                            WgKind::Userspace { .. } => "userspace",
                        };
                        let peers = read_peers(&iface, ReadLimits::default()).map_err(|e| e.to_string());
                        Some((iface.name.clone(), how, peers))
                    })
                    .collect::<PeerRead>()
            })
            .await
            .unwrap_or_default()
        })
        .await;
    let info = state.status_board().info();
    let rules = info.rules.as_ref().map(|r| r.load_full());
    let allowed = |key: &PublicKey| match &rules {
        Some(r) => r.allow.allows(key),
        None => {
            let id = PeerIdentity {
                mesh: "wireguard".into(),
                interface: String::new(),
                key: Some(key.to_base64()),
                name: None,
                login: None,
                node: None,
                tags: Vec::new(),
                allowed: false,
            };
            allowed_now(state.peer_lookup(), Some(&id))
        }
    };
    read.iter()
        .map(|(interface, wireguard, peers)| (interface.clone(), *wireguard, peers))
        .map(|(interface, wireguard, peers)| match peers {
            Err(e) => InterfaceDoc { interface, wireguard, error: Some(e.clone()), peers: Vec::new() },
            Ok(peers) => {
                let mut peers: Vec<PeerDoc> = peers
                    .iter()
                    .map(|p| {
                        let key = p.public_key.to_base64();
                        PeerDoc {
                            name: rules.as_ref().and_then(|r| r.names.name_of(&p.public_key)).map(str::to_owned),
                            short_key: key.chars().take(8).collect(),
                            allowed: allowed(&p.public_key),
                            key,
                            allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
                            endpoint: p.endpoint.map(|e| e.to_string()),
                            last_handshake: p
                                .last_handshake
                                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                                .map(|d| d.as_secs()),
                            rx_bytes: p.rx_bytes,
                            tx_bytes: p.tx_bytes,
                        }
                    })
                    .collect();
                // Named first, then by key.
                peers.sort_by(|a, b| (a.name.is_none(), &a.name, &a.key).cmp(&(b.name.is_none(), &b.name, &b.key)));
                InterfaceDoc { interface, wireguard, error: None, peers }
            }
        })
        .collect()
}

/// Gathers the document for `asker` (and samples the counters).
pub async fn gather(state: &AppState, asker: Asker<'_>) -> StatusDoc {
    let view = state.view();
    let board = state.status_board();
    let (sample, counters) = counters(state);
    board.sample(&sample);
    let info = board.info();
    let described = if info.services.is_empty() { vec![ServiceInfo::single(None)] } else { info.services.clone() };
    let meter = &state.stats().meter;
    let responses = meter.service_responses();
    let accepted: std::collections::BTreeMap<String, u64> = meter.service_counter(TCP_ACCEPTED).into_iter().collect();
    let services = described
        .into_iter()
        .map(|info| {
            // A `[[service]]`'s listeners name it (several HTTP services
            // sharing a port: "a,b"); the others are on the service's port,
            // or every one when it has none.
            let listeners = view
                .listeners
                .iter()
                .filter(|l| match &l.service {
                    Some(names) => names.split(',').any(|n| n == info.name) || info.port == Some(l.listener.port),
                    None => info.port.is_none_or(|p| p == l.listener.port),
                })
                .cloned()
                .collect();
            let counts = if info.protocol == "http" { &responses } else { &accepted };
            let requests = counts.get(&info.name).copied().unwrap_or(0);
            ServiceDoc { info, listeners, requests }
        })
        .collect();
    let (state_text, loopback_only) = state_words(&view);
    let login_meshes = {
        let mut v: Vec<String> = view
            .listeners
            .iter()
            .filter(|l| l.listener.provider == "tailnet")
            .filter_map(|l| l.listener.interface.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let allowed_logins =
        info.rules.as_ref().map(|r| r.load().allow.tailnet().iter().cloned().collect()).unwrap_or_default();
    let certificate = info.tls.as_ref().map(|t| CertDoc {
        mode: t.mode.clone(),
        info: t.resolver.as_deref().map_or(CertInfo { names: Vec::new(), not_after: None, pin: None }, cert_info),
        ca_url: t.ca_url.clone(),
    });
    StatusDoc {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.uptime().as_secs(),
        now: unix_now(),
        you: you(state, &asker),
        services,
        fallback: view.fallback,
        fallback_reason: view.fallback_reason.clone(),
        state: state_text,
        loopback_only,
        interfaces: interfaces(state, &view).await,
        login_meshes,
        allowed_logins,
        tailnet_callers: board.tailnet_callers(),
        certificate,
        events: board.events(),
        counters,
        rate: RateDoc {
            bucket_seconds: BUCKET_SECONDS,
            buckets: board.rate(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::board::EventKind;
    use super::*;

    fn view(fallback: Option<&str>, addrs: &[(&str, &str)]) -> LiveView {
        let listeners = addrs
            .iter()
            .map(|(a, provider)| LiveListener {
                listener: meshgate_core::Listener {
                    address: meshgate_core::resolver::ScopedAddr {
                        addr: a.parse().unwrap(),
                        scope_id: None,
                        scope_name: None,
                    },
                    port: 18789,
                    provider: (*provider).into(),
                    interface: None,
                    reason: "test".into(),
                    role: meshgate_core::ListenerRole::Selected,
                },
                since: 0,
                tls: false,
                url: format!("http://{a}:18789"),
                service: None,
            })
            .collect();
        LiveView { listeners, fallback: fallback.is_some(), fallback_reason: fallback.map(Into::into) }
    }

    /// Each open page polls once a second and `/status` may be polled too:
    /// however many views come at once, the OS is read once per
    /// [`PEERS_FRESH`](super::super::board::PEERS_FRESH), and again at once
    /// when the interfaces served change.
    #[tokio::test]
    async fn views_share_one_read_of_the_peers() {
        let state = AppState::new(None);
        let mut v = view(None, &[("10.8.0.1", "wireguard"), ("127.0.0.1", "loopback")]);
        v.listeners[0].listener.interface = Some("wg-nowhere0".into());
        state.publish(v.clone());
        let headers = HeaderMap::new();
        let asker = Asker { ctx: None, caller: None, headers: &headers, peer: None };
        let views = (0..20).map(|_| gather(&state, asker));
        futures_util::future::join_all(views).await;
        for _ in 0..5 {
            gather(&state, asker).await;
        }
        assert_eq!(state.status_board().peer_reads(), 1, "25 views within a second");
        // Another interface served: read at once.
        v.listeners[0].listener.interface = Some("wg-nowhere1".into());
        state.publish(v);
        gather(&state, asker).await;
        assert_eq!(state.status_board().peer_reads(), 2);
        // And again once the last read is a second old.
        tokio::time::sleep(super::super::board::PEERS_FRESH).await;
        gather(&state, asker).await;
        assert_eq!(state.status_board().peer_reads(), 3);
    }

    /// A TCP service's refused connections are among the page's refusals by
    /// reason, named by service, and an event once they grow.
    #[test]
    fn tcp_services_refusals_are_events() {
        use crate::gateway::metrics::ServiceCounters;
        use crate::gateway::tcp::TcpStats;
        let state = AppState::new(None);
        let stats = std::sync::Arc::new(TcpStats::default());
        let read = stats.clone();
        state.stats().meter.add_service("postgres", ServiceCounters(Box::new(move || read.values().to_vec())));
        let (sample, doc) = counters(&state);
        state.status_board().sample(&sample);
        let reason = "TCP service postgres: peer not allowed";
        assert!(doc.refusals.iter().any(|r| r.reason == reason && r.count == 0), "{:?}", doc.refusals);
        assert!(state.status_board().events().is_empty());
        for _ in 0..3 {
            TcpStats::bump(&stats.refused_peer);
        }
        let (sample, _) = counters(&state);
        state.status_board().sample(&sample);
        let events = state.status_board().events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!((events[0].kind, events[0].text.as_str(), events[0].count), (EventKind::Refused, reason, 3));
    }

    #[test]
    fn the_state_is_said_in_words() {
        let v = view(
            Some("wireguard matched nothing on this host; serving on loopback only"),
            &[("127.0.0.1", "loopback")],
        );
        assert_eq!(state_words(&v), ("no WireGuard address: serving on loopback only".to_owned(), true));
        let v = view(Some("wireguard, tailnet matched nothing on this host; serving on loopback only"), &[]);
        assert_eq!(state_words(&v).0, "no WireGuard or tailnet address: serving on loopback only");
        let v = view(None, &[("10.8.0.1", "wireguard"), ("127.0.0.1", "loopback")]);
        assert_eq!(state_words(&v), ("serving on WireGuard (1 address) and loopback".to_owned(), false));
        let v = view(None, &[("127.0.0.1", "loopback")]);
        assert_eq!(state_words(&v), ("serving on loopback only, as the bind asks".to_owned(), true));
    }
}

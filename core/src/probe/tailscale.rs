//! tailscaled's local API: this node's tailnet addresses, DNS name and state
//! (`GET /localapi/v0/status`), who is behind a tailnet address
//! (`GET /localapi/v0/whois`), and this node's `*.ts.net` certificate
//! (`GET /localapi/v0/cert/DOMAIN?type=pair`, for `--tls tailscale`).
//!
//! The socket is `/var/run/tailscale/tailscaled.sock` unless
//! `MESHGATE_TAILSCALED_SOCKET` names another (tests run a stand-in there).
//! The JSON shapes are those of tailscale's `ipnstate.Status` and
//! `apitype.WhoIsResponse`, as its `client/local` package returns them.
//!
//! The client is a plain HTTP/1.0 GET: one request per connection, the reply
//! read to the end (Go's server neither chunks nor keeps an HTTP/1.0
//! connection alive), which is all two GETs need and keeps hyper out of the core.
//!
//! Tailscale's own addresses outside the tailnet, 100.100.100.100 (MagicDNS)
//! and 100.115.92.0/23 (ChromeOS), are never reported as this node's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{holder_of, Probe, ProbeError, ProbeInfo};
use crate::fact::{DaemonFact, DaemonState};
use crate::model::Snapshot;

/// Where tailscaled listens by default.
pub const TAILSCALED_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";
/// The environment variable that names another socket.
pub const SOCKET_ENV: &str = "MESHGATE_TAILSCALED_SOCKET";
/// Where the facts come from, for reasons.
pub const SOURCE: &str = "tailscaled's local API";
/// The largest reply read (a status with thousands of peers stays below it).
const MAX_REPLY: u64 = 16 << 20;

/// The socket to ask: `MESHGATE_TAILSCALED_SOCKET`, else the default.
pub fn socket_path() -> PathBuf {
    // Empty is unset, as for every MESHGATE_* variable.
    std::env::var_os(SOCKET_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| TAILSCALED_SOCKET.into())
}

/// True for Tailscale's addresses that are never this node's tailnet address:
/// 100.100.100.100 (the MagicDNS resolver) and 100.115.92.0/23 (ChromeOS).
pub fn is_tailscale_service_address(addr: IpAddr) -> bool {
    const CHROMEOS: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 115, 92, 0), 23) {
        Ok(n) => n,
        Err(_) => unreachable!(),
    };
    match addr {
        IpAddr::V4(a) => a == Ipv4Addr::new(100, 100, 100, 100) || CHROMEOS.contains(&a),
        IpAddr::V6(_) => false,
    }
}

/// The part of `ipnstate.Status` meshgate reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    #[serde(default)]
    backend_state: String,
    /// False in userspace-networking mode (`tailscaled --tun=userspace-networking`).
    #[serde(rename = "TUN", default = "yes")]
    tun: bool,
    #[serde(rename = "Self", default)]
    self_: Option<PeerStatus>,
    #[serde(rename = "TailscaleIPs", default)]
    tailscale_ips: Option<Vec<IpAddr>>,
    /// The names tailscaled can get certificates for; empty (or absent) when
    /// the tailnet has HTTPS certificates turned off.
    #[serde(default)]
    cert_domains: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PeerStatus {
    #[serde(rename = "DNSName", default)]
    dns_name: String,
    #[serde(rename = "TailscaleIPs", default)]
    tailscale_ips: Option<Vec<IpAddr>>,
}

/// Who is behind a tailnet address, as tailscaled knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TailnetPeer {
    /// The user's login (`user@example.com`; `tagged-devices` for tagged nodes).
    pub login_name: String,
    /// The user's display name.
    pub display_name: String,
    /// The node's name (`laptop.tail1234.ts.net`, without the final dot).
    pub node_name: String,
    /// The node's ACL tags (`tag:server`).
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WhoIs {
    node: Option<WhoIsNode>,
    user_profile: Option<WhoIsUser>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WhoIsNode {
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WhoIsUser {
    #[serde(default)]
    login_name: String,
    #[serde(default)]
    display_name: String,
}

/// One GET on the local API; the body of a 200 reply.
async fn get(socket: &Path, path_and_query: &str) -> Result<Vec<u8>, ProbeError> {
    let what = format!("{SOURCE} at {}", socket.display());
    let io = |source| ProbeError::Io { what: what.clone(), source };
    let mut stream = tokio::net::UnixStream::connect(socket).await.map_err(io)?;
    // tailscaled checks Host against its own name to refuse DNS-rebinding attacks.
    let req =
        format!("GET {path_and_query} HTTP/1.0\r\nHost: local-tailscaled.sock\r\nAccept: application/json\r\n\r\n");
    stream.write_all(req.as_bytes()).await.map_err(io)?;
    let mut reply = Vec::new();
    stream.take(MAX_REPLY).read_to_end(&mut reply).await.map_err(io)?;
    let proto = |detail: String| ProbeError::Protocol { what: what.clone(), detail };
    let split =
        reply.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| proto("no HTTP header in the reply".into()))?;
    let head = String::from_utf8_lossy(&reply[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    let body = reply[split + 4..].to_vec();
    if code != "200" {
        let text = String::from_utf8_lossy(&body);
        return Err(proto(format!("GET {path_and_query} answered {status_line:?}: {}", text.trim())));
    }
    Ok(body)
}

fn state(backend: &str) -> DaemonState {
    match backend {
        "Running" => DaemonState::Running,
        "Starting" | "NoState" => DaemonState::Starting,
        "NeedsLogin" | "NeedsMachineAuth" => DaemonState::NeedsLogin,
        "Stopped" => DaemonState::Stopped,
        _ => DaemonState::Unknown,
    }
}

/// Asks tailscaled at `socket` for this node's status, as a fact. The interface
/// is the snapshot's holder of a tailnet address (tailscaled does not name it).
pub async fn status_at(socket: &Path, snapshot: &Snapshot) -> Result<DaemonFact, ProbeError> {
    let body = get(socket, "/localapi/v0/status?peers=false").await?;
    let status: Status = serde_json::from_slice(&body).map_err(|e| ProbeError::Protocol {
        what: format!("{SOURCE} at {}", socket.display()),
        detail: format!("status is not the JSON of ipnstate.Status: {e}"),
    })?;
    let ips = status
        .self_
        .as_ref()
        .and_then(|s| s.tailscale_ips.clone())
        .or(status.tailscale_ips.clone())
        .unwrap_or_default();
    let mut fact = DaemonFact::new("tailscale", SOURCE, state(&status.backend_state));
    fact.addresses = ips.into_iter().filter(|a| !is_tailscale_service_address(*a)).collect();
    fact.dns_name =
        status.self_.as_ref().map(|s| s.dns_name.trim_end_matches('.').to_owned()).filter(|n| !n.is_empty());
    fact.userspace = !status.tun;
    fact.interface = fact.addresses.iter().find_map(|a| holder_of(snapshot, *a)).map(|i| i.name.clone());
    if !matches!(status.backend_state.as_str(), "Running" | "Starting" | "NeedsLogin" | "Stopped") {
        fact.detail = Some(format!("BackendState={}", status.backend_state));
    }
    Ok(fact)
}

/// Who is behind `addr` (a tailnet peer's IP and source port), asking the
/// tailscaled at [`socket_path`]. Bounded by `limit`.
pub async fn whois(addr: SocketAddr, limit: Duration) -> Result<TailnetPeer, ProbeError> {
    whois_at(&socket_path(), addr, limit).await
}

/// [`whois`], asking the tailscaled at `socket`.
pub async fn whois_at(socket: &Path, addr: SocketAddr, limit: Duration) -> Result<TailnetPeer, ProbeError> {
    let what = format!("{SOURCE} at {}", socket.display());
    // A SocketAddr prints as `1.2.3.4:5` or `[fd7a::1]:5`: both are safe in a query.
    let path = format!("/localapi/v0/whois?addr={addr}");
    let body = match tokio::time::timeout(limit, get(socket, &path)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ProbeError::Io {
                what,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {limit:?}")),
            })
        }
    };
    let w: WhoIs = serde_json::from_slice(&body).map_err(|e| ProbeError::Protocol {
        what: what.clone(),
        detail: format!("whois is not the JSON of apitype.WhoIsResponse: {e}"),
    })?;
    let node = w.node.ok_or_else(|| ProbeError::Protocol { what, detail: format!("whois {addr}: no Node") })?;
    let user = w.user_profile.unwrap_or(WhoIsUser { login_name: String::new(), display_name: String::new() });
    Ok(TailnetPeer {
        login_name: user.login_name,
        display_name: user.display_name,
        node_name: node.name.trim_end_matches('.').to_owned(),
        tags: node.tags.unwrap_or_default(),
    })
}

/// What tailscaled says about this node's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDomains {
    /// `BackendState` (`Running`, `NeedsLogin`...).
    pub backend_state: String,
    /// This node's DNS name, without the final dot.
    pub dns_name: Option<String>,
    /// The names it can get a certificate for (`CertDomains`); empty when the
    /// tailnet has HTTPS certificates turned off.
    pub domains: Vec<String>,
}

/// Asks the tailscaled at `socket` which names it can get certificates for.
pub async fn cert_domains_at(socket: &Path, limit: Duration) -> Result<CertDomains, ProbeError> {
    let what = format!("{SOURCE} at {}", socket.display());
    let body = bounded(limit, &what, get(socket, "/localapi/v0/status?peers=false")).await?;
    let status: Status = serde_json::from_slice(&body).map_err(|e| ProbeError::Protocol {
        what,
        detail: format!("status is not the JSON of ipnstate.Status: {e}"),
    })?;
    Ok(CertDomains {
        backend_state: status.backend_state,
        dns_name: status.self_.map(|s| s.dns_name.trim_end_matches('.').to_owned()).filter(|n| !n.is_empty()),
        domains: status
            .cert_domains
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.trim_end_matches('.').to_owned())
            .collect(),
    })
}

/// Asks the tailscaled at `socket` for the certificate of `domain` in the
/// pair form: the PEM private key, then the PEM certificate chain, in one
/// body. tailscaled gets it from Let's Encrypt the first time (which can take
/// a minute) and renews it itself; it answers from its cache after that.
pub async fn cert_pair_at(socket: &Path, domain: &str, limit: Duration) -> Result<Vec<u8>, ProbeError> {
    let what = format!("{SOURCE} at {}", socket.display());
    let name_ok = !domain.is_empty()
        && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !domain.starts_with('.');
    if !name_ok {
        return Err(ProbeError::Protocol {
            what,
            detail: format!("{domain:?} is not a DNS name to ask a certificate for"),
        });
    }
    bounded(limit, &what, get(socket, &format!("/localapi/v0/cert/{domain}?type=pair"))).await
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(ProbeError::Io {
            what: what.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {limit:?}")),
        })
    })
}

/// The tailscaled probe.
#[derive(Debug, Clone)]
pub struct TailscaleProbe {
    socket: PathBuf,
}

impl TailscaleProbe {
    /// Asks the tailscaled at `socket`.
    pub fn at(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into() }
    }
}

#[async_trait::async_trait]
impl Probe for TailscaleProbe {
    fn info(&self) -> ProbeInfo {
        ProbeInfo { name: "tailscaled", source: SOURCE }
    }

    async fn probe(&self, snapshot: &Snapshot) -> Result<Vec<DaemonFact>, ProbeError> {
        // No socket, no tailscaled: one failed stat.
        if std::fs::symlink_metadata(&self.socket).is_err() {
            return Ok(Vec::new());
        }
        Ok(vec![status_at(&self.socket, snapshot).await?])
    }
}

fn build() -> Box<dyn Probe> {
    Box::new(TailscaleProbe::at(socket_path()))
}

crate::register_probe!("tailscaled", build);

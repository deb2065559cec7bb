//! [`Service`]: the unit a person configures. A name, a port, a protocol
//! (`http`, `tcp`, `tls`), an upstream, the bind it listens on and who may
//! use it. The config file's `[[service]]` tables, `serve --tcp` and the
//! library's [`GatewayBuilder::service`](super::GatewayBuilder::service) all
//! fill in this one type; the top-level single-upstream settings are the
//! shorthand for one HTTP service.
//!
//! It lives low in the gateway (it imports only the proxy's [`Upstream`], the
//! top-level service's name from `metrics.rs`,
//! the TLS acceptor and the core's allow-list), so that the listener set,
//! the TCP forwarder and the builder all read it without reading each other.
//!
//! The one rule this module guarantees ([`Service::check_exposure`]): a TCP
//! or TLS service that can listen off loopback admits by peer identity only,
//! so without an allow-list (its own or the top level's) it is refused at
//! start, naming the service. `allow_peers = ["*"]` is the explicit opt-in
//! for meshes that prove membership but name no peer (ZeroTier, Nebula).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshgate_core::wgpeer::{AllowList, PublicKey};
use meshgate_core::{Resolution, ResolveOptions, Selector};

use super::identity::PeerIdentity;
use super::identity::PeerLookup;
use super::proxy::{Upstream, UpstreamLimits};
use crate::tls::TlsAcceptor;

/// How long a TCP service waits for its upstream to accept a connection.
pub const DEFAULT_TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TCP connection may carry nothing either way before it is
/// closed (an hour: SSH and database sessions sit idle for long stretches;
/// a keep-alive at either end keeps one open longer).
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a service speaks towards its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP: token, session or allowed peer; the HTTP stack.
    Http,
    /// Plain TCP, admitted by peer identity at accept, forwarded byte for byte.
    Tcp,
    /// TLS terminated here, then plain TCP to the upstream.
    Tls,
}

impl Protocol {
    /// `http`, `tcp` or `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// True for the protocols the TCP forwarder serves.
    pub fn is_stream(self) -> bool {
        matches!(self, Self::Tcp | Self::Tls)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a TCP or TLS service forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// `tcp://HOST:PORT` (a name is looked up at each connect).
    Tcp {
        /// The host (an IP literal or a name).
        host: String,
        /// The port.
        port: u16,
    },
    /// `unix:/path` (a Unix stream socket).
    Unix(PathBuf),
}

impl Target {
    /// Parses `tcp://HOST:PORT` (`[v6]:PORT` for IPv6) or `unix:/path`.
    pub fn parse(value: &str) -> Result<Self, ServiceError> {
        let bad = |why: &str| ServiceError::Upstream {
            value: value.to_owned(),
            detail: format!("{why}; expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:5432) or unix:/PATH"),
        };
        if let Some(path) = value.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(bad("a Unix socket path must be absolute"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let Some(rest) = value.strip_prefix("tcp://") else { return Err(bad("unknown scheme")) };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return Err(bad("no host"));
        }
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| bad("the port is not 1 to 65535"))?;
        Ok(Self::Tcp { host: host.to_owned(), port })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Who may use a service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAccess {
    /// The top level's allow-list (`allow_peers`, `--allow-peer`).
    #[default]
    Inherit,
    /// These peers (WireGuard keys, tailnet logins and tags).
    Peers(AllowList),
    /// Every peer of the mesh (`allow_peers = ["*"]`): for meshes that prove
    /// membership but give meshgate no per-peer identity.
    AnyPeer,
}

impl PeerAccess {
    /// Whether this access admits `identity` (`None`: the mesh named no
    /// peer). `inherited` answers for [`PeerAccess::Inherit`].
    pub fn admits(&self, identity: Option<&PeerIdentity>, inherited: impl FnOnce(&PeerIdentity) -> bool) -> bool {
        match self {
            Self::AnyPeer => true,
            Self::Inherit => identity.is_some_and(inherited),
            Self::Peers(list) => identity.is_some_and(|id| list_admits(list, id)),
        }
    }
}

/// Whether `list` names `id` (its WireGuard key, tailnet login or a tag).
pub fn list_admits(list: &AllowList, id: &PeerIdentity) -> bool {
    let by_key = id.key.as_deref().and_then(|k| k.parse::<PublicKey>().ok()).is_some_and(|k| list.allows(&k));
    by_key || id.login.as_deref().is_some_and(|login| list.allows_tailnet(login, &id.tags))
}

/// A service's model: what `[[service]]` says, resolved.
#[derive(Clone)]
pub struct Service {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) protocol: Protocol,
    /// The HTTP upstream (HTTP services).
    pub(crate) http: Option<Upstream>,
    /// The TCP target (TCP and TLS services).
    pub(crate) target: Option<Target>,
    /// The bind selectors; `None`: the gateway's.
    pub(crate) bind: Option<Vec<String>>,
    pub(crate) access: PeerAccess,
    pub(crate) path: Option<String>,
    pub(crate) proxy_protocol: bool,
    pub(crate) tls: Option<Arc<TlsAcceptor>>,
    /// HTTP: plain HTTP even when the gateway serves HTTPS (`tls = false`).
    pub(crate) plain: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: Option<usize>,
    pub(crate) upstream_limits: UpstreamLimits,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("upstream", &self.upstream_text())
            .field("bind", &self.bind)
            .field("access", &self.access)
            .field("path", &self.path)
            .field("proxy_protocol", &self.proxy_protocol)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A service that cannot be made as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The upstream does not parse.
    #[error("upstream {value:?}: {detail}")]
    Upstream {
        /// As given.
        value: String,
        /// What is wrong and what is expected.
        detail: String,
    },
    /// A service name that cannot be a metric label.
    #[error("service name {0:?}: expected 1 to 63 letters, digits, '.', '_' or '-'")]
    Name(String),
    /// The top-level service's name, taken by a `[[service]]`.
    #[error("service name {0:?} is the top-level service's (in /metrics, the access log and /status); give this service another name")]
    Reserved(String),
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    if name == super::metrics::TOP_SERVICE {
        return Err(ServiceError::Reserved(name.to_owned()));
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Name(name.to_owned()))
    }
}

impl Service {
    fn base(name: &str, port: u16, protocol: Protocol) -> Result<Self, ServiceError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            port,
            protocol,
            http: None,
            target: None,
            bind: None,
            access: PeerAccess::Inherit,
            path: None,
            proxy_protocol: false,
            tls: None,
            plain: false,
            connect_timeout: DEFAULT_TCP_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
            max_connections: None,
            upstream_limits: UpstreamLimits::default(),
        })
    }

    /// An HTTP service in front of `upstream` (`http://HOST:PORT` or `unix:/path`).
    pub fn http(name: &str, port: u16, upstream: Upstream) -> Result<Self, ServiceError> {
        let mut s = Self::base(name, port, Protocol::Http)?;
        s.http = Some(upstream);
        Ok(s)
    }

    /// A TCP service forwarding to `upstream` (`tcp://HOST:PORT` or `unix:/path`).
    pub fn tcp(name: &str, port: u16, upstream: &str) -> Result<Self, ServiceError> {
        let mut s = Self::base(name, port, Protocol::Tcp)?;
        s.target = Some(Target::parse(upstream)?);
        Ok(s)
    }

    /// A TLS service: TLS terminated with `acceptor`, plain TCP to `upstream`.
    pub fn tls(name: &str, port: u16, upstream: &str, acceptor: Arc<TlsAcceptor>) -> Result<Self, ServiceError> {
        let mut s = Self::tcp(name, port, upstream)?;
        s.protocol = Protocol::Tls;
        s.tls = Some(acceptor);
        Ok(s)
    }

    /// Listens where these selectors say (default: the gateway's bind).
    #[must_use]
    pub fn bind<S: Into<String>>(mut self, selectors: impl IntoIterator<Item = S>) -> Self {
        self.bind = Some(selectors.into_iter().map(Into::into).collect());
        self
    }

    /// Who may use it (default: the top level's allow-list).
    #[must_use]
    pub fn access(mut self, access: PeerAccess) -> Self {
        self.access = access;
        self
    }

    /// For HTTP: serve under this path prefix (several HTTP services share a port).
    #[must_use]
    pub fn path(mut self, prefix: impl Into<String>) -> Self {
        self.path = Some(prefix.into());
        self
    }

    /// For TCP and TLS: send a PROXY protocol v2 header to the upstream first.
    #[must_use]
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// For HTTP: serve HTTPS with this acceptor on the mesh listeners.
    #[must_use]
    pub fn with_tls(mut self, acceptor: Arc<TlsAcceptor>) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// For HTTP: plain HTTP on every listener, even when the gateway serves
    /// HTTPS (`tls = false`).
    #[must_use]
    pub fn without_tls(mut self) -> Self {
        self.plain = true;
        self.tls = None;
        self
    }

    /// How long to wait for the upstream to accept a connection.
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long a TCP connection may carry nothing before it is closed.
    #[must_use]
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// This service's own cap on open connections.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n.max(1));
        self
    }

    /// For HTTP: the upstream's timeouts and body cap.
    #[must_use]
    pub fn upstream_limits(mut self, limits: UpstreamLimits) -> Self {
        self.upstream_limits = limits;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Who may use it.
    pub fn peer_access(&self) -> &PeerAccess {
        &self.access
    }

    /// Its bind selectors, when it has its own.
    pub fn bind_selectors(&self) -> Option<&[String]> {
        self.bind.as_deref()
    }

    /// Its path prefix (HTTP).
    pub fn path_prefix(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// True when it sends a PROXY protocol v2 header.
    pub fn sends_proxy_protocol(&self) -> bool {
        self.proxy_protocol
    }

    /// The TCP target (TCP and TLS services).
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// Its upstream as written.
    pub fn upstream_text(&self) -> String {
        match (&self.http, &self.target) {
            (Some(u), _) => u.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => String::new(),
        }
    }

    /// Everything but its access, as text: two services with the same
    /// fingerprint run the same way (a reload keeps such a one running).
    pub(crate) fn fingerprint(&self) -> String {
        format!(
            "{} {} {} {} {:?} {:?} {} {} {:?} {:?} {:?} {:?}",
            self.name,
            self.port,
            self.protocol,
            self.upstream_text(),
            self.bind,
            self.path,
            self.proxy_protocol,
            self.tls.is_some() || self.plain,
            self.connect_timeout,
            self.idle_timeout,
            self.max_connections,
            self.upstream_limits,
        )
    }

    /// The resolver options this service listens with: the gateway's, on its
    /// own port. A TCP or TLS service gets no loopback companion: whoever is
    /// on the host reaches its upstream directly, and the companion would
    /// take the very loopback port an upstream such as PostgreSQL listens on.
    pub fn resolve_options(&self, base: &ResolveOptions) -> ResolveOptions {
        let mut options = base.clone();
        options.port = self.port;
        if self.protocol.is_stream() {
            options.loopback_companion = false;
        }
        options
    }

    /// What it listens on for `res`: a TCP or TLS service has no loopback
    /// fallback either (for the same reason as [`resolve_options`](Self::resolve_options)):
    /// while its bind matches nothing it listens nowhere and waits, and
    /// follow attaches its addresses when they come.
    pub fn settle(&self, mut res: Resolution) -> Resolution {
        if self.protocol.is_stream() && res.fallback {
            res.listeners.clear();
            if let Some(why) = &mut res.fallback_reason {
                *why = format!(
                    "{}; a {} service has no loopback fallback: it listens nowhere until its bind matches",
                    why.replace("; serving on loopback only", ""),
                    self.protocol
                );
            }
        }
        res
    }

    /// Fail closed: a TCP or TLS service that can listen off loopback (its
    /// `selectors`) admits only by peer identity, so it needs an allow-list,
    /// its own or the top level's (`top_level_allows`), or the explicit
    /// `["*"]`. The error names the service and the fix.
    pub fn check_exposure(&self, selectors: &[Selector], top_level_allows: bool) -> Result<(), String> {
        if !self.protocol.is_stream() || selectors.iter().all(loopback_only) {
            return Ok(());
        }
        let guarded = match &self.access {
            PeerAccess::AnyPeer => true,
            PeerAccess::Peers(list) => !list.is_empty(),
            PeerAccess::Inherit => top_level_allows,
        };
        if guarded {
            return Ok(());
        }
        let bind: Vec<String> = selectors.iter().map(ToString::to_string).collect();
        Err(format!(
            "refusing to start {} service {:?} on --bind {} (port {}) with no allow-list: a {} service admits by peer identity only; set allow_peers = [\"NAME\", ...] in its [[service]] table (or the top-level allow_peers / --allow-peer), allow_peers = [\"*\"] to admit every peer of the mesh, or bind = [\"loopback\"]",
            self.protocol,
            self.name,
            bind.join(","),
            self.port,
            self.protocol,
        ))
    }
}

/// The gateway's peer lookup seen through one service's access: the same
/// identities, but "allowed" means allowed on this service. An HTTP service
/// with its own `allow_peers` reads its callers through one.
#[derive(Debug)]
pub(crate) struct ServicePeers {
    pub(crate) inner: Arc<dyn PeerLookup>,
    pub(crate) access: arc_swap::ArcSwap<PeerAccess>,
}

impl PeerLookup for ServicePeers {
    fn identify<'a>(
        &'a self,
        interface: &'a str,
        peer: std::net::SocketAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<PeerIdentity>> + Send + 'a>> {
        Box::pin(async move {
            let mut id = self.inner.identify(interface, peer).await?;
            id.allowed = self.allows(&id).unwrap_or(false);
            Some(id)
        })
    }

    fn observe(&self, snapshot: &meshgate_core::Snapshot) {
        self.inner.observe(snapshot);
    }

    fn allows(&self, identity: &PeerIdentity) -> Option<bool> {
        let inner = &self.inner;
        Some(self.access.load().admits(Some(identity), |id| inner.allows(id).unwrap_or(id.allowed)))
    }
}

/// True when a selector can only ever yield loopback addresses.
pub(crate) fn loopback_only(s: &Selector) -> bool {
    match s {
        Selector::Provider(p) => p == "loopback",
        Selector::Ip(ip) => ip.addr.is_loopback(),
        Selector::Cidr(net) => net.network().is_loopback() && net.broadcast().is_loopback(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_core::wgpeer::PeerNames;

    const LAPTOP: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn sel(s: &str) -> Selector {
        meshgate_core::parse_selectors(&[s.to_owned()], &["loopback", "wireguard"], None).unwrap().remove(0)
    }

    #[test]
    fn targets_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(
            Target::parse("tcp://127.0.0.1:5432").unwrap(),
            Target::Tcp { host: "127.0.0.1".into(), port: 5432 }
        );
        assert_eq!(Target::parse("tcp://[::1]:22").unwrap(), Target::Tcp { host: "::1".into(), port: 22 });
        assert_eq!(Target::parse("tcp://db.internal:5432").unwrap().to_string(), "tcp://db.internal:5432");
        assert_eq!(Target::parse("unix:/run/pg.sock").unwrap(), Target::Unix("/run/pg.sock".into()));
        for bad in ["http://h:1", "tcp://h", "tcp://:1", "tcp://h:0", "tcp://h:99999", "unix:rel.sock", "h:1"] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("tcp://HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn a_stream_service_off_loopback_without_an_allow_list_is_refused_naming_it() {
        let pg = Service::tcp("postgres", 5432, "tcp://127.0.0.1:5432").unwrap();
        let e = pg.check_exposure(&[sel("wireguard")], false).unwrap_err();
        assert!(e.contains("\"postgres\"") && e.contains("allow_peers") && e.contains("port 5432"), "{e}");
        // Loopback only: nothing to guard.
        pg.check_exposure(&[sel("loopback"), sel("127.0.0.1")], false).unwrap();
        // The top level's list, its own, or the explicit "*".
        pg.check_exposure(&[sel("wireguard")], true).unwrap();
        let list = AllowList::resolve(&PeerNames::default(), [LAPTOP]).unwrap();
        pg.clone().access(PeerAccess::Peers(list)).check_exposure(&[sel("wireguard")], false).unwrap();
        pg.clone().access(PeerAccess::AnyPeer).check_exposure(&[sel("wireguard")], false).unwrap();
        // Its own empty list does not fall back to the top level's.
        let e = pg.access(PeerAccess::Peers(AllowList::default())).check_exposure(&[sel("wireguard")], true);
        assert!(e.is_err());
        // HTTP services have tokens and sessions: check_auth guards them.
        let web = Service::http("web", 80, Upstream::parse("http://127.0.0.1:3000").unwrap()).unwrap();
        web.check_exposure(&[sel("wireguard")], false).unwrap();
    }

    #[test]
    fn access_admits_by_key_login_or_tag_and_any_peer_admits_the_unnamed() {
        let id = |key: Option<&str>, login: Option<&str>, tags: &[&str]| PeerIdentity {
            mesh: "wireguard".into(),
            interface: "wg0".into(),
            key: key.map(Into::into),
            name: None,
            login: login.map(Into::into),
            node: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            allowed: false,
        };
        let list = AllowList::resolve(&PeerNames::default(), [LAPTOP, "ana@example.com", "tag:db"]).unwrap();
        let access = PeerAccess::Peers(list);
        assert!(access.admits(Some(&id(Some(LAPTOP), None, &[])), |_| false));
        assert!(access.admits(Some(&id(None, Some("ana@example.com"), &[])), |_| false));
        assert!(access.admits(Some(&id(None, Some("tagged-devices"), &["tag:db"])), |_| false));
        assert!(!access.admits(Some(&id(Some("mHTSkbvrIvHEdTJRgS6xCqCSw4p0jrEj+0E8BFl6iG8="), None, &[])), |_| true));
        assert!(!access.admits(None, |_| true));
        assert!(PeerAccess::AnyPeer.admits(None, |_| false));
        assert!(PeerAccess::Inherit.admits(Some(&id(None, None, &[])), |_| true));
        assert!(!PeerAccess::Inherit.admits(None, |_| true));
        assert!(Service::tcp("bad name", 1, "tcp://h:1").is_err());
        // The top-level service's name is its own: metrics would count two as one.
        let e = Service::tcp("meshgate", 1, "tcp://h:1").unwrap_err().to_string();
        assert!(e.contains("\"meshgate\"") && e.contains("another name"), "{e}");
    }
}

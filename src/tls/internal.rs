//! `--tls internal`: short-lived leaves from the local CA ([`super::LocalCa`])
//! for every address and name served, renewed while serving.
//!
//! [`Internal::open`] makes (or reads) the CA and issues the first leaf; the
//! listener set asks for each new address ([`AddressNames::ensure_names`]) and
//! [`Internal::spawn_renewal`] reissues before the leaf's end. Each leaf has a
//! fresh key that never leaves memory. A reissued leaf goes into the
//! [`CertResolver`]: handshakes from then on get it, open connections keep
//! theirs, nothing restarts. An address the CA may not sign for (outside its
//! name constraints) is left out of the leaf with a warning: naming it would
//! make every client refuse the whole leaf.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::ca::{Constraints, LocalCa};
use super::error::TlsError;
use super::resolver::{AddressNames, CertResolver};

/// How long a leaf is valid: a week (browsers never see a leaf near the
/// 398-day limit, and a leaked leaf key is worth little for long).
pub const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// For tests only: a leaf lifetime in seconds (at least 10) instead of a week.
pub const LEAF_LIFETIME_ENV: &str = "MESHGATE_TEST_LEAF_SECONDS";
/// Renewal checks at least this often (wall-clock time moves on in a suspend).
const MAX_NAP: Duration = Duration::from_secs(60);
/// After a failed renewal, the next try.
const RETRY: Duration = Duration::from_secs(10);

/// The leaf lifetime: [`LEAF_LIFETIME`], or [`LEAF_LIFETIME_ENV`] when set
/// (from `env`, a parameter for tests).
pub fn leaf_lifetime_from(env: Option<std::ffi::OsString>) -> Result<Duration, String> {
    let Some(v) = env else { return Ok(LEAF_LIFETIME) };
    let text = v.to_string_lossy();
    match text.trim().parse::<u64>() {
        Ok(s) if s >= 10 => Ok(Duration::from_secs(s)),
        _ => {
            Err(format!("{LEAF_LIFETIME_ENV}={text}: expected whole seconds, at least 10 (a knob for tests; unset it)"))
        }
    }
}

#[derive(Debug)]
struct Named {
    dns: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    /// Addresses left out (outside the constraints), warned about once each.
    refused: BTreeSet<IpAddr>,
    /// When the current leaf was issued (by this host's clock then).
    issued: SystemTime,
    not_after: SystemTime,
}

/// Leaves from the local CA, kept current.
#[derive(Debug)]
pub struct Internal {
    ca: LocalCa,
    made_now: bool,
    lifetime: Duration,
    named: Mutex<Named>,
    resolver: Arc<CertResolver>,
}

impl Internal {
    /// Opens (or makes) the CA in `state_dir` and issues a leaf naming `names`
    /// (`--tls-name`: DNS names, or IP literals) and `addrs`. A new CA permits
    /// `permit.0` (ranges; the default private ranges when empty), the DNS
    /// names in `names` and those in `permit.1` (suffixes: permitted, not
    /// named); a name the existing CA does not permit is an error.
    pub fn open(
        state_dir: &Path,
        names: &[String],
        addrs: &[IpAddr],
        permit: (&[IpNet], &[String]),
        lifetime: Duration,
    ) -> Result<Self, TlsError> {
        for name in names.iter().filter(|n| n.parse::<IpAddr>().is_err()) {
            rcgen::CertificateParams::new(vec![name.clone()])
                .map_err(|e| TlsError::BadName { name: name.clone(), detail: e.to_string() })?;
        }
        let (ranges, suffixes) = permit;
        let wanted: Vec<String> = names.iter().chain(suffixes).cloned().collect();
        let (ca, made_now) = LocalCa::open(state_dir, &Constraints::new(ranges, &wanted))?;
        let outside = |name: String| TlsError::OutsideConstraints {
            name,
            permitted: ca.constraints().describe(),
            dir: state_dir.to_path_buf(),
        };
        let mut dns = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for name in names {
            match name.parse::<IpAddr>() {
                Ok(ip) if ca.constraints().permits_ip(ip) => drop(ips.insert(ip)),
                Ok(ip) => return Err(outside(format!("--tls-name {ip}"))),
                Err(_) if ca.constraints().permits_dns(name) => drop(dns.insert(name.to_ascii_lowercase())),
                Err(_) => return Err(outside(format!("--tls-name {name}"))),
            }
        }
        let mut refused = BTreeSet::new();
        for a in addrs {
            if ca.constraints().permits_ip(*a) {
                ips.insert(*a);
            } else {
                refused.insert(*a);
            }
        }
        let dns_list: Vec<String> = dns.iter().cloned().collect();
        let ip_list: Vec<IpAddr> = ips.iter().copied().collect();
        let issued = SystemTime::now();
        let (leaf, not_after) = ca.issue(&dns_list, &ip_list, lifetime)?;
        Ok(Internal {
            ca,
            made_now,
            lifetime,
            named: Mutex::new(Named { dns, ips, refused, issued, not_after }),
            resolver: Arc::new(CertResolver::new(leaf)),
        })
    }

    /// The resolver to build the [`super::TlsAcceptor`] from.
    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// The CA.
    pub fn ca(&self) -> &LocalCa {
        &self.ca
    }

    /// True when [`Internal::open`] made the CA (first start).
    pub fn made_now(&self) -> bool {
        self.made_now
    }

    /// The current leaf's notAfter.
    pub fn not_after(&self) -> SystemTime {
        lock(&self.named).not_after
    }

    /// DNS names and addresses the current leaf names.
    pub fn names(&self) -> (Vec<String>, Vec<IpAddr>) {
        let n = lock(&self.named);
        (n.dns.iter().cloned().collect(), n.ips.iter().copied().collect())
    }

    /// When the leaf is due for renewal: a third of its life before its end.
    fn due_at(&self, not_after: SystemTime) -> SystemTime {
        not_after - self.lifetime / 3
    }

    /// Reissues the leaf (same names) if it is due; returns whether it did.
    /// It is due a third of its life before its end, and also when the clock
    /// now reads before the leaf was issued (the clock was stepped back, as
    /// NTP does to a host whose clock ran ahead): its notBefore may then lie
    /// in the future for every client, and waiting for its end would leave
    /// it refused for as long as the step.
    pub fn renew_if_due(&self) -> Result<bool, TlsError> {
        self.reissue(&[], false, SystemTime::now())
    }

    fn reissue(&self, addrs: &[IpAddr], force: bool, now: SystemTime) -> Result<bool, TlsError> {
        let mut named = lock(&self.named);
        let mut new_ips = named.ips.clone();
        for a in addrs {
            if self.ca.constraints().permits_ip(*a) {
                new_ips.insert(*a);
            } else if named.refused.insert(*a) {
                tracing::warn!(
                    address = %a,
                    permitted = %self.ca.constraints().describe(),
                    "the local CA may not sign for this address (outside its name constraints): \
                     its certificate leaves it out and clients connecting to it will refuse it"
                );
            }
        }
        let added = new_ips.len() != named.ips.len();
        let due = now >= self.due_at(named.not_after) || now < named.issued;
        if !added && !due && !force {
            return Ok(false);
        }
        let dns: Vec<String> = named.dns.iter().cloned().collect();
        let ips: Vec<IpAddr> = new_ips.iter().copied().collect();
        let issued = SystemTime::now();
        let (leaf, not_after) = self.ca.issue(&dns, &ips, self.lifetime)?;
        self.resolver.store(leaf);
        named.ips = new_ips;
        named.issued = issued;
        named.not_after = not_after;
        tracing::info!(
            names = ?dns,
            addresses = ?ips,
            not_after_unix = super::certs::unix(not_after),
            "issued a new certificate from the local CA"
        );
        Ok(true)
    }

    /// Renews the leaf before its end, for as long as the returned task runs
    /// and this value lives (the task holds it weakly).
    pub fn spawn_renewal(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let due = this.due_at(this.not_after());
                let nap = due
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .clamp(Duration::from_millis(200), MAX_NAP);
                drop(this);
                tokio::time::sleep(nap).await;
                let Some(this) = weak.upgrade() else { return };
                if let Err(e) = this.renew_if_due() {
                    tracing::warn!(error = %e, "could not renew the certificate from the local CA; trying again");
                    drop(this);
                    tokio::time::sleep(RETRY).await;
                }
            }
        })
    }
}

impl AddressNames for Internal {
    fn ensure_names(&self, addrs: &[IpAddr]) -> Result<bool, TlsError> {
        self.reissue(addrs, false, SystemTime::now())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testutil::client_handshake;
    use crate::tls::TlsAcceptor;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_lifetime_knob_takes_whole_seconds_or_says_what_is_wrong() {
        assert_eq!(leaf_lifetime_from(None).unwrap(), LEAF_LIFETIME);
        assert_eq!(leaf_lifetime_from(Some("120".into())).unwrap(), Duration::from_secs(120));
        for bad in ["5", "two", "-1", ""] {
            let e = leaf_lifetime_from(Some(bad.into())).unwrap_err();
            assert!(e.contains(LEAF_LIFETIME_ENV) && e.contains("at least 10"), "{e}");
        }
    }

    #[test]
    fn a_name_outside_an_existing_ca_is_refused_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        Internal::open(tmp.path(), &["gw.example".into()], &[], (&[], &[]), LEAF_LIFETIME).unwrap();
        let err = Internal::open(tmp.path(), &["other.example".into()], &[], (&[], &[]), LEAF_LIFETIME).unwrap_err();
        assert!(matches!(err, TlsError::OutsideConstraints { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("other.example") && text.contains("gw.example") && text.contains("ca-key.pem"), "{text}");
        let err = Internal::open(tmp.path(), &["8.8.8.8".into()], &[], (&[], &[]), LEAF_LIFETIME).unwrap_err();
        assert!(err.to_string().contains("8.8.8.8"), "{err}");
    }

    #[tokio::test]
    async fn new_addresses_are_added_at_once_and_outside_ones_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let int = Internal::open(tmp.path(), &[], &[ip("10.8.0.1")], (&[], &[]), LEAF_LIFETIME).unwrap();
        assert!(int.made_now());
        let acc = TlsAcceptor::new(int.resolver()).unwrap();
        let before = client_handshake(&acc, &[b"h2"], None).await.unwrap();
        assert!(!int.ensure_names(&[ip("10.8.0.1")]).unwrap(), "already named, not due");
        assert!(int.ensure_names(&[ip("100.64.0.7")]).unwrap());
        assert!(!int.ensure_names(&[ip("203.0.113.9")]).unwrap(), "outside: left out, no reissue");
        assert_eq!(int.names().1, vec![ip("10.8.0.1"), ip("100.64.0.7")]);
        let after = client_handshake(&acc, &[b"h2"], None).await.unwrap();
        assert_ne!(after.leaf.as_ref(), before.leaf.as_ref());
    }

    /// A clock stepped back past the leaf's issue: the leaf is reissued at
    /// the next check rather than a third of a lifetime (days) later.
    #[test]
    fn a_clock_stepped_back_gets_a_new_leaf_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let int = Internal::open(tmp.path(), &[], &[ip("10.8.0.1")], (&[], &[]), LEAF_LIFETIME).unwrap();
        let first = int.not_after();
        let now = SystemTime::now();
        assert!(!int.reissue(&[], false, now).unwrap(), "not due");
        assert!(int.reissue(&[], false, now - Duration::from_secs(2 * 3600)).unwrap(), "stepped back: reissued");
        assert_ne!(int.not_after(), first);
        assert!(!int.renew_if_due().unwrap(), "and then not again");
    }

    #[tokio::test]
    async fn the_renewal_task_reissues_before_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        // 12 s: due after 8 s.
        let int =
            Arc::new(Internal::open(tmp.path(), &[], &[ip("10.8.0.1")], (&[], &[]), Duration::from_secs(12)).unwrap());
        let first = int.not_after();
        assert!(!int.renew_if_due().unwrap());
        let task = int.spawn_renewal();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while int.not_after() == first && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        task.abort();
        let renewed = int.not_after();
        assert!(renewed > first, "renewed before the end");
        assert!(SystemTime::now() < first, "renewed while the old leaf was still valid");
    }
}

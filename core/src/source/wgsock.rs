//! Userspace WireGuard control sockets (`/var/run/wireguard/NAME.sock`).
//!
//! wireguard-go and boringtun create one per interface. The directory is not per
//! network namespace, so a socket is evidence only when an interface of that name
//! is present and is a TUN; the sources check that.

use std::collections::HashSet;
use std::path::Path;

/// Where wireguard-go and boringtun put their control sockets.
pub const WIREGUARD_SOCKET_DIR: &str = "/var/run/wireguard";

/// Interface names with a control socket in `dir` (`wg0.sock` → `wg0`).
/// A missing or unreadable directory means none.
pub fn userspace_wireguard_names(dir: &Path) -> HashSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".sock").filter(|n| !n.is_empty()).map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_socket_names_and_ignores_the_rest() {
        let dir = std::env::temp_dir().join(format!("meshgate-wgsock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("office.sock"), b"").unwrap();
        std::fs::write(dir.join("office.name"), b"utun3").unwrap();
        let names = userspace_wireguard_names(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, HashSet::from(["office".to_owned()]));
        assert!(userspace_wireguard_names(Path::new("/nonexistent/meshgate")).is_empty());
    }
}

//! The built-in providers. Naming each crate here keeps the linker from dropping
//! it (an unreferenced crate's `inventory` registrations vanish silently), so any
//! program that links this library gets every built-in bind mode.
//!
//! Adding a provider crate takes three lines here: its `pub use`, its `INFO` in
//! [`link`], and its name in [`NAMES`] (in priority order). The registry tests
//! fail, saying which lines, when a crate under `providers/` is missing.

/// The names of the built-in providers, in priority order: what the registry
/// test and `meshgate providers` expect.
pub const NAMES: &[&str] = &[
    "loopback",
    "tailnet",
    "netbird",
    "firezone",
    "zerotier",
    "nebula",
    "netmaker",
    "husarnet",
    "tinc",
    "openvpn",
    "wireguard",
    "cloudflare-warp",
    "yggdrasil",
    "lan",
    "all",
];

pub use meshgate_provider_all as all;
pub use meshgate_provider_cloudflare_warp as cloudflare_warp;
pub use meshgate_provider_firezone as firezone;
pub use meshgate_provider_husarnet as husarnet;
pub use meshgate_provider_lan as lan;
pub use meshgate_provider_loopback as loopback;
pub use meshgate_provider_nebula as nebula;
pub use meshgate_provider_netbird as netbird;
pub use meshgate_provider_netmaker as netmaker;
pub use meshgate_provider_openvpn as openvpn;
pub use meshgate_provider_tailnet as tailnet;
pub use meshgate_provider_tinc as tinc;
pub use meshgate_provider_wireguard as wireguard;
pub use meshgate_provider_yggdrasil as yggdrasil;
pub use meshgate_provider_zerotier as zerotier;

/// Forces every built-in provider crate to be linked. Cheap; call it once
/// before the registry is first used (the CLI does).
pub fn link() {
    // Taking each crate's INFO keeps a reference to a symbol in every crate.
    let infos = [
        all::INFO,
        cloudflare_warp::INFO,
        firezone::INFO,
        husarnet::INFO,
        lan::INFO,
        loopback::INFO,
        nebula::INFO,
        netbird::INFO,
        netmaker::INFO,
        openvpn::INFO,
        tailnet::INFO,
        tinc::INFO,
        wireguard::INFO,
        yggdrasil::INFO,
        zerotier::INFO,
    ];
    std::hint::black_box(infos);
}

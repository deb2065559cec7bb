//! The registry: exactly the built-in names, in priority order; every crate under
//! `providers/` linked into the binary (or a failure that says how to link it);
//! duplicate names and descriptor/provider mismatches are errors that say which
//! crates; `meshgate providers` shows each provider's crate, priority, matches and
//! part in `auto`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use meshgate::core::{
    BindProvider, MeshProvider, MeshSpec, ProviderConfig, ProviderDescriptor, ProviderInfo, Registry, RegistryError,
    Role,
};
use serde_json::Value;

const EXPECTED: &[&str] = &[
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

#[test]
fn holds_exactly_the_builtin_names_in_priority_order() {
    let names = crate::registry().names();
    assert_eq!(names, EXPECTED, "a provider crate was dropped by the linker, or one was added without updating NAMES");
    assert_eq!(names, meshgate::builtin::NAMES);
    let priorities: Vec<u16> = crate::registry().entries().iter().map(|e| e.info().priority).collect();
    assert!(priorities.windows(2).all(|w| w[0] < w[1]), "priorities must be strictly increasing: {priorities:?}");
}

#[test]
fn every_builtin_comes_from_its_own_crate_and_builds_itself() {
    for e in crate::registry().entries() {
        let name = e.info().name;
        assert_eq!(e.descriptor.crate_name, format!("meshgate-provider-{name}"));
        assert_eq!(e.provider.info().name, name, "descriptor and provider disagree for {name}");
        assert!(!e.info().description.is_empty(), "{name} has no description");
    }
}

#[test]
fn only_mesh_providers_are_walked_by_auto() {
    let meshes: Vec<&str> =
        crate::registry().entries().iter().filter(|e| e.info().role == Role::Mesh).map(|e| e.info().name).collect();
    assert_eq!(
        meshes,
        [
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
            "cloudflare-warp"
        ]
    );
}

// ---- hygiene: every crate under providers/ is linked --------------------------

/// The `[package] name` of a Cargo.toml.
fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap_or_else(|e| panic!("read {}: {e}", manifest.display()));
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let (true, Some(rest)) = (in_package, line.strip_prefix("name")) {
            if let Some(value) = rest.trim_start().strip_prefix('=') {
                return value.trim().trim_matches('"').to_owned();
            }
        }
    }
    panic!("{}: no `name` in its [package] table", manifest.display())
}

/// Every crate under `providers/`: package name → its directory (`providers/x`).
fn provider_crates() -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a providers/ entry").path();
        let manifest = path.join("Cargo.toml");
        if manifest.is_file() {
            let rel = format!("providers/{}", path.file_name().unwrap().to_string_lossy());
            out.insert(package_name(&manifest), rel);
        }
    }
    out
}

/// What to write to link a provider crate, for the failure message.
fn how_to_link(krate: &str, dir: &str) -> String {
    let ident = krate.replace('-', "_");
    let short = krate.strip_prefix("meshgate-provider-").unwrap_or(krate).replace('-', "_");
    format!(
        "provider crate `{krate}` ({dir}) is not linked into meshgate: none of its providers is in the registry. \
         The linker drops a crate that nothing references, and its `register_provider!` registration with it, \
         silently. To link it:\n\
         \x20 1. root Cargo.toml, under [dependencies]: {krate} = {{ path = \"{dir}\" }}\n\
         \x20 2. src/builtin.rs: `pub use {ident} as {short};`, then `{short}::INFO` in the `infos` array of \
         `link()`, and the provider's name in `NAMES` (in priority order)\n"
    )
}

#[test]
fn every_crate_under_providers_is_linked_into_the_binary() {
    let crates = provider_crates();
    assert!(crates.len() >= EXPECTED.len(), "found only {crates:?} under providers/");
    let linked: Vec<&str> = crate::registry().entries().iter().map(|e| e.descriptor.crate_name).collect();
    let missing: Vec<String> = crates
        .iter()
        .filter(|(krate, _)| !linked.contains(&krate.as_str()))
        .map(|(krate, dir)| how_to_link(krate, dir))
        .collect();
    assert!(missing.is_empty(), "\n{}", missing.join("\n"));
}

#[test]
fn the_hygiene_message_says_exactly_what_to_write() {
    let msg = how_to_link("meshgate-provider-netmaker", "providers/netmaker");
    assert!(msg.contains("meshgate-provider-netmaker = { path = \"providers/netmaker\" }"), "{msg}");
    assert!(msg.contains("pub use meshgate_provider_netmaker as netmaker;"), "{msg}");
    assert!(msg.contains("`netmaker::INFO`") && msg.contains("`link()`") && msg.contains("NAMES"), "{msg}");
    assert!(msg.contains("root Cargo.toml") && msg.contains("src/builtin.rs"), "{msg}");
    // A dashed name becomes an identifier.
    let msg = how_to_link("meshgate-provider-cloudflare-warp", "providers/cloudflare-warp");
    assert!(msg.contains("pub use meshgate_provider_cloudflare_warp as cloudflare_warp;"), "{msg}");
}

#[test]
fn package_names_are_read_from_the_package_table_only() {
    let dir = std::env::temp_dir().join(format!("meshgate-registry-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("Cargo.toml");
    std::fs::write(&manifest, "[lib]\nname = \"wrong\"\n\n[package]\nversion = \"1\"\nname = \"right\"\n").unwrap();
    let name = package_name(&manifest);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(name, "right");
    // The real crates: the two examples from docs/writing-a-provider.md are there.
    let crates = provider_crates();
    assert_eq!(crates.get("meshgate-provider-netmaker").map(String::as_str), Some("providers/netmaker"));
    assert_eq!(crates.get("meshgate-provider-cloudflare-warp").map(String::as_str), Some("providers/cloudflare-warp"));
}

// ---- `meshgate providers` ------------------------------------------------------

fn meshgate_providers(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate")).arg("providers").args(args).output().expect("run meshgate");
    assert!(out.status.success(), "meshgate providers {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn providers_json_shows_crate_priority_matches_and_auto() {
    let doc: Value = serde_json::from_str(&meshgate_providers(&["--json"])).expect("one JSON object");
    let list = doc["providers"].as_array().expect("providers is an array");
    let entries = crate::registry().entries();
    assert_eq!(list.len(), entries.len());
    for (p, e) in list.iter().zip(entries) {
        let i = e.info();
        assert_eq!(p["name"], i.name);
        assert_eq!(p["priority"], i.priority, "{p}");
        assert_eq!(p["crate"], e.descriptor.crate_name, "{p}");
        assert_eq!(p["auto"], i.role == Role::Mesh, "{p}");
        let want = serde_json::to_value(e.provider.matches(&ProviderConfig::default())).unwrap();
        assert_eq!(p["matches"], want, "{}: matches", i.name);
        for key in ["names", "ranges", "kinds"] {
            assert!(p["matches"][key].is_array(), "{}: matches.{key} missing", i.name);
        }
    }
    // The two example providers, as a reader of the listing sees them.
    let find = |n: &str| list.iter().find(|p| p["name"] == n).unwrap_or_else(|| panic!("{n} listed"));
    let nm = find("netmaker");
    assert_eq!(nm["matches"]["names"][0], "netmaker");
    assert!(nm["matches"]["names"][1].as_str().unwrap().starts_with("nm-* (only on kernel or userspace WireGuard"));
    let warp = find("cloudflare-warp");
    assert_eq!(warp["auto"], true);
    let ranges: Vec<&str> = warp["matches"]["ranges"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(ranges, ["172.16.0.2/32", "2606:4700:110::/48", "100.96.0.0/12", "2606:4700:cf1:1000::/64"]);
}

#[test]
fn providers_text_shows_crate_priority_matches_and_auto() {
    let text = meshgate_providers(&[]);
    // One block per provider: a line starting with its name, then indented lines.
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        if line.starts_with(' ') {
            blocks.last_mut().expect("an indented line follows a provider line").push(line);
        } else if !line.is_empty() {
            blocks.push(vec![line]);
        }
    }
    let entries = crate::registry().entries();
    assert_eq!(blocks.len(), entries.len(), "{text}");
    for (block, e) in blocks.iter().zip(entries) {
        let i = e.info();
        let head: Vec<&str> = block[0].split_whitespace().collect();
        assert_eq!(head[0], i.name, "{text}");
        assert_eq!(head[1], i.priority.to_string(), "{}: priority", i.name);
        assert_eq!(head[2] == "auto", i.role == Role::Mesh, "{}: the auto column: {}", i.name, block[0]);
        assert!(block[0].ends_with(i.description), "{}: description: {}", i.name, block[0]);
        let rest = block[1..].join("\n");
        assert!(rest.contains(&format!("crate: {}", e.descriptor.crate_name)), "{}: crate: {rest}", i.name);
        let m = e.provider.matches(&ProviderConfig::default());
        for (label, items) in [("names", &m.names), ("ranges", &m.ranges), ("kinds", &m.kinds)] {
            if !items.is_empty() {
                assert!(rest.contains(&format!("{label}: {}", items.join(", "))), "{}: {label}: {rest}", i.name);
            }
        }
    }
}

fn info(name: &'static str, priority: u16) -> ProviderInfo {
    ProviderInfo { name, priority, description: "test provider", role: Role::Mesh }
}

const SPEC: MeshSpec =
    MeshSpec { mesh: "Test", names: &["test*"], weak_names: &[], exclude_names: &[], kinds: &[], ranges: &[] };

fn build_dup() -> Box<dyn BindProvider> {
    Box::new(MeshProvider::new(info("dup", 50), SPEC))
}

fn build_other() -> Box<dyn BindProvider> {
    Box::new(MeshProvider::new(info("other", 60), SPEC))
}

static DUP_A: ProviderDescriptor = ProviderDescriptor {
    info: ProviderInfo { name: "dup", priority: 50, description: "test provider", role: Role::Mesh },
    crate_name: "crate-alpha",
    build: build_dup,
};

static DUP_B: ProviderDescriptor = ProviderDescriptor {
    info: ProviderInfo { name: "dup", priority: 50, description: "test provider", role: Role::Mesh },
    crate_name: "crate-beta",
    build: build_dup,
};

#[test]
fn duplicate_names_are_rejected_naming_both_crates() {
    for order in [[&DUP_A, &DUP_B], [&DUP_B, &DUP_A]] {
        let err = Registry::from_descriptors(order).unwrap_err();
        assert_eq!(
            err,
            RegistryError::Duplicate { name: "dup".into(), first: "crate-alpha".into(), second: "crate-beta".into() },
            "the error must not depend on link order"
        );
        let msg = err.to_string();
        assert!(msg.contains("`dup`") && msg.contains("crate-alpha") && msg.contains("crate-beta"), "{msg}");
    }
}

#[test]
fn a_descriptor_that_disagrees_with_its_provider_is_an_error() {
    // Leaked so the descriptor is `'static`, as inventory's are.
    let liar: &'static ProviderDescriptor = Box::leak(Box::new(ProviderDescriptor {
        info: info("claimed", 70),
        crate_name: "crate-liar",
        build: build_other,
    }));
    let err = Registry::from_descriptors([liar]).unwrap_err();
    assert_eq!(
        err,
        RegistryError::Mismatch {
            crate_name: "crate-liar".into(),
            registered: "claimed".into(),
            actual: "other".into()
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("crate-liar") && msg.contains("claimed") && msg.contains("other"), "{msg}");
}

#[test]
fn a_registry_is_sorted_by_priority_whatever_the_input_order() {
    let other: &'static ProviderDescriptor =
        Box::leak(Box::new(ProviderDescriptor { info: info("other", 60), crate_name: "crate-o", build: build_other }));
    let reg = Registry::from_descriptors([other, &DUP_A]).expect("distinct names");
    assert_eq!(reg.names(), ["dup", "other"]);
    assert_eq!(reg.get("other").map(|e| e.descriptor.crate_name), Some("crate-o"));
    assert!(reg.get("missing").is_none());
}

//! The registry: exactly the built-in names, in priority order; duplicate names
//! and descriptor/provider mismatches are errors that say which crates.

use meshgate::core::{
    BindProvider, MeshProvider, MeshSpec, ProviderDescriptor, ProviderInfo, Registry, RegistryError, Role,
};

const EXPECTED: &[&str] =
    &["loopback", "tailnet", "netbird", "firezone", "zerotier", "nebula", "wireguard", "lan", "all"];

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
    assert_eq!(meshes, ["tailnet", "netbird", "firezone", "zerotier", "nebula", "wireguard"]);
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

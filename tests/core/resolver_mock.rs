//! `explain` driven through a mocked [`InterfaceSource`]: the source is read
//! exactly once, and the `--json` document keeps the contract in docs/cli.md.

use meshgate::cli::{explain, BindArgs, CliError, ExplainArgs, FallbackArg};
use meshgate::core::source::{MockInterfaceSource, SourceError};
use meshgate::core::{Interface, InterfaceKind as K, Snapshot};
use serde_json::Value;

fn fixture() -> Snapshot {
    Snapshot::new(vec![
        Interface::new("lo", 1, K::Loopback).with_addr("127.0.0.1/8").with_addr("::1/128"),
        Interface::new("eth0", 2, K::Physical).with_addr("192.168.1.10/24").with_addr("fe80::10/64"),
        Interface::new("wg0", 5, K::WireGuard).with_addr("10.8.0.1/24").with_addr("fe80::1/64"),
        Interface::new("tailscale0", 6, K::Tun).with_addr("100.101.2.3/32").with_addr("fd7a:115c:a1e0::3/128"),
        Interface::new("wt0", 7, K::WireGuard).with_addr("100.72.1.2/16"),
    ])
}

/// A source that must be read exactly once and answers with `snapshot`.
fn source(snapshot: Snapshot) -> MockInterfaceSource {
    let mut mock = MockInterfaceSource::new();
    mock.expect_snapshot().times(1).returning(move || Ok(snapshot.clone()));
    mock
}

fn args(bind: &[&str]) -> ExplainArgs {
    let mut a = ExplainArgs { json: true, ..Default::default() };
    a.serve.bind = BindArgs { bind: bind.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    a
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("`{key}` should be a string in {v}"))
}

#[tokio::test]
async fn explain_json_keeps_the_contract() {
    let mock = source(fixture());
    let text = explain(&args(&["tailnet", "wireguard", "fe80::1%wg0"]), &mock).await.expect("explain succeeds");
    let doc: Value = serde_json::from_str(&text).expect("explain --json prints one JSON object");

    assert_eq!(doc["fallback"], Value::Bool(false));
    let listeners = doc["listeners"].as_array().expect("listeners is an array");
    let rows: Vec<(&str, &str, Option<&str>)> =
        listeners.iter().map(|l| (str_of(l, "address"), str_of(l, "provider"), l["interface"].as_str())).collect();
    assert_eq!(
        rows,
        [
            ("100.101.2.3", "tailnet", Some("tailscale0")),
            ("fd7a:115c:a1e0::3", "tailnet", Some("tailscale0")),
            ("10.8.0.1", "wireguard", Some("wg0")),
            ("100.72.1.2", "wireguard", Some("wt0")),
            ("fe80::1%wg0", "ip", Some("wg0")),
            ("127.0.0.1", "loopback", Some("lo")),
            ("::1", "loopback", Some("lo")),
        ]
    );
    for l in listeners {
        assert_eq!(l["port"], 18789, "{l}");
        assert!(!str_of(l, "reason").is_empty(), "{l}");
    }
    let companion = listeners.iter().find(|l| l["address"] == "127.0.0.1").unwrap();
    assert!(str_of(companion, "reason").contains("companion"), "{companion}");

    let providers = doc["providers"].as_array().expect("providers is an array");
    let names: Vec<&str> = providers.iter().map(|p| str_of(p, "name")).collect();
    assert_eq!(names, meshgate::builtin::NAMES);
    for p in providers {
        let cands = p["candidates"].as_array().unwrap_or_else(|| panic!("candidates is an array in {p}"));
        for c in cands {
            for key in ["interface", "address", "reason"] {
                assert!(c[key].is_string(), "candidate without `{key}`: {c}");
            }
        }
        assert!(p["rejected"].is_array(), "{p}");
    }
    let tailnet = providers.iter().find(|p| p["name"] == "tailnet").unwrap();
    let lost = tailnet["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["interface"] == "wt0")
        .unwrap_or_else(|| panic!("tailnet should list wt0 as rejected: {tailnet}"));
    assert_eq!(lost["address"], "100.72.1.2");
    assert!(str_of(lost, "reason").contains("netbird"), "{lost}");
    let wireguard = providers.iter().find(|p| p["name"] == "wireguard").unwrap();
    let link_local = wireguard["rejected"].as_array().unwrap().iter().find(|r| r["address"] == "fe80::1");
    assert!(link_local.is_some_and(|r| str_of(r, "reason").contains("link-local")), "{wireguard}");
}

#[tokio::test]
async fn explain_json_reports_the_fallback() {
    let only_lan = Snapshot::new(vec![
        Interface::new("lo", 1, K::Loopback).with_addr("127.0.0.1/8"),
        Interface::new("eth0", 2, K::Physical).with_addr("192.168.1.10/24"),
    ]);
    let text = explain(&args(&["auto"]), &source(only_lan)).await.expect("fallback is not an error");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["fallback"], Value::Bool(true));
    assert!(str_of(&doc, "fallback_reason").contains("auto matched nothing"), "{doc}");
    let listeners = doc["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 1, "{doc}");
    assert_eq!(listeners[0]["address"], "127.0.0.1");
    assert_eq!(listeners[0]["provider"], "loopback");
}

#[tokio::test]
async fn fallback_fail_is_exit_69() {
    let mut a = args(&["wireguard"]);
    a.serve.bind.fallback = Some(FallbackArg::Fail);
    let no_wg = Snapshot::new(vec![Interface::new("lo", 1, K::Loopback).with_addr("127.0.0.1/8")]);
    let err = explain(&a, &source(no_wg)).await.unwrap_err();
    // The answer goes to stdout; the reason is the error.
    let CliError::WithAnswer { answer, error } = &err else { panic!("{err:?}") };
    assert!(matches!(**error, CliError::NothingMatched(_)), "{err:?}");
    assert!(serde_json::from_str::<Value>(answer).is_ok(), "{answer}");
    assert_eq!(err.exit_code(), 69);
    assert!(err.to_string().contains("--fallback is fail"), "{err}");
}

#[tokio::test]
async fn a_bad_selector_is_refused_before_the_host_is_read() {
    let mut mock = MockInterfaceSource::new();
    mock.expect_snapshot().never();
    let err = explain(&args(&["wiregaurd"]), &mock).await.unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("did you mean `wireguard`?"), "{err}");
}

#[tokio::test]
async fn a_source_failure_is_reported_not_papered_over() {
    let mut mock = MockInterfaceSource::new();
    mock.expect_snapshot().times(1).returning(|| Err(SourceError::Protocol("netlink said no".into())));
    let err = explain(&args(&["auto"]), &mock).await.unwrap_err();
    assert!(matches!(err, CliError::Source(_)), "{err:?}");
    assert_eq!(err.exit_code(), 71);
    assert!(err.to_string().contains("netlink said no"), "{err}");
}

//! The docs' command examples are tests: every example that can run without
//! root, a namespace or a mesh runs here, and its output is compared with the
//! page; every other one is marked as not run. (The same idea as `trycmd`,
//! which clap and cargo use, in a small harness inside this test binary: no
//! extra crate, and the built `meshgate` is first in `PATH`.)
//!
//! # Marking examples (for whoever writes a page)
//!
//! A fenced block in README.md or docs/*.md whose info string starts with
//! `sh`, `bash`, `shell` or `console` is a command example, and must say which
//! kind it is; an unmarked one fails [`every_command_example_is_run_or_marked`]:
//!
//! - ```` ```console ```` runs. Each `$ COMMAND` line is run with `sh -c` in a
//!   scratch directory of the page's own (`HOME` there too, no `MESHGATE_*`
//!   nor `RUST_LOG`, `NO_COLOR=1`). The lines after it, up to the next `$ `
//!   or the fence, are what it prints: stdout, then stderr. An optional first
//!   line `? CODE` is the exit status it must have (0 when absent). In the
//!   expected text, `[..]` matches any text within a line and a line `...`
//!   matches any number of lines (trycmd's wildcards). Each command must end
//!   within 10 seconds: no `serve` here.
//! - ```` ```toml file=NAME ```` (or any language) writes its body to NAME in
//!   that scratch directory, for the `console` blocks below it on the page;
//!   the page shows it as an ordinary config file.
//! - ```` ```sh no-run ```` (likewise `bash no-run`, `console no-run`) is shown,
//!   never run: it needs root, a mesh, a namespace, another program, or runs
//!   until stopped. Say why in a comment in the block or the text around it
//!   if it is not obvious.
//!
//! An untagged block with a line that starts with `$ ` or a command
//! (`meshgate ...`, `sudo ...`, `cargo ...`) is a command example too, and must
//! be tagged. Other blocks (`toml`, `json`, `ini`, `rust`, `text`, an untagged
//! block of output) are not commands.
//! A systemd unit shown in an `ini` block must be the shipped one: its
//! `ExecStart=` lines are those of dist/meshgate.service.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The pages whose examples are checked.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// One fenced block: its info string, body and the line it starts on.
struct Block {
    info: String,
    body: Vec<String>,
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        let t = l.trim_start();
        let Some(info) = t.strip_prefix("```") else { continue };
        let indent = l.len() - t.len();
        let mut body = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push(l.get(indent..).unwrap_or(l.trim_start()).to_owned());
        }
        out.push(Block { info: info.trim().to_owned(), body, line: i + 1 });
    }
    out
}

const COMMAND_LANGS: [&str; 4] = ["sh", "bash", "shell", "console"];

fn words(info: &str) -> Vec<&str> {
    info.split([' ', ',']).filter(|w| !w.is_empty()).collect()
}

/// The programs whose lines make an untagged block a command example.
const PROGRAMS: [&str; 5] = ["meshgate", "sudo", "cargo", "curl", "systemctl"];

fn is_command(b: &Block) -> bool {
    match words(&b.info).first() {
        Some(w) => COMMAND_LANGS.contains(w),
        // An untagged block of commands must be marked too: it would
        // otherwise be neither run nor said not to be.
        None => b.body.iter().map(|l| l.trim_start()).any(|l| {
            l.starts_with("$ ") || PROGRAMS.iter().any(|p| l.strip_prefix(p).is_some_and(|r| r.starts_with(' ')))
        }),
    }
}

#[test]
fn an_untagged_block_of_commands_is_a_command_example() {
    let text = "```\nmeshgate --bind lan   # the LAN\n```\n```\n$ meshgate explain\n```\n```\nlistening on http://[::1]:1\n```\n```text\nmeshgate [serve] [--bind SELECTOR]\n```\n";
    let found: Vec<bool> = blocks(text).iter().map(is_command).collect();
    assert_eq!(found, [true, true, false, false]);
}

fn is_no_run(b: &Block) -> bool {
    words(&b.info).iter().any(|w| w.trim_end_matches(':') == "no-run")
}

fn runs(b: &Block) -> bool {
    words(&b.info).first() == Some(&"console") && !is_no_run(b)
}

fn file_name(b: &Block) -> Option<&str> {
    words(&b.info).into_iter().find_map(|w| w.strip_prefix("file="))
}

#[test]
fn every_command_example_is_run_or_marked() {
    let mut unmarked = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for b in blocks(&text) {
            if is_command(&b) && !runs(&b) && !is_no_run(&b) {
                unmarked.push(format!("{}:{}: ```{}", page.display(), b.line, b.info));
            }
        }
    }
    assert!(
        unmarked.is_empty(),
        "command examples neither run (```console) nor marked (```sh no-run); see tests/core/docs.rs:\n{}",
        unmarked.join("\n")
    );
}

/// `expected` (with `[..]` and `...` wildcards) matches `actual`.
fn matches(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| matches(rest, &actual[skip..])),
        Some((e, rest)) => actual.split_first().is_some_and(|(a, more)| line_matches(e, a) && matches(rest, more)),
    }
}

fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("[..]").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() || !actual.ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn the_wildcards_match_what_they_say() {
    assert!(line_matches("a [..] c", "a b b c"));
    assert!(!line_matches("a [..] c", "a b d"));
    assert!(line_matches("[..]x[..]", "1x2"));
    assert!(matches(&["a", "...", "z"], &["a", "z"]));
    assert!(matches(&["a", "...", "z"], &["a", "b", "c", "z"]));
    assert!(!matches(&["a", "...", "z"], &["a", "b"]));
    assert!(!matches(&["a"], &["a", "b"]));
}

/// Runs `command` with `sh -c` in `dir`; (exit code, stdout + stderr).
fn run_example(command: &str, dir: &Path) -> (Option<i32>, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_meshgate")).parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", command]).current_dir(dir).env("PATH", path).env("HOME", dir).env("NO_COLOR", "1");
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("MESHGATE_") || ["RUST_LOG", "XDG_CONFIG_HOME", "NOTIFY_SOCKET"].contains(&k.as_ref()) {
            cmd.env_remove(k.as_ref());
        }
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command}` did not end within 10 s: mark the block no-run");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text =
        String::from_utf8_lossy(&out.join().unwrap()).into_owned() + &String::from_utf8_lossy(&err.join().unwrap());
    (status.code(), text)
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

#[test]
fn the_console_examples_print_what_the_pages_show() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = std::env::temp_dir().join(format!("meshgate-docs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for b in blocks(&text) {
            if let Some(f) = file_name(&b) {
                std::fs::write(dir.join(f), b.body.join("\n") + "\n").unwrap();
                continue;
            }
            if !runs(&b) {
                continue;
            }
            // Split into (command, expected lines).
            let mut examples: Vec<(String, Vec<String>)> = Vec::new();
            for l in &b.body {
                match l.strip_prefix("$ ") {
                    Some(c) => examples.push((c.to_owned(), Vec::new())),
                    None => match examples.last_mut() {
                        Some((_, expected)) => expected.push(l.clone()),
                        None => failures.push(format!("{}:{}: output before any `$ ` line", page.display(), b.line)),
                    },
                }
            }
            for (command, mut expected) in examples {
                let want_code = match expected.first().and_then(|l| l.strip_prefix("? ")) {
                    Some(code) => {
                        let c = code.trim().parse::<i32>().expect("`? CODE` is a number");
                        expected.remove(0);
                        c
                    }
                    None => 0,
                };
                let (code, out) = run_example(&command, &dir);
                ran += 1;
                let actual: Vec<&str> = out.lines().map(str::trim_end).collect();
                let want: Vec<&str> = expected.iter().map(|l| l.trim_end()).collect();
                if code != Some(want_code) || !matches(&want, &actual) {
                    failures.push(format!(
                        "{}:{}: `{command}`\n  exit {code:?}, the page says {want_code}\n  --- the page shows:\n{}\n  --- it printed:\n{}",
                        page.display(),
                        b.line,
                        want.join("\n"),
                        actual.join("\n")
                    ));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(failures.is_empty(), "{} of {ran} examples differ:\n{}", failures.len(), failures.join("\n\n"));
    assert!(ran >= 5, "only {ran} examples ran: the harness found too few");
}

/// One unit everywhere: a unit shown in the docs runs what the shipped one runs.
#[test]
fn units_in_the_docs_are_the_shipped_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("dist/meshgate.service")).unwrap();
    let exec: Vec<&str> = shipped.lines().filter(|l| l.starts_with("ExecStart=")).collect();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for b in blocks(&text).iter().filter(|b| b.info.starts_with("ini")) {
            // Join continuation lines before comparing.
            let joined = b.body.join("\n").replace("\\\n", " ");
            for l in joined.lines().filter(|l| l.starts_with("ExecStart=") && *l != "ExecStart=") {
                let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
                assert!(
                    exec.contains(&l.as_str()),
                    "{}:{}: `{l}` is not the shipped unit's ExecStart",
                    page.display(),
                    b.line
                );
            }
        }
    }
}

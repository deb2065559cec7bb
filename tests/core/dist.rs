//! What the .deb ships besides the binary (`[package.metadata.deb]` and
//! `dist/`): a maintainer with an address, descriptions dpkg shows as
//! written, and a real copyright file.

use std::path::Path;

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap()
}

/// The `[package.metadata.deb]` table's text.
fn deb_table() -> String {
    let manifest = read("Cargo.toml");
    let start = manifest.find("[package.metadata.deb]").expect("a [package.metadata.deb] table");
    let rest = &manifest[start + 1..];
    let end = rest.find("\n[").map_or(manifest.len(), |i| start + 1 + i);
    manifest[start..end].to_owned()
}

#[test]
fn the_deb_names_a_maintainer_with_an_address() {
    let table = deb_table();
    let maintainer = table.lines().find_map(|l| l.strip_prefix("maintainer = ")).expect("a maintainer");
    // Debian policy 5.6.2: "Name <address>".
    let inner = maintainer.trim_matches('"');
    let (name, addr) = inner.split_once(" <").expect("Name <address>");
    assert!(!name.is_empty() && addr.ends_with('>') && addr.contains('@'), "{maintainer}");
}

#[test]
fn the_deb_descriptions_are_short_lines() {
    let manifest = read("Cargo.toml");
    let synopsis = manifest.lines().find_map(|l| l.strip_prefix("description = \"")).unwrap().trim_end_matches('"');
    assert!(synopsis.len() <= 80, "the synopsis is {} characters: {synopsis}", synopsis.len());
    let table = deb_table();
    let ext = table.split("extended-description = \"\"\"").nth(1).and_then(|r| r.split("\"\"\"").next()).unwrap();
    assert!(!ext.contains('\\'), "no line continuations: the text must be lines as dpkg shows them");
    for line in ext.lines() {
        assert!(line.len() <= 79, "{} characters: {line}", line.len());
    }
}

#[test]
fn the_copyright_file_is_dep5_with_both_licenses() {
    let table = deb_table();
    assert!(table.contains("license-file = [\"dist/copyright\", \"0\"]"), "{table}");
    let c = read("dist/copyright");
    assert!(c.starts_with("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"), "{c}");
    assert!(c.contains("\nFiles: *\nCopyright: ") && c.contains("\nLicense: MIT or Apache-2.0\n"), "{c}");
    assert!(!c.contains("missing"), "{c}");
    // The MIT text is LICENSE-MIT's, as DEP-5 writes it (indented, "." for blank lines).
    let mit = read("LICENSE-MIT");
    let body: Vec<String> =
        mit.lines().skip(2).map(|l| if l.trim().is_empty() { " .".to_owned() } else { format!(" {l}") }).collect();
    assert!(
        c.contains(&format!("License: MIT\n{}\n", body.join("\n"))),
        "dist/copyright's MIT text is not LICENSE-MIT's"
    );
    assert!(c.contains("License: Apache-2.0\n") && c.contains("/usr/share/common-licenses/Apache-2.0"), "{c}");
}

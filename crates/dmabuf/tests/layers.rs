//! The layering of the crate family (see `ARCHITECTURE.md`): each crate's normal
//! dependencies name only workspace crates strictly below it, and the library crates
//! carry no tool dependency (CLI, progress bars, JSON, bench or test harnesses).

use std::collections::BTreeMap;
use std::path::Path;

/// The workspace crates, lowest first.
const LAYERS: [&str; 8] = [
    "lockdep",
    "dmabuf-sync",
    "dmabuf-mem",
    "dmabuf-core",
    "dmabuf-drivers",
    "dmabuf",
    "dmabuf-tools",
    "dmabuf-cli",
];

/// Crates only the tools may use at run time.
const TOOL_ONLY: [&str; 6] = [
    "serde_json",
    "clap",
    "indicatif",
    "criterion",
    "proptest",
    "trybuild",
];

/// The names under `section` (e.g. `dependencies`) of a Cargo.toml, by line: a
/// `[section]` table's keys, and `[target.'…'.section]` tables too.
fn deps(toml: &str, section: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            let name = line.trim_matches(|c| c == '[' || c == ']');
            inside = name == section || name.ends_with(&format!(".{section}"));
            continue;
        }
        if inside && !line.is_empty() && !line.starts_with('#') {
            if let Some(key) = line.split(['=', '.']).next() {
                out.push(key.trim().to_string());
            }
        }
    }
    out
}

fn manifests() -> BTreeMap<&'static str, String> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    LAYERS
        .iter()
        .map(|&c| {
            let p = crates.join(c).join("Cargo.toml");
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (c, text)
        })
        .collect()
}

#[test]
fn every_crate_depends_only_on_lower_layers() {
    let m = manifests();
    let rank = |c: &str| LAYERS.iter().position(|&l| l == c);
    let mut upward = Vec::new();
    for (krate, toml) in &m {
        let me = rank(krate).unwrap();
        for d in deps(toml, "dependencies") {
            if let Some(r) = rank(&d) {
                if r >= me {
                    upward.push(format!("{krate} -> {d}"));
                }
            }
        }
    }
    assert!(upward.is_empty(), "upward or sideways edges: {upward:?}");
}

#[test]
fn library_crates_carry_no_tool_dependency() {
    let m = manifests();
    for krate in &LAYERS[..6] {
        let d = deps(&m[krate], "dependencies");
        for t in TOOL_ONLY {
            assert!(
                !d.iter().any(|x| x == t),
                "{krate} has {t} among its normal dependencies"
            );
        }
        assert!(
            !d.iter().any(|x| x == "dmabuf-tools" || x == "dmabuf-cli"),
            "{krate} depends on the tools"
        );
    }
}

#[test]
fn the_parser_sees_the_sections_it_must() {
    let toml = "[package]\nname = \"x\"\n\n[dependencies]\na.workspace = true\nb = { path = \"b\" }\n# c\n\n[target.'cfg(loom)'.dependencies]\nloom.workspace = true\n\n[dev-dependencies]\nd = \"1\"\n";
    assert_eq!(deps(toml, "dependencies"), ["a", "b", "loom"]);
    assert_eq!(deps(toml, "dev-dependencies"), ["d"]);
}

//! The module layering of ARCHITECTURE.md, enforced by reading the sources (as rust-analyzer's
//! tidy tests do): a module imports only modules of a lower layer, so no change can quietly add a
//! stair going up or an import cycle. (The emulator checks its own layers: its `lib.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// plexburst's layers, bottom first. Keep in step with ARCHITECTURE.md ("Layers").
const PLEXBURST: &[&[&str]] = &[
    &["error", "units", "progress", "remote", "logging"],
    &[
        "host", "runtime", "plex", "archive", "plextv", "cloud", "seed",
    ],
    &["storage", "survey"],
    &["export"],
    &["config", "apply"],
    &["plan"],
    &["state"],
    &["report", "session"],
    &["monitor"],
    &["pipeline"],
    &["cli"],
    &["app"],
];

/// The only modules that may read the config: a run executes the plan, never the config.
const READS_CONFIG: &[&str] = &["plan", "app"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`src/storage/rclone/mount.rs` -> `storage`);
/// `None` for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

/// `text` without its `#[cfg(test)]` items (a test module may use anything), wherever they stand:
/// each is cut from the attribute to the brace that closes the item's first `{`.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let Some(open) = item.find('{') else {
            return out;
        };
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Every `crate::x` a file names outside its `#[cfg(test)]` items, including the grouped form
/// `use crate::{a, b::c}`.
fn imports(text: &str) -> BTreeSet<String> {
    let code = without_tests(text);
    let code = code.as_str();
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        // `$crate::` in a macro names this crate too; a longer identifier ending in "crate" not.
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for part in inner.split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// (module -> modules it imports) for the crate under `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(m) = module_of(src, &f) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        let deps = g.entry(m.clone()).or_default();
        // Items of the crate root (`crate::VERSION`) are not modules: only modules have layers.
        deps.extend(
            imports(&text)
                .into_iter()
                .filter(|d| *d != m && modules.contains(d)),
        );
    }
    g
}

/// Every import that does not go strictly down the layers, and every module missing from them.
fn violations(src: &Path, layers: &[&[&str]]) -> Vec<String> {
    let layer_of = |m: &str| layers.iter().position(|l| l.contains(&m));
    let mut bad = Vec::new();
    for (m, deps) in graph(src) {
        let Some(lm) = layer_of(&m) else {
            bad.push(format!(
                "module `{m}` is in no layer; add it to the layer table here and in ARCHITECTURE.md"
            ));
            continue;
        };
        for d in deps {
            match layer_of(&d) {
                Some(ld) if ld < lm => {}
                Some(ld) => bad.push(format!(
                    "`{m}` (layer {lm}) imports `{d}` (layer {ld}): imports go only to lower layers"
                )),
                None => bad.push(format!("`{m}` imports `{d}`, which is in no layer")),
            }
        }
    }
    bad
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn plexburst_imports_only_go_down_the_layers() {
    let bad = violations(&src(), PLEXBURST);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn only_the_plan_and_the_app_read_the_config() {
    let readers: Vec<String> = graph(&src())
        .into_iter()
        .filter(|(m, deps)| deps.contains("config") && !READS_CONFIG.contains(&m.as_str()))
        .map(|(m, _)| m)
        .collect();
    assert!(
        readers.is_empty(),
        "these modules import `config`; a run must read the plan instead: {readers:?}"
    );
}

#[test]
fn the_checker_sees_grouped_paths_and_upward_imports() {
    let found = imports(
        "use crate::{plan::Plan, remote};\nfn f() { crate::app::run(); }\n#[cfg(test)]\nmod tests { use crate::pipeline; fn g() { if true { crate::cli::x(); } } }\nmacro_rules! m { () => { $crate::units::x } }\n",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["app", "plan", "remote", "units"]
    );
    // A made-up crate where the bottom layer imports the top one.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("low.rs"), "use crate::high::X;\n").unwrap();
    std::fs::write(dir.path().join("high.rs"), "use crate::low::Y;\n").unwrap();
    let bad = violations(dir.path(), &[&["low"], &["high"]]);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("`low` (layer 0) imports `high` (layer 1)"));
}

//! scaleway-emulator: a stateful emulator of the Scaleway APIs plexburst uses — Instance,
//! Block, Marketplace and IAM — with the real JSON shapes and errors, the server state machine,
//! an instance hook that boots a real machine per server, and injectable faults. See README.md
//! for every behaviour and the section of scaleway.md it rests on.

pub mod apierror;
pub mod block_api;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod controls;
pub mod faults;
pub mod hook;
pub mod http;
pub mod iam;
pub mod iam_api;
pub mod instance_api;
pub mod lifecycle;
pub mod marketplace_api;
pub mod model;
pub mod options;
pub mod server;
pub mod world;

// The crate root only declares modules and re-exports the library API (README "Usage"): no module
// names `crate::<item>`, so the root is never part of an import cycle (README "Module layers").
pub use options::Options;
pub use server::{EmulatorHandle, serve, spawn};

/// Keeps the README's "Module layers" true: every module is in one layer and names (`crate::X`)
/// only modules of lower layers, so the imports stay a DAG as the crate grows.
#[cfg(test)]
mod layers {
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Layer number of each module, from the numbered lines of the README section
    /// (`N. \`a\`, \`b\` — what they are`).
    fn readme_layers(readme: &str) -> BTreeMap<String, usize> {
        let section = readme
            .split("## Module layers")
            .nth(1)
            .expect("README has a \"Module layers\" section");
        let section = section.split("\n## ").next().unwrap_or_default();
        let mut layers = BTreeMap::new();
        for line in section.lines() {
            let Some((num, rest)) = line.split_once(". ") else {
                continue;
            };
            let Ok(n) = num.parse::<usize>() else {
                continue;
            };
            let names = rest.split(" — ").next().unwrap_or_default();
            for name in names.split(',') {
                layers.insert(name.trim().trim_matches('`').to_string(), n);
            }
        }
        layers
    }

    fn ident(s: &str) -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    }

    /// The first segment of every `crate::` path in the code (line comments dropped), each name
    /// of a `crate::{a, b::c}` group included, even when rustfmt spreads it over lines.
    fn crate_refs(src: &str) -> Vec<String> {
        let code: Vec<&str> = src
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default())
            .collect();
        let code = code.join("\n");
        let mut out = Vec::new();
        let mut rest = code.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                out.extend(group[..end].split(',').map(|s| ident(s.trim())));
            } else {
                out.push(ident(rest));
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }

    #[test]
    fn crate_refs_finds_paths_and_groups_but_not_comments() {
        let src = "use crate::world::lock;\n// crate::http is only mentioned\nuse crate::{\n    model::Server,\n    hook,\n};\nlet v = crate::options::DEFAULT_PROJECT_ID;";
        assert_eq!(crate_refs(src), ["world", "model", "hook", "options"]);
    }

    /// README "Module layers": `hook` is the only module that starts processes.
    #[test]
    fn only_hook_starts_processes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for entry in std::fs::read_dir(&dir).expect("src/") {
            let path = entry.expect("src/ entry").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name == "hook.rs" || name == "lib.rs" {
                continue;
            }
            let src = std::fs::read_to_string(&path).expect("module source");
            assert!(
                !src.contains("process::Command"),
                "{name} starts a process; only src/hook.rs may"
            );
        }
    }

    #[test]
    fn every_module_imports_only_lower_layers() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(dir.join("README.md")).expect("README.md");
        let layers = readme_layers(&readme);
        let mut problems = Vec::new();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir.join("src")).expect("src/") {
            let path = entry.expect("src/ entry").path();
            if path.is_dir() {
                problems.push(format!(
                    "{}: nested modules are not checked yet",
                    path.display()
                ));
                continue;
            }
            let module = path.file_stem().unwrap_or_default().to_string_lossy();
            // The root declares every module; main.rs is the binary crate (`scaleway_emulator::`).
            if module == "lib" || module == "main" {
                continue;
            }
            files.push(module.to_string());
            let Some(&mine) = layers.get(module.as_ref()) else {
                problems.push(format!("{module} is in no layer"));
                continue;
            };
            let src = std::fs::read_to_string(&path).expect("module source");
            for r in crate_refs(&src) {
                match layers.get(&r) {
                    _ if r == module => {}
                    None => {
                        problems.push(format!("{module} names crate::{r}, not a layered module"))
                    }
                    Some(&theirs) if theirs >= mine => problems.push(format!(
                        "{module} (layer {mine}) imports {r} (layer {theirs})"
                    )),
                    Some(_) => {}
                }
            }
        }
        for name in layers.keys() {
            if !files.contains(name) {
                problems.push(format!(
                    "the README lists {name}, which has no src/{name}.rs"
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "README \"Module layers\" does not hold:\n{}",
            problems.join("\n")
        );
    }
}

//! The emulators' layer check, shared: a crate's README has a "Module layers" section whose
//! numbered lines (`N. \`a\`, \`b\` — what they are`) put each module of `src/` in a layer, and a
//! module may name (`crate::X`) only modules of lower layers, so the imports stay a DAG as the
//! crate grows. The crate root (`lib.rs`) and the binary (`main.rs`) are not layered.

use std::collections::BTreeMap;
use std::path::Path;

/// Layer number of each module, from the numbered lines of the README section.
pub fn readme_layers(readme: &str) -> BTreeMap<String, usize> {
    let Some(section) = readme.split("## Module layers").nth(1) else {
        return BTreeMap::new();
    };
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

/// The first segment of every `crate::` path in the code (line comments dropped), each name of a
/// `crate::{a, b::c}` group included, even when rustfmt spreads it over lines.
pub fn crate_refs(src: &str) -> Vec<String> {
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

/// Every way the crate at `crate_dir` breaks its README's layers: a module in no layer, an
/// import of the same or a higher layer, a name that is no layered module, a listed module with
/// no file. Empty when the layers hold.
pub fn problems(crate_dir: &Path) -> Vec<String> {
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap_or_default();
    let layers = readme_layers(&readme);
    let mut problems = Vec::new();
    if layers.is_empty() {
        problems.push("README.md has no numbered \"Module layers\" section".to_string());
    }
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(crate_dir.join("src")) else {
        return vec![format!("{}: no src/", crate_dir.display())];
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            problems.push(format!(
                "{}: nested modules are not checked yet",
                path.display()
            ));
            continue;
        }
        let module = path.file_stem().unwrap_or_default().to_string_lossy();
        if module == "lib" || module == "main" {
            continue;
        }
        files.push(module.to_string());
        let Some(&mine) = layers.get(module.as_ref()) else {
            problems.push(format!("{module} is in no layer"));
            continue;
        };
        let src = std::fs::read_to_string(&path).unwrap_or_default();
        for r in crate_refs(&src) {
            match layers.get(&r) {
                _ if r == module => {}
                None => problems.push(format!("{module} names crate::{r}, not a layered module")),
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
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_refs_finds_paths_and_groups_but_not_comments() {
        let src = "use crate::world::lock;\n// crate::http is only mentioned\nuse crate::{\n    model::Server,\n    hook,\n};\nlet v = crate::options::DEFAULT_PROJECT_ID;";
        assert_eq!(crate_refs(src), ["world", "model", "hook", "options"]);
    }

    #[test]
    fn a_stair_going_up_and_a_module_in_no_layer_are_found() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("src")).unwrap();
        std::fs::write(
            d.path().join("README.md"),
            "# x\n\n## Module layers\n\n1. `a` — leaves\n2. `b` — above\n3. `gone` — listed only\n\n## Next\n",
        )
        .unwrap();
        std::fs::write(d.path().join("src/a.rs"), "use crate::b::X;\n").unwrap();
        std::fs::write(d.path().join("src/b.rs"), "use crate::a::Y;\n").unwrap();
        std::fs::write(d.path().join("src/c.rs"), "").unwrap();
        let mut p = problems(d.path());
        p.sort();
        assert_eq!(
            p,
            [
                "a (layer 1) imports b (layer 2)",
                "c is in no layer",
                "the README lists gone, which has no src/gone.rs"
            ]
        );
    }
}

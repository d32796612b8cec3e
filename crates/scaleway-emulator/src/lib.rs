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
    use std::path::Path;

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
        let problems = readme_layers::problems(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(
            problems.is_empty(),
            "README \"Module layers\" does not hold:\n{}",
            problems.join("\n")
        );
    }
}

//! plex-emulator: a PMS-compatible server for tests and the local demo — the real library DB
//! schema, real filesystem scans, a `Plex Media Scanner` child burning real CPU for analysis,
//! and injectable faults. See README.md for every behaviour and the fact it rests on.

pub mod analysis;
pub mod browse;
pub mod claim;
pub mod cli;
pub mod container;
pub mod db;
pub mod faults;
pub mod genlib;
pub mod http;
pub mod plextv;
pub mod plextv_state;
pub mod prefs;
pub mod scan;
pub mod scanner;
pub mod server;
pub mod state;
pub mod task;
pub mod worker;
pub mod xml;

// The crate root only declares modules and re-exports the library API (README "Usage"): no module
// names `crate::<item>`, so the root is never part of an import cycle (README "Module layers").
pub use prefs::VERSION;
pub use server::serve;
pub use state::ServeOptions;

/// Keeps the README's "Module layers" true: every module is in one layer and names (`crate::X`)
/// only modules of lower layers, so the imports stay a DAG as the crate grows.
#[cfg(test)]
mod layers {
    use std::path::Path;

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

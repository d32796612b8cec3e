//! `Options`: everything one emulator instance is started with (the `serve` flags, or a Rust
//! caller's struct for [`crate::server::spawn`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::catalog::DEFAULT_ZONES;
use crate::faults::FaultSpec;

/// The project every request lands in unless it names another (`--project-id`).
pub const DEFAULT_PROJECT_ID: &str = "5ca1e000-0000-4000-8000-000000000001";
/// The organization owning the projects (`--organization-id`).
pub const DEFAULT_ORGANIZATION_ID: &str = "5ca1e000-0000-4000-8000-000000000000";

#[derive(Debug, Clone)]
pub struct Options {
    /// `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Secret keys with full access (`X-Auth-Token`). Empty: any non-empty token is accepted
    /// with full access, except the secret keys of IAM API keys, which are always checked.
    pub secret_keys: Vec<String>,
    /// Existing projects; the first is the default. Empty means [`DEFAULT_PROJECT_ID`].
    pub project_ids: Vec<String>,
    pub organization_id: String,
    pub zones: Vec<String>,
    /// The address of every dynamic IP (unless the boot hook prints another).
    pub public_ip: String,
    /// poweron → running, and reboot.
    pub boot_delay: Duration,
    /// poweroff/terminate/stop_in_place → done.
    pub stop_delay: Duration,
    /// An SBS volume's `detaching` → `available`.
    pub detach_delay: Duration,
    pub instance_hook: Option<PathBuf>,
    /// A hook call that runs longer is killed and counts as failed.
    pub hook_timeout: Duration,
    pub faults: Vec<FaultSpec>,
    /// Seed of the fault rolls; None seeds from the clock.
    pub seed: Option<u64>,
    /// Keep every resource in this JSON file, loaded at start and rewritten after each change.
    pub state_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secret_keys: Vec::new(),
            project_ids: vec![DEFAULT_PROJECT_ID.to_string()],
            organization_id: DEFAULT_ORGANIZATION_ID.to_string(),
            zones: DEFAULT_ZONES.iter().map(|z| z.to_string()).collect(),
            public_ip: "127.0.0.1".to_string(),
            boot_delay: Duration::from_secs(1),
            stop_delay: Duration::from_secs(1),
            detach_delay: Duration::from_secs(1),
            instance_hook: None,
            hook_timeout: Duration::from_secs(600),
            faults: Vec::new(),
            seed: None,
            state_file: None,
        }
    }
}

impl Options {
    pub fn default_project(&self) -> &str {
        self.project_ids
            .first()
            .map(String::as_str)
            .unwrap_or(DEFAULT_PROJECT_ID)
    }
}

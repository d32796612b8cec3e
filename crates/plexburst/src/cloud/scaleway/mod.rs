//! Scaleway (scaleway.md): credentials as the `scw` CLI reads them, the API client, the sizing
//! profiles, and the cloud-init user data a run's instance boots with.

pub mod api;
pub mod credentials;
pub mod userdata;

use serde::{Deserialize, Serialize};

/// The tag every resource of plexburst carries; `plexburst-run=<id>` names the run.
pub const TAG: &str = "plexburst";

/// `plexburst-run=<id>`.
pub fn run_tag(run_id: &str) -> String {
    format!("{TAG}-run={run_id}")
}

/// A sizing profile's machine: the seed's four (seed-decisions.md "Instance Profiles"), with the
/// root disk sized for the VFS cache within the type's local-volume maximum (scaleway.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub commercial_type: &'static str,
    pub root_volume_gb: u64,
}

pub fn profile_machine(profile: &str) -> Machine {
    match profile {
        "lite" => Machine {
            commercial_type: "DEV1-S",
            root_volume_gb: 20,
        },
        "power" => Machine {
            commercial_type: "GP1-S",
            root_volume_gb: 200,
        },
        "superpower" => Machine {
            commercial_type: "GP1-M",
            root_volume_gb: 400,
        },
        _ => Machine {
            commercial_type: "DEV1-M",
            root_volume_gb: 40,
        },
    }
}

/// The profiles, in order, for `plexburst profiles`.
pub const PROFILES: [&str; 4] = ["lite", "standard", "power", "superpower"];

/// The plan of a Scaleway target: everything provisioning will ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalewayPlan {
    /// Zones in the order they are tried; empty: the credentials' default zone.
    pub zones: Vec<String>,
    /// The commercial type first, then the fallbacks, in the order they are tried.
    pub types: Vec<String>,
    pub image_label: String,
    pub root_volume_type: String,
    pub root_volume_bytes: u64,
    pub ssh_port: u16,
    #[serde(with = "crate::units::human")]
    pub max_lifetime: std::time::Duration,
    #[serde(with = "crate::units::human")]
    pub boot_timeout: std::time::Duration,
    /// The tags of the server (`RUN-ID` for the run's id).
    pub tags: Vec<String>,
    /// Caps: once the instance has cost `budget_eur` or run `max_runtime`, the watched phase
    /// stops waiting, what exists is exported, and the instance is deleted.
    pub budget_eur: Option<f64>,
    #[serde(default, with = "crate::units::human_opt")]
    pub max_runtime: Option<std::time::Duration>,
    /// Without the IAM key for the deadline, accept an in-guest shutdown (billing may go on).
    #[serde(default)]
    pub allow_weak_deadline: bool,
}

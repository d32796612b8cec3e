//! What the emulated Scaleway sells: zones, commercial types with their specs and prices
//! (scaleway.md §2.11, §4), and the public images with their Marketplace local images (§2.8).
//! Fixed data; image IDs are derived from (zone, label, type) so they are stable across restarts.

use serde_json::{Value, json};

/// The zones served unless `--zone` says otherwise.
pub const DEFAULT_ZONES: [&str; 4] = ["fr-par-1", "fr-par-2", "nl-ams-1", "pl-waw-1"];

const GIB: u64 = 1 << 30;
const GB: u64 = 1_000_000_000;
const MBIT: u64 = 1_000_000;

/// One commercial type. Sizes in bytes (local storage base 10, RAM base 2), bandwidth in bit/s.
#[derive(Debug, Clone, Copy)]
pub struct ServerType {
    pub name: &'static str,
    pub ncpus: u32,
    pub ram: u64,
    /// Total local (l_ssd) storage bound; 0 for block-only types (§2.11).
    pub local_max: u64,
    /// EUR/hour excluding VAT, read in fr-par-1 on 2026-07-01 (§4).
    pub hourly_price: f64,
    pub internet_bandwidth: u64,
    pub block_bandwidth: u64,
}

const fn t(
    name: &'static str,
    ncpus: u32,
    ram_gib: u64,
    local_gb: u64,
    hourly_price: f64,
    bw_mbit: u64,
    block_mib: u64,
) -> ServerType {
    ServerType {
        name,
        ncpus,
        ram: ram_gib * GIB,
        local_max: local_gb * GB,
        hourly_price,
        internet_bandwidth: bw_mbit * MBIT,
        block_bandwidth: block_mib * 1024 * 1024,
    }
}

/// Specs and prices from scaleway.md §4 (the 2026-07-01 column). DEV1-S's bandwidths are the
/// recorded ones (§2.11); the other bandwidths are not in the reference and were chosen to grow
/// with the size.
pub const SERVER_TYPES: &[ServerType] = &[
    t("DEV1-S", 2, 2, 20, 0.008976, 200, 100),
    t("DEV1-M", 3, 4, 40, 0.020196, 300, 150),
    t("DEV1-L", 4, 8, 80, 0.04284, 400, 200),
    t("DEV1-XL", 4, 12, 120, 0.065076, 500, 250),
    t("GP1-XS", 4, 16, 150, 0.09282, 500, 300),
    t("GP1-S", 8, 32, 300, 0.19074, 800, 500),
    t("GP1-M", 16, 64, 600, 0.38352, 1500, 750),
    t("GP1-L", 32, 128, 600, 0.77418, 5000, 1024),
    t("GP1-XL", 48, 256, 600, 1.67382, 10000, 2048),
    t("PLAY2-PICO", 1, 2, 0, 0.01428, 100, 100),
    t("PLAY2-NANO", 2, 4, 0, 0.02754, 200, 150),
    t("PLAY2-MICRO", 4, 8, 0, 0.05508, 400, 200),
    t("PRO2-XXS", 2, 8, 0, 0.0561, 350, 200),
    t("PRO2-XS", 4, 16, 0, 0.1122, 700, 400),
    t("PRO2-S", 8, 32, 0, 0.22338, 1500, 800),
    t("PRO2-M", 16, 64, 0, 0.44676, 3000, 1600),
    t("PRO2-L", 32, 128, 0, 0.89454, 6000, 3200),
    t("POP2-2C-8G", 2, 8, 0, 0.0735, 400, 200),
    t("POP2-4C-16G", 4, 16, 0, 0.147, 800, 400),
    t("POP2-8C-32G", 8, 32, 0, 0.29, 1600, 800),
    t("POP2-16C-64G", 16, 64, 0, 0.59, 3200, 1600),
];

pub fn server_type(name: &str) -> Option<&'static ServerType> {
    SERVER_TYPES.iter().find(|t| t.name == name)
}

/// Smallest l_ssd volume a type accepts (the recorded `per_volume_constraint`, §2.11).
pub const LSSD_MIN: u64 = GB;

impl ServerType {
    pub fn has_local_storage(&self) -> bool {
        self.local_max > 0
    }

    /// The `products/servers` entry (§2.11's recorded DEV1-S entry, field for field).
    /// `monthly_price` is hourly × 730, which is what the recorded pair shows.
    pub fn to_json(&self, end_of_service: bool) -> Value {
        let local = self.has_local_storage();
        json!({
            "alt_names": [],
            "arch": "x86_64",
            "ncpus": self.ncpus,
            "ram": self.ram,
            "gpu": 0,
            "gpu_info": null,
            "mig_profile": null,
            "volumes_constraint": {"min_size": 0, "max_size": self.local_max},
            "per_volume_constraint": {"l_ssd": {
                "min_size": if local { LSSD_MIN } else { 0 },
                "max_size": if local { 800 * GB } else { 0 },
            }},
            "scratch_storage_max_size": 0,
            "scratch_storage_max_volumes_count": 0,
            "monthly_price": (self.hourly_price * 730.0 * 1e6).round() / 1e6,
            "hourly_price": self.hourly_price,
            "capabilities": {
                "boot_types": ["local", "rescue"],
                "placement_groups": true,
                "block_storage": true,
                "hot_snapshots_local_volume": local,
                "private_network": 8,
                "max_file_systems": 0,
            },
            "network": {
                "ipv6_support": true,
                "sum_internal_bandwidth": self.internet_bandwidth,
                "sum_internet_bandwidth": self.internet_bandwidth,
                "interfaces": [{
                    "internal_bandwidth": self.internet_bandwidth,
                    "internet_bandwidth": self.internet_bandwidth,
                }],
            },
            "block_bandwidth": self.block_bandwidth,
            "end_of_service": end_of_service,
        })
    }
}

/// A Marketplace label and the name of its image (the names as the console shows them).
pub const LABELS: &[(&str, &str)] = &[
    ("debian_bookworm", "Debian Bookworm"),
    ("ubuntu_noble", "Ubuntu 24.04 Noble Numbat"),
    ("ubuntu_jammy", "Ubuntu 22.04 Jammy Jellyfish"),
];

/// Size of the root volume an image gives when the create request names none (§2.1: 10 GB for
/// Ubuntu on SBS). For local images the type's maximum is used instead (§2.1, §5.4).
pub const IMAGE_SIZE: u64 = 10 * GB;

/// Which root volume an image boots from: its Marketplace `type` (§2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Local,
    Sbs,
}

impl ImageKind {
    pub fn marketplace_type(self) -> &'static str {
        match self {
            ImageKind::Local => "instance_local",
            ImageKind::Sbs => "instance_sbs",
        }
    }
}

/// One public image in one zone.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub zone: String,
    pub label: &'static str,
    pub name: &'static str,
    pub kind: ImageKind,
    pub root_snapshot_id: String,
}

/// Every image of the given zones: one per (zone, label, kind).
pub fn images(zones: &[String]) -> Vec<Image> {
    let mut out = Vec::new();
    for zone in zones {
        for &(label, name) in LABELS {
            for kind in [ImageKind::Local, ImageKind::Sbs] {
                let key = format!("image/{zone}/{label}/{}", kind.marketplace_type());
                out.push(Image {
                    id: stable_uuid(&key),
                    zone: zone.clone(),
                    label,
                    name,
                    kind,
                    root_snapshot_id: stable_uuid(&format!("{key}/root")),
                });
            }
        }
    }
    out
}

impl Image {
    /// Types a local image runs on: the ones with local storage; an SBS image runs on all.
    pub fn compatible_types(&self) -> Vec<&'static str> {
        SERVER_TYPES
            .iter()
            .filter(|t| self.kind == ImageKind::Sbs || t.has_local_storage())
            .map(|t| t.name)
            .collect()
    }

    /// The Marketplace v2 `LocalImage` (§2.8).
    pub fn local_image_json(&self) -> Value {
        json!({
            "id": self.id,
            "arch": "x86_64",
            "zone": self.zone,
            "compatible_commercial_types": self.compatible_types(),
            "label": self.label,
            "type": self.kind.marketplace_type(),
        })
    }

    /// The Instance API `Image` (§2.2's embedded image, §2.8's `GET images/{id}`).
    pub fn to_json(&self, organization: &str, project: &str, created: &str) -> Value {
        let root = match self.kind {
            ImageKind::Local => json!({
                "id": self.root_snapshot_id, "name": format!("{}_l_ssd", self.label),
                "size": IMAGE_SIZE, "volume_type": "l_ssd",
            }),
            // The recorded SBS image reports its snapshot with size 0 and no name (§2.2).
            ImageKind::Sbs => json!({
                "id": self.root_snapshot_id, "name": "", "size": 0, "volume_type": "sbs_snapshot",
            }),
        };
        json!({
            "id": self.id,
            "name": self.name,
            "arch": "x86_64",
            "creation_date": created,
            "modification_date": created,
            "default_bootscript": null,
            "extra_volumes": {},
            "from_server": "",
            "organization": organization,
            "project": project,
            "public": true,
            "root_volume": root,
            "state": "available",
            "tags": [],
            "zone": self.zone,
        })
    }
}

/// A UUID-shaped ID derived from `key` (FNV-1a, two seeds), so fixed objects keep their IDs.
pub fn stable_uuid(key: &str) -> String {
    fn fnv(seed: u64, key: &str) -> u64 {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    let hi = fnv(0xcbf2_9ce4_8422_2325, key);
    let lo = fnv(0x6c62_272e_07bb_0142, key);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev1_s_matches_the_recorded_entry() {
        let v = server_type("DEV1-S").unwrap().to_json(false);
        assert_eq!(v["ncpus"], 2);
        assert_eq!(v["ram"], 2147483648u64);
        assert_eq!(v["volumes_constraint"]["max_size"], 20000000000u64);
        assert_eq!(v["hourly_price"], 0.008976);
        assert_eq!(v["monthly_price"], 6.55248);
        assert_eq!(v["network"]["sum_internet_bandwidth"], 200000000);
        assert_eq!(v["block_bandwidth"], 104857600);
    }

    #[test]
    fn image_ids_are_stable_and_distinct() {
        let zones = vec!["fr-par-1".to_string(), "nl-ams-1".to_string()];
        let a = images(&zones);
        let b = images(&zones);
        assert_eq!(a.len(), 2 * LABELS.len() * 2);
        assert!(a.iter().zip(&b).all(|(x, y)| x.id == y.id));
        let mut ids: Vec<_> = a.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), a.len());
        assert!(uuid::Uuid::parse_str(&ids[0]).is_ok());
    }

    #[test]
    fn local_images_skip_block_only_types() {
        let imgs = images(&["fr-par-1".to_string()]);
        let local = imgs.iter().find(|i| i.kind == ImageKind::Local).unwrap();
        let sbs = imgs.iter().find(|i| i.kind == ImageKind::Sbs).unwrap();
        assert!(local.compatible_types().contains(&"DEV1-S"));
        assert!(!local.compatible_types().contains(&"PRO2-S"));
        assert!(sbs.compatible_types().contains(&"PRO2-S"));
    }
}

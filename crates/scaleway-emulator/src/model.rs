//! The resources the emulator keeps (servers, local and block volumes, flexible IPs, IAM
//! applications, policies and API keys), as stored in memory and in the `--state-file`, and
//! the API JSON of those that need nothing but themselves to render.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerState {
    #[serde(rename = "running")]
    Running,
    #[serde(rename = "stopped")]
    Stopped,
    #[serde(rename = "stopped in place")]
    StoppedInPlace,
    #[serde(rename = "starting")]
    Starting,
    #[serde(rename = "stopping")]
    Stopping,
}

impl ServerState {
    /// The API spelling; `stopped in place` has spaces (scaleway.md §2.2).
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Running => "running",
            ServerState::Stopped => "stopped",
            ServerState::StoppedInPlace => "stopped in place",
            ServerState::Starting => "starting",
            ServerState::Stopping => "stopping",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ServerState::Running,
            ServerState::Stopped,
            ServerState::StoppedInPlace,
            ServerState::Starting,
            ServerState::Stopping,
        ]
        .into_iter()
        .find(|st| st.as_str() == s || st.as_str().replace(' ', "_") == s)
    }

    pub fn is_transient(self) -> bool {
        matches!(self, ServerState::Starting | ServerState::Stopping)
    }

    /// `allowed_actions` per state, as recorded (§2.2); `stopped in place` is chosen.
    pub fn allowed_actions(self) -> &'static [&'static str] {
        match self {
            ServerState::Stopped => &["poweron", "backup"],
            ServerState::StoppedInPlace => &["poweron", "poweroff", "backup"],
            ServerState::Starting | ServerState::Stopping => &["stop_in_place", "backup"],
            ServerState::Running => &["poweroff", "terminate", "reboot", "stop_in_place", "backup"],
        }
    }
}

/// The transition a transient server is in; kept in the state file so a restarted emulator
/// finishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pending {
    Boot,
    Reboot,
    Poweroff,
    StopInPlace,
    Terminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeKind {
    #[serde(rename = "l_ssd")]
    LSsd,
    #[serde(rename = "sbs_volume")]
    Sbs,
}

impl VolumeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeKind::LSsd => "l_ssd",
            VolumeKind::Sbs => "sbs_volume",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachedVolume {
    pub kind: VolumeKind,
    pub id: String,
}

/// The IPv4 a server gets at power-on when it needs one and has no flexible IP (§2.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DynamicIp {
    pub id: String,
    pub address: String,
    pub ipam_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Location {
    pub cluster_id: String,
    pub hypervisor_id: String,
    pub node_id: String,
    pub platform_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub zone: String,
    pub project: String,
    pub organization: String,
    pub commercial_type: String,
    pub image_id: String,
    pub tags: Vec<String>,
    pub dynamic_ip_required: bool,
    pub routed_ip_enabled: bool,
    pub enable_ipv6: bool,
    pub boot_type: String,
    pub protected: bool,
    pub state: ServerState,
    pub state_detail: String,
    /// Index ("0" is the root) → the volume.
    pub volumes: BTreeMap<u32, AttachedVolume>,
    pub dynamic_ip: Option<DynamicIp>,
    pub mac_address: String,
    pub security_group_id: String,
    pub location: Option<Location>,
    pub user_data: BTreeMap<String, Vec<u8>>,
    pub pending: Option<Pending>,
    /// Bumped by every transition, so a stale timer never finishes a newer one.
    pub epoch: u64,
    pub creation_date: Timestamp,
    pub modification_date: Timestamp,
}

/// An Instance API volume (`l_ssd`), §2.7.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceVolume {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub zone: String,
    pub project: String,
    pub organization: String,
    pub tags: Vec<String>,
    pub server_id: Option<String>,
    pub creation_date: Timestamp,
    pub modification_date: Timestamp,
}

impl InstanceVolume {
    /// `Volume` (§2.7); `server_name` is the attached server's name.
    pub fn to_json(&self, server_name: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "export_uri": null,
            "size": self.size,
            "volume_type": "l_ssd",
            "creation_date": fmt(self.creation_date),
            "modification_date": fmt(self.modification_date),
            "organization": self.organization,
            "project": self.project,
            "tags": self.tags,
            "server": self.server_id.as_ref().map(|id| json!({"id": id, "name": server_name.unwrap_or_default()})),
            "state": "available",
            "zone": self.zone,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefStatus {
    Attached,
    Detaching,
}

/// A Block API reference from a volume to the server using it (§2.7).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockRef {
    pub id: String,
    pub server_id: String,
    pub created_at: Timestamp,
    pub status: RefStatus,
}

/// An SBS volume (Block API v1alpha1, §2.7).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockVolume {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub perf_iops: u32,
    pub zone: String,
    pub project: String,
    pub tags: Vec<String>,
    pub references: Vec<BlockRef>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_detached_at: Option<Timestamp>,
}

impl BlockVolume {
    /// `in_use` while any reference exists (detaching included), else `available`.
    pub fn status(&self) -> &'static str {
        if self.references.is_empty() {
            "available"
        } else {
            "in_use"
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "type": if self.perf_iops >= 15000 { "sbs_15k" } else { "sbs_5k" },
            "size": self.size,
            "project_id": self.project,
            "created_at": fmt(self.created_at),
            "updated_at": fmt(self.updated_at),
            "references": self.references.iter().map(|r| json!({
                "id": r.id,
                "product_resource_type": "instance_server",
                "product_resource_id": r.server_id,
                "created_at": fmt(r.created_at),
                "type": "exclusive",
                "status": match r.status { RefStatus::Attached => "attached", RefStatus::Detaching => "detaching" },
            })).collect::<Vec<_>>(),
            "parent_snapshot_id": null,
            "status": self.status(),
            "tags": self.tags,
            "specs": {"perf_iops": self.perf_iops, "class": "sbs"},
            "last_detached_at": self.last_detached_at.map(fmt),
            "zone": self.zone,
        })
    }
}

/// A flexible IP (§2.9).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ip {
    pub id: String,
    pub address: String,
    pub prefix: Option<String>,
    pub reverse: Option<String>,
    pub server_id: Option<String>,
    pub zone: String,
    pub project: String,
    pub organization: String,
    /// `routed_ipv4` or `routed_ipv6`.
    pub ip_type: String,
    pub tags: Vec<String>,
    pub ipam_id: String,
    /// Orders a server's flexible IPs by attachment.
    pub attached_seq: u64,
}

impl Ip {
    pub fn to_json(&self, server_name: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "address": self.address,
            "prefix": self.prefix,
            "reverse": self.reverse,
            "server": self.server_id.as_ref().map(|id| json!({"id": id, "name": server_name.unwrap_or_default()})),
            "organization": self.organization,
            "project": self.project,
            "zone": self.zone,
            "type": self.ip_type,
            "state": if self.server_id.is_some() { "attached" } else { "detached" },
            "tags": self.tags,
            "ipam_id": self.ipam_id,
        })
    }

    /// The `ServerIP` element of a server's `public_ips` (§2.2).
    pub fn server_ip_json(&self) -> Value {
        let v6 = self.ip_type == "routed_ipv6";
        json!({
            "id": self.id,
            "address": self.address,
            "dynamic": false,
            "gateway": if v6 { "fe80::1" } else { "62.210.0.1" },
            "netmask": if v6 { "64" } else { "32" },
            "family": if v6 { "inet6" } else { "inet" },
            "provisioning_mode": if v6 { "slaac" } else { "dhcp" },
            "tags": self.tags,
            "state": "attached",
            "ipam_id": self.ipam_id,
        })
    }
}

impl DynamicIp {
    pub fn server_ip_json(&self) -> Value {
        json!({
            "id": self.id,
            "address": self.address,
            "dynamic": true,
            "gateway": "62.210.0.1",
            "netmask": "32",
            "family": "inet",
            "provisioning_mode": "dhcp",
            "tags": [],
            "state": "pending",
            "ipam_id": self.ipam_id,
        })
    }
}

/// An IAM application (§2.12).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Application {
    pub id: String,
    pub name: String,
    pub description: String,
    pub organization_id: String,
    pub tags: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Application {
    pub fn to_json(&self, nb_api_keys: usize) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "created_at": fmt(self.created_at),
            "updated_at": fmt(self.updated_at),
            "organization_id": self.organization_id,
            "editable": true,
            "deletable": true,
            "managed": false,
            "nb_api_keys": nb_api_keys,
            "tags": self.tags,
        })
    }
}

/// One policy rule: permission sets over projects, or over the organization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub permission_set_names: Vec<String>,
    pub project_ids: Option<Vec<String>>,
    pub organization_id: Option<String>,
    pub condition: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    pub organization_id: String,
    pub tags: Vec<String>,
    pub application_id: Option<String>,
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    pub no_principal: bool,
    pub rules: Vec<Rule>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Policy {
    pub fn to_json(&self) -> Value {
        let scopes: usize = self
            .rules
            .iter()
            .map(|r| r.project_ids.as_ref().map_or(1, Vec::len))
            .sum();
        let sets: usize = self
            .rules
            .iter()
            .map(|r| r.permission_set_names.len())
            .sum();
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "organization_id": self.organization_id,
            "created_at": fmt(self.created_at),
            "updated_at": fmt(self.updated_at),
            "editable": true,
            "deletable": true,
            "managed": false,
            "nb_rules": self.rules.len(),
            "nb_scopes": scopes,
            "nb_permission_sets": sets,
            "tags": self.tags,
        });
        // Exactly one principal (§2.12).
        let principal = if let Some(a) = &self.application_id {
            ("application_id", json!(a))
        } else if let Some(u) = &self.user_id {
            ("user_id", json!(u))
        } else if let Some(g) = &self.group_id {
            ("group_id", json!(g))
        } else {
            ("no_principal", json!(true))
        };
        v[principal.0] = principal.1;
        v
    }
}

impl Rule {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "permission_set_names": self.permission_set_names,
            "condition": self.condition,
        });
        match (&self.project_ids, &self.organization_id) {
            (Some(p), _) => {
                v["project_ids"] = json!(p);
                v["permission_sets_scope_type"] = json!("projects");
            }
            (None, Some(o)) => {
                v["organization_id"] = json!(o);
                v["permission_sets_scope_type"] = json!("organization");
            }
            (None, None) => {}
        }
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub access_key: String,
    pub secret_key: String,
    pub application_id: String,
    pub description: String,
    pub default_project_id: String,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ApiKey {
    /// `APIKey` (§2.12); the secret only in the create response.
    pub fn to_json(&self, with_secret: bool) -> Value {
        let mut v = json!({
            "access_key": self.access_key,
            "application_id": self.application_id,
            "description": self.description,
            "created_at": fmt(self.created_at),
            "updated_at": fmt(self.updated_at),
            "expires_at": self.expires_at.map(fmt),
            "default_project_id": self.default_project_id,
            "editable": true,
            "deletable": true,
            "managed": false,
            "creation_ip": "127.0.0.1",
        });
        if with_secret {
            v["secret_key"] = json!(self.secret_key);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_both_spellings() {
        assert_eq!(
            ServerState::parse("stopped in place"),
            Some(ServerState::StoppedInPlace)
        );
        assert_eq!(
            ServerState::parse("stopped_in_place"),
            Some(ServerState::StoppedInPlace)
        );
        assert_eq!(ServerState::parse("running"), Some(ServerState::Running));
        assert_eq!(ServerState::parse("gone"), None);
        assert_eq!(
            serde_json::to_string(&ServerState::StoppedInPlace).unwrap(),
            "\"stopped in place\""
        );
    }

    #[test]
    fn a_policy_names_exactly_one_principal() {
        let now = Timestamp::now();
        let mut p = Policy {
            id: "p".into(),
            name: "n".into(),
            description: String::new(),
            organization_id: "o".into(),
            tags: vec![],
            application_id: Some("a".into()),
            user_id: None,
            group_id: None,
            no_principal: false,
            rules: vec![Rule {
                id: "r".into(),
                permission_set_names: vec!["InstancesFullAccess".into()],
                project_ids: Some(vec!["p1".into(), "p2".into()]),
                organization_id: None,
                condition: String::new(),
            }],
            created_at: now,
            updated_at: now,
        };
        let v = p.to_json();
        assert_eq!(v["application_id"], "a");
        assert!(v.get("no_principal").is_none());
        assert_eq!(v["nb_scopes"], 2);
        p.application_id = None;
        assert_eq!(p.to_json()["no_principal"], true);
    }
}

//! The emulated cloud: every resource in every zone, the rules that change them (create,
//! actions, the server state machine of scaleway.md Appendix A, deletes, detaches), who may do
//! what (`authorize`; IAM objects and authentication are in `iam`), the request log, and the `--state-file`. Synchronous and
//! free of I/O except the state file; work that takes time (boot, stop, hooks, SBS detach) is
//! returned as [`Effect`]s for `lifecycle` to carry out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::apierror::ApiError;
use crate::catalog::{self, IMAGE_SIZE, Image, ImageKind, LSSD_MIN};
use crate::clock::{Clock, fmt};
use crate::faults::Faults;
use crate::hook::HookCall;
use crate::model::{
    ApiKey, Application, AttachedVolume, BlockRef, BlockVolume, DynamicIp, InstanceVolume, Ip,
    Location, Pending, Policy, RefStatus, Server, ServerState, VolumeKind,
};
use crate::options::Options;

pub type Shared = Arc<Mutex<World>>;

/// Lock the world; a panic elsewhere never makes it unusable.
pub fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Work that takes time, for `lifecycle` to run after the lock is released.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The server entered `pending` with this epoch: boot or stop it.
    Transition { server_id: String, epoch: u64 },
    /// Run the hook's `halt` for a server that is gone (DELETE).
    Halt {
        server_id: String,
        zone: String,
        name: String,
        commercial_type: String,
    },
    /// An SBS reference is `detaching`: make the volume available later.
    Detach {
        volume_id: String,
        server_id: String,
    },
}

/// The API families, for IAM permission sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Instance,
    Block,
    Iam,
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub product: Product,
    pub write: bool,
    /// None: every project of the organization.
    pub projects: Option<Vec<String>>,
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A `--secret-key` (or any token when none is configured): full access.
    Admin,
    /// The secret of an IAM API key: the grants of its application's policies.
    Key {
        access_key: String,
        grants: Vec<Grant>,
    },
}

impl Caller {
    pub fn label(&self) -> String {
        match self {
            Caller::Admin => "admin".into(),
            Caller::Key { access_key, .. } => access_key.clone(),
        }
    }
}

/// One line of `GET /_emulator/requests` (no bodies, no headers: nothing secret).
#[derive(Debug, Clone, Serialize)]
pub struct RequestLog {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// `admin`, an IAM access key, or empty when authentication failed.
    pub caller: String,
}

/// The state file: every resource and the clock.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    clock: Clock,
    seq: u64,
    servers: BTreeMap<String, Server>,
    volumes: BTreeMap<String, InstanceVolume>,
    block_volumes: BTreeMap<String, BlockVolume>,
    ips: BTreeMap<String, Ip>,
    applications: BTreeMap<String, Application>,
    policies: BTreeMap<String, Policy>,
    api_keys: BTreeMap<String, ApiKey>,
}

const STATE_VERSION: u32 = 1;
const REQUEST_LOG_MAX: usize = 20_000;

pub struct World {
    pub opts: Options,
    pub clock: Clock,
    pub faults: Faults,
    pub images: Vec<Image>,
    pub servers: BTreeMap<String, Server>,
    pub volumes: BTreeMap<String, InstanceVolume>,
    pub block_volumes: BTreeMap<String, BlockVolume>,
    pub ips: BTreeMap<String, Ip>,
    pub applications: BTreeMap<String, Application>,
    pub policies: BTreeMap<String, Policy>,
    /// By access key.
    pub api_keys: BTreeMap<String, ApiKey>,
    pub requests: VecDeque<RequestLog>,
    pub request_seq: u64,
    pub hook_calls: Vec<HookCall>,
    /// Counter for addresses and attachment order.
    seq: u64,
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn tags_match(have: &[String], want: &[String]) -> bool {
    want.iter().all(|t| have.contains(t))
}

/// Split a comma-joined filter (`tags=a,b`), dropping empties.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

// ---- Request bodies (field names as the API's) ----

#[derive(Debug, Default, Deserialize)]
pub struct VolumeTemplate {
    pub id: Option<String>,
    pub name: Option<String>,
    pub size: Option<u64>,
    pub volume_type: Option<String>,
    pub base_snapshot: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CreateServer {
    pub name: Option<String>,
    pub commercial_type: Option<String>,
    pub image: Option<String>,
    pub volumes: Option<BTreeMap<String, VolumeTemplate>>,
    pub dynamic_ip_required: Option<bool>,
    pub routed_ip_enabled: Option<bool>,
    pub enable_ipv6: Option<bool>,
    pub boot_type: Option<String>,
    pub project: Option<String>,
    pub organization: Option<String>,
    pub tags: Option<Vec<String>>,
    pub public_ip: Option<String>,
    pub public_ips: Option<Vec<String>>,
    pub protected: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CreateIp {
    pub project: Option<String>,
    pub organization: Option<String>,
    #[serde(rename = "type")]
    pub ip_type: Option<String>,
    pub tags: Option<Vec<String>>,
    pub server: Option<String>,
}

impl World {
    pub fn new(opts: Options) -> Self {
        let seed = opts
            .seed
            .unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64);
        World {
            faults: Faults::new(opts.faults.clone(), seed),
            images: catalog::images(&opts.zones),
            opts,
            clock: Clock::default(),
            servers: BTreeMap::new(),
            volumes: BTreeMap::new(),
            block_volumes: BTreeMap::new(),
            ips: BTreeMap::new(),
            applications: BTreeMap::new(),
            policies: BTreeMap::new(),
            api_keys: BTreeMap::new(),
            requests: VecDeque::new(),
            request_seq: 0,
            hook_calls: Vec::new(),
            seq: 0,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn projects(&self) -> Vec<String> {
        if self.opts.project_ids.is_empty() {
            vec![self.opts.default_project().to_string()]
        } else {
            self.opts.project_ids.clone()
        }
    }

    pub fn has_zone(&self, zone: &str) -> bool {
        self.opts.zones.iter().any(|z| z == zone)
    }

    /// 400 `invalid_arguments` on a zone the emulator does not serve (chosen, README).
    pub fn check_zone(&self, zone: &str) -> Result<(), ApiError> {
        if self.has_zone(zone) {
            Ok(())
        } else {
            Err(ApiError::invalid_argument(
                "zone",
                "constraint",
                format!(
                    "unknown zone {zone:?}; this emulator serves {}",
                    self.opts.zones.join(", ")
                ),
            ))
        }
    }

    pub fn log_request(&mut self, mut entry: RequestLog) {
        self.request_seq += 1;
        entry.seq = self.request_seq;
        if self.requests.len() >= REQUEST_LOG_MAX {
            self.requests.pop_front();
        }
        self.requests.push_back(entry);
    }

    /// 403 `permissions_denied` unless the caller may `write` (or read) `product` in
    /// `project` (None: any project, for catalog-like calls).
    pub fn authorize(
        &self,
        caller: &Caller,
        product: Product,
        write: bool,
        project: Option<&str>,
        resource: &str,
    ) -> Result<(), ApiError> {
        let Caller::Key { grants, .. } = caller else {
            return Ok(());
        };
        let ok = grants.iter().any(|g| {
            g.product == product
                && (g.write || !write)
                && match (project, &g.projects) {
                    (_, None) | (None, Some(_)) => true,
                    (Some(p), Some(ps)) => ps.iter().any(|x| x == p),
                }
        });
        if ok {
            Ok(())
        } else {
            Err(ApiError::denied(
                resource,
                if write { "write" } else { "read" },
            ))
        }
    }

    /// Projects whose resources a list shows the caller; None: all. A key with no read grant
    /// on the product is refused outright.
    pub fn readable_projects(
        &self,
        caller: &Caller,
        product: Product,
        resource: &str,
    ) -> Result<Option<BTreeSet<String>>, ApiError> {
        let Caller::Key { grants, .. } = caller else {
            return Ok(None);
        };
        let mine: Vec<&Grant> = grants.iter().filter(|g| g.product == product).collect();
        if mine.is_empty() {
            return Err(ApiError::denied(resource, "read"));
        }
        if mine.iter().any(|g| g.projects.is_none()) {
            return Ok(None);
        }
        Ok(Some(
            mine.iter()
                .flat_map(|g| g.projects.iter().flatten().cloned())
                .collect(),
        ))
    }

    // ---- Catalog ----

    pub fn image(&self, zone: &str, id: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.zone == zone && i.id == id)
    }

    pub fn image_json(&self, img: &Image) -> Value {
        img.to_json(
            &self.opts.organization_id,
            self.opts.default_project(),
            "2025-01-01T00:00:00.000000+00:00",
        )
    }

    pub fn availability(&self, zone: &str, ty: &str) -> &'static str {
        if self.faults.shortage(ty, zone) {
            "shortage"
        } else {
            "available"
        }
    }

    // ---- Servers ----

    fn server_in(&self, zone: &str, id: &str) -> Result<&Server, ApiError> {
        self.servers
            .get(id)
            .filter(|s| s.zone == zone)
            .ok_or_else(|| ApiError::not_found("instance_server", id))
    }

    /// The server, after checking the caller may read (or write) it.
    pub fn server_for(
        &self,
        caller: &Caller,
        zone: &str,
        id: &str,
        write: bool,
    ) -> Result<&Server, ApiError> {
        let s = self.server_in(zone, id)?;
        self.authorize(
            caller,
            Product::Instance,
            write,
            Some(&s.project),
            "instance_server",
        )?;
        Ok(s)
    }

    /// Flexible IPs attached to a server, in attachment order.
    fn flexible_ips_of(&self, server_id: &str) -> Vec<&Ip> {
        let mut v: Vec<&Ip> = self
            .ips
            .values()
            .filter(|ip| ip.server_id.as_deref() == Some(server_id))
            .collect();
        v.sort_by_key(|ip| ip.attached_seq);
        v
    }

    /// A dynamic IPv4 exists exactly while the server is starting or running, wants one, and has
    /// no flexible IPv4 (§2.1 `dynamic_ip_required`, §2.2). Its address survives a reboot.
    fn refresh_dynamic_ip(&mut self, server_id: &str) {
        let has_flexible_v4 = self
            .flexible_ips_of(server_id)
            .iter()
            .any(|ip| ip.ip_type == "routed_ipv4");
        let public_ip = self.opts.public_ip.clone();
        let Some(s) = self.servers.get_mut(server_id) else {
            return;
        };
        let needs = s.dynamic_ip_required
            && matches!(s.state, ServerState::Starting | ServerState::Running)
            && !has_flexible_v4;
        if !needs {
            s.dynamic_ip = None;
        } else if s.dynamic_ip.is_none() {
            s.dynamic_ip = Some(DynamicIp {
                id: new_id(),
                address: public_ip,
                ipam_id: new_id(),
            });
        }
    }

    /// `Server` as the API returns it (§2.2's recorded body, field for field).
    pub fn server_json(&self, s: &Server) -> Value {
        let mut volumes = serde_json::Map::new();
        for (idx, av) in &s.volumes {
            let v = match av.kind {
                VolumeKind::LSsd => match self.volumes.get(&av.id) {
                    Some(vol) => {
                        let mut v = vol.to_json(Some(&s.name));
                        v["boot"] = json!(false);
                        v
                    }
                    None => continue,
                },
                VolumeKind::Sbs => json!({
                    "boot": false, "volume_type": "sbs_volume", "id": av.id,
                    "state": "available", "zone": s.zone,
                }),
            };
            volumes.insert(idx.to_string(), v);
        }
        let mut public_ips: Vec<Value> = self
            .flexible_ips_of(&s.id)
            .iter()
            .map(|ip| ip.server_ip_json())
            .collect();
        if let Some(d) = &s.dynamic_ip {
            public_ips.push(d.server_ip_json());
        }
        let ty = catalog::server_type(&s.commercial_type);
        json!({
            "id": s.id,
            "name": s.name,
            "arch": "x86_64",
            "commercial_type": s.commercial_type,
            "boot_type": s.boot_type,
            "organization": s.organization,
            "project": s.project,
            "hostname": s.name,
            "image": self.image(&s.zone, &s.image_id).map(|i| self.image_json(i)),
            "volumes": volumes,
            "tags": s.tags,
            "state": s.state.as_str(),
            "protected": s.protected,
            "state_detail": s.state_detail,
            "public_ip": public_ips.first().cloned(),
            "public_ips": public_ips,
            "mac_address": s.mac_address,
            "routed_ip_enabled": s.routed_ip_enabled,
            "ipv6": null,
            "extra_networks": [],
            "dynamic_ip_required": s.dynamic_ip_required,
            "enable_ipv6": s.enable_ipv6,
            "private_ip": null,
            "creation_date": fmt(s.creation_date),
            "modification_date": fmt(s.modification_date),
            "bootscript": null,
            "security_group": {"id": s.security_group_id, "name": "Default security group"},
            "location": s.location.as_ref().map(|l| json!({
                "zone_id": s.zone, "platform_id": l.platform_id, "cluster_id": l.cluster_id,
                "hypervisor_id": l.hypervisor_id, "node_id": l.node_id,
            })),
            "maintenances": [],
            "allowed_actions": s.state.allowed_actions(),
            "placement_group": null,
            "private_nics": [],
            "zone": s.zone,
            "filesystems": [],
            "end_of_service": ty.is_some() && self.faults.end_of_service(&s.commercial_type),
            "admin_password_encryption_ssh_key_id": null,
            "admin_password_encrypted_value": null,
        })
    }

    /// Resolve the project of a create request: `project`, else the default project (also when
    /// only `organization` is given). An unknown project is refused as the caller's IAM would.
    fn create_project(
        &self,
        caller: &Caller,
        project: Option<&str>,
        organization: Option<&str>,
        product: Product,
        resource: &str,
    ) -> Result<String, ApiError> {
        if let Some(o) = organization
            && o != self.opts.organization_id
        {
            return Err(ApiError::denied(resource, "write"));
        }
        let project = project.unwrap_or(self.opts.default_project()).to_string();
        if !self.projects().contains(&project) {
            return Err(ApiError::denied(resource, "write"));
        }
        self.authorize(caller, product, true, Some(&project), resource)?;
        Ok(project)
    }

    /// `POST /servers` (§2.1): validate, create the volumes, answer a `stopped` server.
    pub fn create_server(
        &mut self,
        caller: &Caller,
        zone: &str,
        req: CreateServer,
    ) -> Result<String, ApiError> {
        // Missing required arguments, reported together as the recorded 400 does.
        let mut missing = Vec::new();
        if req
            .commercial_type
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            missing.push("commercial_type");
        }
        if req.image.is_none() && req.volumes.is_none() {
            missing.extend(["image", "volumes"]);
        }
        if !missing.is_empty() {
            return Err(ApiError::InvalidArguments(
                missing
                    .into_iter()
                    .map(|m| {
                        (
                            m.to_string(),
                            "required".to_string(),
                            "required key not provided".to_string(),
                        )
                    })
                    .collect(),
            ));
        }
        let project = self.create_project(
            caller,
            req.project.as_deref(),
            req.organization.as_deref(),
            Product::Instance,
            "instance_server",
        )?;
        let ctype = req.commercial_type.clone().unwrap_or_default();
        let Some(ty) = catalog::server_type(&ctype) else {
            return Err(ApiError::validation(
                "commercial_type",
                format!(
                    "{ctype:?} is not a commercial type of this zone (see GET products/servers)"
                ),
            ));
        };
        let image = match &req.image {
            Some(id) => Some(
                self.image(zone, id)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found("instance_image", id))?,
            ),
            None => None,
        };
        if let Some(img) = &image
            && !img.compatible_types().contains(&ty.name)
        {
            return Err(ApiError::validation(
                "image",
                format!(
                    "image {} ({}) is not compatible with {}",
                    img.id,
                    img.kind.marketplace_type(),
                    ty.name
                ),
            ));
        }
        if let Some(boot) = &req.boot_type
            && !["local", "rescue", "bootscript"].contains(&boot.as_str())
        {
            return Err(ApiError::validation(
                "boot_type",
                format!("{boot:?} is not local, bootscript or rescue"),
            ));
        }

        // Volumes: "0" is the root; its type defaults to the image's kind (§2.1).
        let mut templates: BTreeMap<u32, VolumeTemplate> = BTreeMap::new();
        for (k, v) in req.volumes.unwrap_or_default() {
            let idx: u32 = k.parse().map_err(|_| {
                ApiError::validation("volumes", format!("volume key {k:?} is not an index"))
            })?;
            templates.insert(idx, v);
        }
        if let std::collections::btree_map::Entry::Vacant(root) = templates.entry(0) {
            if image.is_none() {
                return Err(ApiError::invalid_argument(
                    "image",
                    "required",
                    "an image or a root volume (volumes.0) is required",
                ));
            }
            root.insert(VolumeTemplate::default());
        }
        enum Plan {
            NewLocal { name: String, size: u64 },
            NewSbs { name: String, size: u64 },
            Existing(VolumeKind, String),
        }
        let mut plans: BTreeMap<u32, Plan> = BTreeMap::new();
        let mut local_total = 0u64;
        for (idx, t) in &templates {
            let field = format!("volumes.{idx}");
            if let Some(id) = &t.id {
                let kind = if let Some(v) = self.volumes.get(id).filter(|v| v.zone == zone) {
                    if v.server_id.is_some() {
                        return Err(ApiError::validation(
                            &field,
                            format!("volume {id} is attached to another server"),
                        ));
                    }
                    local_total += v.size;
                    VolumeKind::LSsd
                } else if let Some(v) = self.block_volumes.get(id).filter(|v| v.zone == zone) {
                    if !v.references.is_empty() {
                        return Err(ApiError::validation(
                            &field,
                            format!("volume {id} is in use"),
                        ));
                    }
                    VolumeKind::Sbs
                } else {
                    return Err(ApiError::not_found("instance_volume", id));
                };
                plans.insert(*idx, Plan::Existing(kind, id.clone()));
                continue;
            }
            if t.base_snapshot.is_some() {
                return Err(ApiError::validation(
                    &field,
                    "base_snapshot is not emulated; create from an image",
                ));
            }
            let vt = match (t.volume_type.as_deref(), *idx, &image) {
                (Some(vt), _, _) => vt.to_string(),
                (None, 0, Some(img)) => match img.kind {
                    ImageKind::Local => "l_ssd".into(),
                    ImageKind::Sbs => "sbs_volume".into(),
                },
                (None, _, _) => {
                    return Err(ApiError::validation(
                        &field,
                        "volume_type is required (l_ssd or sbs_volume)",
                    ));
                }
            };
            if *idx == 0
                && let Some(img) = &image
            {
                let want = match img.kind {
                    ImageKind::Local => "l_ssd",
                    ImageKind::Sbs => "sbs_volume",
                };
                if vt != want {
                    return Err(ApiError::validation(
                        "volumes.0.volume_type",
                        format!(
                            "image {} is an {} image; its root volume must be {want}",
                            img.id,
                            img.kind.marketplace_type()
                        ),
                    ));
                }
            }
            let image_name = image.as_ref().map_or("volume", |i| i.name);
            match vt.as_str() {
                "l_ssd" => {
                    if !ty.has_local_storage() {
                        return Err(ApiError::validation(
                            &field,
                            format!("{} has no local storage; use sbs_volume", ty.name),
                        ));
                    }
                    let size = t.size.unwrap_or(if *idx == 0 { ty.local_max } else { 0 });
                    if size < LSSD_MIN {
                        return Err(ApiError::validation(
                            &field,
                            format!("an l_ssd volume needs a size of at least {LSSD_MIN} bytes"),
                        ));
                    }
                    local_total += size;
                    let name = t.name.clone().unwrap_or_else(|| image_name.to_string());
                    plans.insert(*idx, Plan::NewLocal { name, size });
                }
                "sbs_volume" => {
                    let size = t.size.unwrap_or(if *idx == 0 { IMAGE_SIZE } else { 0 });
                    if size < 1_000_000_000 {
                        return Err(ApiError::validation(
                            &field,
                            "an sbs_volume needs a size of at least 1000000000 bytes",
                        ));
                    }
                    let name = t
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{image_name}_sbs_volume_{idx}"));
                    plans.insert(*idx, Plan::NewSbs { name, size });
                }
                "b_ssd" => {
                    return Err(ApiError::validation(
                        &field,
                        "b_ssd is deprecated; use sbs_volume",
                    ));
                }
                other => {
                    return Err(ApiError::validation(
                        &field,
                        format!("volume_type {other:?} is not emulated; use l_ssd or sbs_volume"),
                    ));
                }
            }
        }
        if local_total > ty.local_max {
            return Err(ApiError::validation(
                "volumes",
                format!(
                    "the total size of local volumes, {local_total} bytes, exceeds {}'s maximum of {} bytes",
                    ty.name, ty.local_max
                ),
            ));
        }
        let mut flexible = req.public_ips.clone().unwrap_or_default();
        flexible.extend(req.public_ip.clone());
        for ip_id in &flexible {
            match self.ips.get(ip_id).filter(|ip| ip.zone == zone) {
                None => return Err(ApiError::not_found("instance_ip", ip_id)),
                Some(ip) if ip.server_id.is_some() => {
                    return Err(ApiError::validation(
                        "public_ips",
                        format!("IP {ip_id} is attached to another server"),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(max) = self.faults.quota(ty.name) {
            let current = self
                .servers
                .values()
                .filter(|s| s.project == project && s.commercial_type == ty.name)
                .count() as u64;
            if current >= max {
                return Err(ApiError::QuotasExceeded {
                    resource: ty.name.to_string(),
                    quota: max,
                    current,
                    project_id: project,
                });
            }
        }

        // All checks passed: create.
        let now = self.now();
        let id = new_id();
        let name = req
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("scw-{}", &new_id()[..8]));
        let mut volumes = BTreeMap::new();
        for (idx, plan) in plans {
            let av = match plan {
                Plan::Existing(kind, vid) => {
                    match kind {
                        VolumeKind::LSsd => {
                            if let Some(v) = self.volumes.get_mut(&vid) {
                                v.server_id = Some(id.clone());
                                v.modification_date = now;
                            }
                        }
                        VolumeKind::Sbs => {
                            if let Some(v) = self.block_volumes.get_mut(&vid) {
                                v.references.push(BlockRef {
                                    id: new_id(),
                                    server_id: id.clone(),
                                    created_at: now,
                                    status: RefStatus::Attached,
                                });
                                v.updated_at = now;
                            }
                        }
                    }
                    AttachedVolume { kind, id: vid }
                }
                Plan::NewLocal { name, size } => {
                    let vid = new_id();
                    self.volumes.insert(
                        vid.clone(),
                        InstanceVolume {
                            id: vid.clone(),
                            name,
                            size,
                            zone: zone.to_string(),
                            project: project.clone(),
                            organization: self.opts.organization_id.clone(),
                            tags: vec![],
                            server_id: Some(id.clone()),
                            creation_date: now,
                            modification_date: now,
                        },
                    );
                    AttachedVolume {
                        kind: VolumeKind::LSsd,
                        id: vid,
                    }
                }
                Plan::NewSbs { name, size } => {
                    let vid = new_id();
                    self.block_volumes.insert(
                        vid.clone(),
                        BlockVolume {
                            id: vid.clone(),
                            name,
                            size,
                            perf_iops: 5000,
                            zone: zone.to_string(),
                            project: project.clone(),
                            tags: vec![],
                            references: vec![BlockRef {
                                id: new_id(),
                                server_id: id.clone(),
                                created_at: now,
                                status: RefStatus::Attached,
                            }],
                            created_at: now,
                            updated_at: now,
                            last_detached_at: None,
                        },
                    );
                    AttachedVolume {
                        kind: VolumeKind::Sbs,
                        id: vid,
                    }
                }
            };
            volumes.insert(idx, av);
        }
        for ip_id in &flexible {
            let seq = self.next_seq();
            if let Some(ip) = self.ips.get_mut(ip_id) {
                ip.server_id = Some(id.clone());
                ip.attached_seq = seq;
            }
        }
        let image_id = match image {
            Some(img) => img.id,
            None => String::new(),
        };
        let mac: Vec<String> = (0..3)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        self.servers.insert(
            id.clone(),
            Server {
                id: id.clone(),
                name,
                zone: zone.to_string(),
                security_group_id: catalog::stable_uuid(&format!(
                    "security-group/{zone}/{project}"
                )),
                project,
                organization: self.opts.organization_id.clone(),
                commercial_type: ty.name.to_string(),
                image_id,
                tags: req.tags.unwrap_or_default(),
                dynamic_ip_required: req.dynamic_ip_required.unwrap_or(true),
                routed_ip_enabled: true,
                enable_ipv6: false,
                boot_type: req.boot_type.unwrap_or_else(|| "local".into()),
                protected: req.protected.unwrap_or(false),
                state: ServerState::Stopped,
                state_detail: String::new(),
                volumes,
                dynamic_ip: None,
                mac_address: format!("de:00:00:{}", mac.join(":")),
                location: None,
                user_data: BTreeMap::new(),
                pending: None,
                epoch: 0,
                creation_date: now,
                modification_date: now,
            },
        );
        Ok(id)
    }

    /// Servers of a zone matching the list filters (§2.5), in the requested order.
    pub fn list_servers(
        &self,
        caller: &Caller,
        zone: &str,
        q: &BTreeMap<String, String>,
    ) -> Result<Vec<&Server>, ApiError> {
        let visible = self.readable_projects(caller, Product::Instance, "instance_server")?;
        let tags = q.get("tags").map(|t| split_list(t)).unwrap_or_default();
        let ids = q.get("servers").map(|t| split_list(t));
        let state = match q.get("state") {
            Some(s) => Some(ServerState::parse(s).ok_or_else(|| {
                ApiError::invalid_argument("state", "constraint", format!("unknown state {s:?}"))
            })?),
            None => None,
        };
        let mut out: Vec<&Server> = self
            .servers
            .values()
            .filter(|s| s.zone == zone)
            .filter(|s| visible.as_ref().is_none_or(|v| v.contains(&s.project)))
            .filter(|s| q.get("project").is_none_or(|p| &s.project == p))
            .filter(|s| q.get("organization").is_none_or(|o| &s.organization == o))
            .filter(|s| q.get("name").is_none_or(|n| s.name.contains(n.as_str())))
            .filter(|s| {
                q.get("commercial_type")
                    .is_none_or(|t| &s.commercial_type == t)
            })
            .filter(|s| state.is_none_or(|st| s.state == st))
            .filter(|s| tags_match(&s.tags, &tags))
            .filter(|s| ids.as_ref().is_none_or(|ids| ids.contains(&s.id)))
            .collect();
        let order = q.get("order").map_or("creation_date_desc", String::as_str);
        match order {
            "creation_date_desc" => {
                out.sort_by(|a, b| (b.creation_date, &b.id).cmp(&(a.creation_date, &a.id)))
            }
            "creation_date_asc" => {
                out.sort_by(|a, b| (a.creation_date, &a.id).cmp(&(b.creation_date, &b.id)))
            }
            "modification_date_desc" => {
                out.sort_by(|a, b| (b.modification_date, &b.id).cmp(&(a.modification_date, &a.id)))
            }
            "modification_date_asc" => {
                out.sort_by(|a, b| (a.modification_date, &a.id).cmp(&(b.modification_date, &b.id)))
            }
            other => {
                return Err(ApiError::invalid_argument(
                    "order",
                    "constraint",
                    format!("unknown order {other:?}"),
                ));
            }
        }
        Ok(out)
    }

    /// `POST /servers/{id}/action` (§2.3): checks, then the first step of the transition.
    /// Returns the task JSON and the effect that finishes the transition.
    pub fn server_action(
        &mut self,
        caller: &Caller,
        zone: &str,
        id: &str,
        action: &str,
    ) -> Result<(Value, Effect), ApiError> {
        let s = self.server_for(caller, zone, id, true)?;
        const KNOWN: [&str; 7] = [
            "poweron",
            "poweroff",
            "stop_in_place",
            "reboot",
            "backup",
            "terminate",
            "enable_routed_ip",
        ];
        if !KNOWN.contains(&action) {
            return Err(ApiError::invalid_argument(
                "action",
                "constraint",
                format!("unknown action {action:?}; use one of {}", KNOWN.join(", ")),
            ));
        }
        let state = s.state;
        let transient = ApiError::TransientState {
            resource: "instance_server".into(),
            id: id.to_string(),
            current_state: state.as_str().to_string(),
        };
        if state.is_transient() {
            return Err(transient);
        }
        if self.faults.take_transient() {
            return Err(transient);
        }
        let s = self.server_in(zone, id)?;
        if !state.allowed_actions().contains(&action) {
            return Err(ApiError::InvalidRequest(format!(
                "action {action} is not allowed while the server is {}; allowed: {}",
                state.as_str(),
                state.allowed_actions().join(", ")
            )));
        }
        if matches!(action, "backup" | "enable_routed_ip") {
            return Err(ApiError::InvalidRequest(format!(
                "action {action} is not emulated"
            )));
        }
        if action == "terminate" && s.protected {
            return Err(ApiError::InvalidRequest("server is protected".into()));
        }
        if action == "poweron" && self.faults.out_of_stock(&s.commercial_type, zone) {
            return Err(ApiError::OutOfStock {
                resource: s.commercial_type.clone(),
            });
        }
        let (state, detail, pending, description) = match action {
            "poweron" => (
                ServerState::Starting,
                "allocating node",
                Pending::Boot,
                "server_batch_poweron",
            ),
            "reboot" => (
                ServerState::Starting,
                "rebooting",
                Pending::Reboot,
                "server_reboot",
            ),
            "poweroff" => (
                ServerState::Stopping,
                "stopping",
                Pending::Poweroff,
                "server_poweroff",
            ),
            "stop_in_place" => (
                ServerState::Stopping,
                "stopping",
                Pending::StopInPlace,
                "server_stop_in_place",
            ),
            _ => (
                ServerState::Stopping,
                "terminating",
                Pending::Terminate,
                "server_terminate",
            ),
        };
        let now = self.now();
        let s = self.servers.get_mut(id).expect("checked above");
        s.state = state;
        s.state_detail = detail.to_string();
        s.pending = Some(pending);
        s.epoch += 1;
        s.modification_date = now;
        let epoch = s.epoch;
        self.refresh_dynamic_ip(id);
        let task = json!({"task": {
            "id": new_id(),
            "description": description,
            "status": "pending",
            "href_from": format!("/servers/{id}/action"),
            "href_result": format!("/servers/{id}"),
            "started_at": fmt(now),
            "terminated_at": null,
            "progress": 0,
            "zone": zone,
        }});
        Ok((
            task,
            Effect::Transition {
                server_id: id.to_string(),
                epoch,
            },
        ))
    }

    /// The transition a server is in, if `epoch` is still current.
    pub fn pending(&self, id: &str, epoch: u64) -> Option<(Pending, &Server)> {
        let s = self.servers.get(id)?;
        if s.epoch != epoch {
            return None;
        }
        Some((s.pending?, s))
    }

    /// Every transition in progress (after loading a state file).
    pub fn all_pending(&self) -> Vec<Effect> {
        let mut out: Vec<Effect> = self
            .servers
            .values()
            .filter(|s| s.pending.is_some())
            .map(|s| Effect::Transition {
                server_id: s.id.clone(),
                epoch: s.epoch,
            })
            .collect();
        for v in self.block_volumes.values() {
            for r in &v.references {
                if r.status == RefStatus::Detaching {
                    out.push(Effect::Detach {
                        volume_id: v.id.clone(),
                        server_id: r.server_id.clone(),
                    });
                }
            }
        }
        out
    }

    /// Boot or reboot finished: `running` ("booting kernel", §2.2), at `public_ip` if the hook
    /// named one.
    pub fn boot_done(&mut self, id: &str, epoch: u64, public_ip: Option<String>) -> bool {
        if !matches!(
            self.pending(id, epoch),
            Some((Pending::Boot | Pending::Reboot, _))
        ) {
            return false;
        }
        let now = self.now();
        let s = self.servers.get_mut(id).expect("pending found it");
        s.state = ServerState::Running;
        s.state_detail = "booting kernel".into();
        s.pending = None;
        s.modification_date = now;
        let n = |k: &str| catalog::stable_uuid(&format!("{k}/{id}")).as_bytes()[0] % 50 + 1;
        s.location.get_or_insert_with(|| Location {
            platform_id: "14".into(),
            cluster_id: n("cluster").to_string(),
            hypervisor_id: (300 + u32::from(n("hv"))).to_string(),
            node_id: n("node").to_string(),
        });
        self.refresh_dynamic_ip(id);
        if let (Some(addr), Some(d)) = (
            public_ip,
            self.servers.get_mut(id).and_then(|s| s.dynamic_ip.as_mut()),
        ) {
            d.address = addr;
        }
        true
    }

    /// The boot hook failed: back to `stopped`, the reason in `state_detail`.
    pub fn boot_failed(&mut self, id: &str, epoch: u64, why: &str) -> bool {
        if !matches!(self.pending(id, epoch), Some((Pending::Boot, _))) {
            return false;
        }
        let now = self.now();
        let s = self.servers.get_mut(id).expect("pending found it");
        s.state = ServerState::Stopped;
        s.state_detail = why.to_string();
        s.pending = None;
        s.location = None;
        s.modification_date = now;
        self.refresh_dynamic_ip(id);
        true
    }

    /// poweroff, stop_in_place or terminate finished. Terminate removes the server: local
    /// volumes are deleted, SBS ones detached, flexible IPs kept (§2.3, §2.7).
    pub fn stop_done(&mut self, id: &str, epoch: u64) -> Vec<Effect> {
        let Some((pending, _)) = self.pending(id, epoch) else {
            return vec![];
        };
        let now = self.now();
        match pending {
            Pending::Poweroff | Pending::StopInPlace => {
                let s = self.servers.get_mut(id).expect("pending found it");
                s.state = if pending == Pending::Poweroff {
                    ServerState::Stopped
                } else {
                    ServerState::StoppedInPlace
                };
                s.state_detail = String::new();
                s.pending = None;
                s.location = None;
                s.modification_date = now;
                self.refresh_dynamic_ip(id);
                vec![]
            }
            Pending::Terminate => self.remove_server(id, true),
            Pending::Boot | Pending::Reboot => vec![],
        }
    }

    /// Drop a server. `terminate`: its l_ssd volumes go too; otherwise they stay, detached.
    fn remove_server(&mut self, id: &str, terminate: bool) -> Vec<Effect> {
        let Some(s) = self.servers.remove(id) else {
            return vec![];
        };
        let now = self.now();
        let mut effects = Vec::new();
        for av in s.volumes.values() {
            match av.kind {
                VolumeKind::LSsd if terminate => {
                    self.volumes.remove(&av.id);
                }
                VolumeKind::LSsd => {
                    if let Some(v) = self.volumes.get_mut(&av.id) {
                        v.server_id = None;
                        v.modification_date = now;
                    }
                }
                VolumeKind::Sbs => effects.extend(self.start_detach(&av.id, id)),
            }
        }
        for ip in self.ips.values_mut() {
            if ip.server_id.as_deref() == Some(id) {
                ip.server_id = None;
            }
        }
        effects
    }

    /// The SBS reference of `server_id` goes `detaching`; `lifecycle` finishes it later.
    fn start_detach(&mut self, volume_id: &str, server_id: &str) -> Option<Effect> {
        let now = self.now();
        let v = self.block_volumes.get_mut(volume_id)?;
        let r = v.references.iter_mut().find(|r| r.server_id == server_id)?;
        r.status = RefStatus::Detaching;
        v.updated_at = now;
        Some(Effect::Detach {
            volume_id: volume_id.to_string(),
            server_id: server_id.to_string(),
        })
    }

    /// The detach finished: the volume is `available` with no references.
    pub fn detach_done(&mut self, volume_id: &str, server_id: &str) {
        let now = self.now();
        if let Some(v) = self.block_volumes.get_mut(volume_id) {
            let before = v.references.len();
            v.references
                .retain(|r| !(r.server_id == server_id && r.status == RefStatus::Detaching));
            if v.references.len() != before {
                v.last_detached_at = Some(now);
                v.updated_at = now;
            }
        }
    }

    /// `DELETE /servers/{id}` (§2.4): stopped servers only; every volume is kept.
    pub fn delete_server(
        &mut self,
        caller: &Caller,
        zone: &str,
        id: &str,
    ) -> Result<Vec<Effect>, ApiError> {
        let s = self.server_for(caller, zone, id, true)?;
        if s.state.is_transient() {
            return Err(ApiError::TransientState {
                resource: "instance_server".into(),
                id: id.to_string(),
                current_state: s.state.as_str().to_string(),
            });
        }
        if s.state != ServerState::Stopped {
            return Err(ApiError::InvalidRequest("server should be stopped".into()));
        }
        if s.protected {
            return Err(ApiError::InvalidRequest("server is protected".into()));
        }
        let halt = Effect::Halt {
            server_id: s.id.clone(),
            zone: s.zone.clone(),
            name: s.name.clone(),
            commercial_type: s.commercial_type.clone(),
        };
        let mut effects = self.remove_server(id, false);
        effects.push(halt);
        Ok(effects)
    }

    /// `POST /servers/{id}/detach-volume` (§5.3): SBS volumes at any time, local ones only
    /// from a stopped server.
    pub fn detach_volume(
        &mut self,
        caller: &Caller,
        zone: &str,
        id: &str,
        volume_id: &str,
    ) -> Result<Vec<Effect>, ApiError> {
        let s = self.server_for(caller, zone, id, true)?;
        let Some((&idx, av)) = s.volumes.iter().find(|(_, av)| av.id == volume_id) else {
            return Err(ApiError::invalid_argument(
                "volume_id",
                "constraint",
                format!("volume {volume_id} is not attached to server {id}"),
            ));
        };
        if s.state.is_transient() {
            return Err(ApiError::TransientState {
                resource: "instance_server".into(),
                id: id.to_string(),
                current_state: s.state.as_str().to_string(),
            });
        }
        let kind = av.kind;
        if kind == VolumeKind::LSsd && s.state != ServerState::Stopped {
            return Err(ApiError::InvalidRequest(
                "a local volume can only be detached from a stopped server".into(),
            ));
        }
        let now = self.now();
        let s = self.servers.get_mut(id).expect("checked above");
        s.volumes.remove(&idx);
        s.modification_date = now;
        Ok(match kind {
            VolumeKind::LSsd => {
                if let Some(v) = self.volumes.get_mut(volume_id) {
                    v.server_id = None;
                    v.modification_date = now;
                }
                vec![]
            }
            VolumeKind::Sbs => self.start_detach(volume_id, id).into_iter().collect(),
        })
    }

    // ---- User data (§2.6) ----

    pub fn user_data_mut(
        &mut self,
        caller: &Caller,
        zone: &str,
        id: &str,
    ) -> Result<&mut BTreeMap<String, Vec<u8>>, ApiError> {
        self.server_for(caller, zone, id, true)?;
        let now = self.now();
        let s = self.servers.get_mut(id).expect("checked above");
        s.modification_date = now;
        Ok(&mut s.user_data)
    }

    // ---- Instance volumes (§2.7) ----

    pub fn instance_volume(
        &self,
        caller: &Caller,
        zone: &str,
        id: &str,
        write: bool,
    ) -> Result<&InstanceVolume, ApiError> {
        let v = self
            .volumes
            .get(id)
            .filter(|v| v.zone == zone)
            .ok_or_else(|| ApiError::not_found("instance_volume", id))?;
        self.authorize(
            caller,
            Product::Instance,
            write,
            Some(&v.project),
            "instance_volume",
        )?;
        Ok(v)
    }

    pub fn instance_volume_json(&self, v: &InstanceVolume) -> Value {
        let name = v
            .server_id
            .as_ref()
            .and_then(|id| self.servers.get(id))
            .map(|s| s.name.as_str());
        v.to_json(name)
    }

    pub fn delete_instance_volume(
        &mut self,
        caller: &Caller,
        zone: &str,
        id: &str,
    ) -> Result<(), ApiError> {
        let v = self.instance_volume(caller, zone, id, true)?;
        if v.server_id.is_some() {
            return Err(ApiError::InvalidRequest(
                "a volume attached to a server cannot be deleted; detach it first".into(),
            ));
        }
        self.volumes.remove(id);
        Ok(())
    }

    // ---- Block volumes (§2.7) ----

    pub fn block_volume(
        &self,
        caller: &Caller,
        zone: &str,
        id: &str,
        write: bool,
    ) -> Result<&BlockVolume, ApiError> {
        let v = self
            .block_volumes
            .get(id)
            .filter(|v| v.zone == zone)
            .ok_or_else(|| ApiError::not_found("volume", id))?;
        self.authorize(caller, Product::Block, write, Some(&v.project), "volume")?;
        Ok(v)
    }

    pub fn delete_block_volume(
        &mut self,
        caller: &Caller,
        zone: &str,
        id: &str,
    ) -> Result<(), ApiError> {
        let v = self.block_volume(caller, zone, id, true)?;
        if !v.references.is_empty() {
            return Err(ApiError::PreconditionFailed {
                precondition: "resource_still_in_use",
                help_message: format!(
                    "volume {id} is {} by server {}; wait until it is available",
                    if v.references
                        .iter()
                        .any(|r| r.status == RefStatus::Detaching)
                    {
                        "still being detached"
                    } else {
                        "in use"
                    },
                    v.references[0].server_id
                ),
            });
        }
        self.block_volumes.remove(id);
        Ok(())
    }

    /// `POST /block/v1alpha1/zones/{z}/volumes` with `from_empty.size` (§2.7).
    pub fn create_block_volume(
        &mut self,
        caller: &Caller,
        zone: &str,
        body: &Value,
    ) -> Result<String, ApiError> {
        let project = self.create_project(
            caller,
            body["project_id"].as_str(),
            None,
            Product::Block,
            "volume",
        )?;
        let Some(size) = body["from_empty"]["size"].as_u64() else {
            return Err(ApiError::invalid_argument(
                "from_empty.size",
                "required",
                "only from_empty volumes are emulated; give from_empty.size in bytes",
            ));
        };
        let now = self.now();
        let id = new_id();
        self.block_volumes.insert(
            id.clone(),
            BlockVolume {
                id: id.clone(),
                name: body["name"].as_str().unwrap_or_default().to_string(),
                size,
                perf_iops: body["perf_iops"].as_u64().unwrap_or(5000) as u32,
                zone: zone.to_string(),
                project,
                tags: string_list(&body["tags"]),
                references: vec![],
                created_at: now,
                updated_at: now,
                last_detached_at: None,
            },
        );
        Ok(id)
    }

    // ---- Flexible IPs (§2.9) ----

    fn next_address(&mut self, v6: bool) -> (String, Option<String>) {
        let n = self.next_seq();
        if v6 {
            (
                format!("2001:db8:{n:x}::1"),
                Some(format!("2001:db8:{n:x}::/64")),
            )
        } else {
            // Documentation ranges: flexible IPs are not routable in the emulator.
            let block = if (n / 254).is_multiple_of(2) {
                "198.51.100"
            } else {
                "203.0.113"
            };
            (format!("{block}.{}", n % 254 + 1), None)
        }
    }

    pub fn create_ip(
        &mut self,
        caller: &Caller,
        zone: &str,
        req: CreateIp,
    ) -> Result<String, ApiError> {
        let project = self.create_project(
            caller,
            req.project.as_deref(),
            req.organization.as_deref(),
            Product::Instance,
            "instance_ip",
        )?;
        let ip_type = req.ip_type.unwrap_or_else(|| "routed_ipv4".into());
        if !["routed_ipv4", "routed_ipv6"].contains(&ip_type.as_str()) {
            return Err(ApiError::validation(
                "type",
                format!("{ip_type:?} is not routed_ipv4 or routed_ipv6"),
            ));
        }
        if let Some(sid) = &req.server {
            self.server_for(caller, zone, sid, true)?;
        }
        let (address, prefix) = self.next_address(ip_type == "routed_ipv6");
        let id = new_id();
        let seq = self.next_seq();
        self.ips.insert(
            id.clone(),
            Ip {
                id: id.clone(),
                address,
                prefix,
                reverse: None,
                server_id: req.server.clone(),
                zone: zone.to_string(),
                project,
                organization: self.opts.organization_id.clone(),
                ip_type,
                tags: req.tags.unwrap_or_default(),
                ipam_id: new_id(),
                attached_seq: seq,
            },
        );
        if let Some(sid) = &req.server {
            self.refresh_dynamic_ip(sid);
        }
        Ok(id)
    }

    /// An IP by ID or address (§2.9); 404 `instance_ip` names what was asked for.
    pub fn ip(
        &self,
        caller: &Caller,
        zone: &str,
        id_or_address: &str,
        write: bool,
    ) -> Result<&Ip, ApiError> {
        let ip = self
            .ips
            .values()
            .find(|ip| ip.zone == zone && (ip.id == id_or_address || ip.address == id_or_address))
            .ok_or_else(|| ApiError::not_found("instance_ip", id_or_address))?;
        self.authorize(
            caller,
            Product::Instance,
            write,
            Some(&ip.project),
            "instance_ip",
        )?;
        Ok(ip)
    }

    pub fn ip_json(&self, ip: &Ip) -> Value {
        let name = ip
            .server_id
            .as_ref()
            .and_then(|id| self.servers.get(id))
            .map(|s| s.name.as_str());
        ip.to_json(name)
    }

    /// `PATCH /ips/{id}`: `server` (null detaches), `tags`, `reverse`.
    pub fn update_ip(
        &mut self,
        caller: &Caller,
        zone: &str,
        id: &str,
        body: &Value,
    ) -> Result<String, ApiError> {
        let ip_id = self.ip(caller, zone, id, true)?.id.clone();
        let old_server = self.ips[&ip_id].server_id.clone();
        if let Some(server) = body.get("server") {
            let new_server = match server {
                Value::Null => None,
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => {
                    self.server_for(caller, zone, s, true)?;
                    Some(s.clone())
                }
                _ => {
                    return Err(ApiError::validation(
                        "server",
                        "must be a server ID or null",
                    ));
                }
            };
            let seq = self.next_seq();
            let ip = self.ips.get_mut(&ip_id).expect("found above");
            ip.server_id = new_server.clone();
            ip.attached_seq = seq;
            for sid in old_server.iter().chain(new_server.iter()) {
                self.refresh_dynamic_ip(sid);
            }
        }
        let ip = self.ips.get_mut(&ip_id).expect("found above");
        if body.get("tags").is_some() {
            ip.tags = string_list(&body["tags"]);
        }
        if let Some(r) = body.get("reverse") {
            ip.reverse = r.as_str().map(str::to_string);
        }
        Ok(ip_id)
    }

    pub fn delete_ip(&mut self, caller: &Caller, zone: &str, id: &str) -> Result<(), ApiError> {
        let ip_id = self.ip(caller, zone, id, true)?.id.clone();
        if let Some(ip) = self.ips.remove(&ip_id)
            && let Some(sid) = ip.server_id
        {
            self.refresh_dynamic_ip(&sid);
        }
        Ok(())
    }

    // ---- Test controls ----

    /// Every resource in every zone (`GET /_emulator/resources`), with a total `count`.
    pub fn resources_json(&self) -> Value {
        let servers: Vec<Value> = self.servers.values().map(|s| self.server_json(s)).collect();
        let volumes: Vec<Value> = self
            .volumes
            .values()
            .map(|v| self.instance_volume_json(v))
            .collect();
        let block: Vec<Value> = self
            .block_volumes
            .values()
            .map(BlockVolume::to_json)
            .collect();
        let ips: Vec<Value> = self.ips.values().map(|ip| self.ip_json(ip)).collect();
        let apps: Vec<Value> = self
            .applications
            .values()
            .map(|a| self.application_json(a))
            .collect();
        let policies: Vec<Value> = self.policies.values().map(Policy::to_json).collect();
        let keys: Vec<Value> = self.api_keys.values().map(|k| k.to_json(false)).collect();
        let count = servers.len()
            + volumes.len()
            + block.len()
            + ips.len()
            + apps.len()
            + policies.len()
            + keys.len();
        json!({
            "count": count,
            "servers": servers,
            "instance_volumes": volumes,
            "block_volumes": block,
            "ips": ips,
            "iam": {"applications": apps, "policies": policies, "api_keys": keys},
        })
    }

    // ---- State file ----

    /// Write every resource to `--state-file` (atomically: a temp file renamed over it).
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.opts.state_file else {
            return Ok(());
        };
        let p = Persisted {
            version: STATE_VERSION,
            clock: self.clock,
            seq: self.seq,
            servers: self.servers.clone(),
            volumes: self.volumes.clone(),
            block_volumes: self.block_volumes.clone(),
            ips: self.ips.clone(),
            applications: self.applications.clone(),
            policies: self.policies.clone(),
            api_keys: self.api_keys.clone(),
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&p)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }

    /// Load `--state-file` if it exists (a missing file is an empty cloud).
    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let p: Persisted = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an emulator state file", path.display()))?;
        anyhow::ensure!(
            p.version == STATE_VERSION,
            "{} has state version {}, this emulator reads {STATE_VERSION}",
            path.display(),
            p.version
        );
        self.clock = p.clock;
        self.seq = p.seq;
        self.servers = p.servers;
        self.volumes = p.volumes;
        self.block_volumes = p.block_volumes;
        self.ips = p.ips;
        self.applications = p.applications;
        self.policies = p.policies;
        self.api_keys = p.api_keys;
        Ok(())
    }
}

/// A JSON array of strings (anything else is empty).
pub fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::new(Options::default())
    }

    fn local_image(w: &World, zone: &str) -> String {
        w.images
            .iter()
            .find(|i| i.zone == zone && i.kind == ImageKind::Local)
            .unwrap()
            .id
            .clone()
    }

    fn create(w: &mut World, ctype: &str) -> String {
        let image = local_image(w, "fr-par-1");
        w.create_server(
            &Caller::Admin,
            "fr-par-1",
            CreateServer {
                commercial_type: Some(ctype.into()),
                image: Some(image),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn a_new_server_is_stopped_with_a_full_size_local_root() {
        let mut w = world();
        let id = create(&mut w, "DEV1-S");
        let v = w.server_json(&w.servers[&id]);
        assert_eq!(v["state"], "stopped");
        assert_eq!(v["allowed_actions"], json!(["poweron", "backup"]));
        assert_eq!(v["volumes"]["0"]["volume_type"], "l_ssd");
        assert_eq!(v["volumes"]["0"]["size"], 20_000_000_000u64);
        assert_eq!(v["public_ips"], json!([]));
        assert_eq!(v["public_ip"], Value::Null);
    }

    #[test]
    fn poweron_then_boot_gives_a_dynamic_ip_and_running() {
        let mut w = world();
        let id = create(&mut w, "DEV1-S");
        let (_, eff) = w
            .server_action(&Caller::Admin, "fr-par-1", &id, "poweron")
            .unwrap();
        let Effect::Transition { epoch, .. } = eff else {
            panic!("{eff:?}")
        };
        assert_eq!(w.servers[&id].state, ServerState::Starting);
        assert!(w.servers[&id].dynamic_ip.is_some());
        // A transient server refuses actions with 409.
        let e = w
            .server_action(&Caller::Admin, "fr-par-1", &id, "poweroff")
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 409);
        assert!(
            !w.boot_done(&id, epoch + 1, None),
            "a stale epoch is ignored"
        );
        assert!(w.boot_done(&id, epoch, Some("10.1.2.3".into())));
        let v = w.server_json(&w.servers[&id]);
        assert_eq!(v["state"], "running");
        assert_eq!(v["public_ips"][0]["address"], "10.1.2.3");
        assert_eq!(v["public_ip"]["dynamic"], true);
    }

    #[test]
    fn a_flexible_ip_replaces_the_dynamic_one() {
        let mut w = world();
        let id = create(&mut w, "DEV1-S");
        let (_, Effect::Transition { epoch, .. }) = w
            .server_action(&Caller::Admin, "fr-par-1", &id, "poweron")
            .unwrap()
        else {
            panic!()
        };
        w.boot_done(&id, epoch, None);
        let ip = w
            .create_ip(&Caller::Admin, "fr-par-1", CreateIp::default())
            .unwrap();
        w.update_ip(&Caller::Admin, "fr-par-1", &ip, &json!({"server": id}))
            .unwrap();
        let v = w.server_json(&w.servers[&id]);
        assert_eq!(v["public_ips"].as_array().unwrap().len(), 1);
        assert_eq!(v["public_ips"][0]["dynamic"], false);
        w.update_ip(&Caller::Admin, "fr-par-1", &ip, &json!({"server": null}))
            .unwrap();
        let v = w.server_json(&w.servers[&id]);
        assert_eq!(v["public_ips"][0]["dynamic"], true);
    }

    #[test]
    fn create_rejects_what_the_api_rejects() {
        let mut w = world();
        let e = w
            .create_server(&Caller::Admin, "fr-par-1", CreateServer::default())
            .unwrap_err();
        let b = e.body().unwrap();
        assert_eq!(b["type"], "invalid_arguments");
        assert_eq!(b["details"].as_array().unwrap().len(), 3);
        let image = local_image(&w, "fr-par-1");
        let e = w
            .create_server(
                &Caller::Admin,
                "fr-par-1",
                CreateServer {
                    commercial_type: Some("PRO2-S".into()),
                    image: Some(image),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.body().unwrap()["message"], "Validation Error");
    }

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut w = World::new(Options {
            state_file: Some(path.clone()),
            ..Options::default()
        });
        let id = create(&mut w, "DEV1-M");
        w.save().unwrap();
        let mut w2 = World::new(Options::default());
        w2.load(&path).unwrap();
        assert_eq!(w2.servers[&id].commercial_type, "DEV1-M");
        assert_eq!(w2.volumes.len(), 1);
    }
}

//! Phase provision (cloud targets): rent the instance, boot it with plexburst's cloud-init, and
//! connect to it. Every resource id is in the state file before anything waits on it, so a
//! crash at any point leaves `destroy` all it needs; and `release` (teardown, failure cleanup,
//! `destroy`) deletes the server, then every volume it had, then sweeps the run's tag.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Outcome;
use crate::cloud::scaleway::api::{Api, ApiError, NewServer};
use crate::cloud::scaleway::credentials::{self, Credentials};
use crate::cloud::scaleway::{ScalewayPlan, run_tag, userdata};
use crate::error::BadInput;
use crate::plan::{Plan, RUN_ID, TargetSpec};
use crate::remote::{Cmd, Remote, local::Local, quote};
use crate::session::Ctx;
use crate::state::Instance;

const POLL: Duration = Duration::from_secs(1);

/// The plan's Scaleway target, if it is one.
pub fn scaleway(plan: &Plan) -> Option<&ScalewayPlan> {
    match &plan.target.spec {
        TargetSpec::Scaleway(sc) => Some(sc),
        _ => None,
    }
}

/// Credentials and a client; a missing or unreadable credential is the user's to fix (exit 2).
pub fn connect_api() -> anyhow::Result<(Credentials, Api)> {
    let creds = credentials::load_from_env().map_err(|e| BadInput(e.to_string()))?;
    let api = Api::new(&creds.api_url, creds.secret_key.clone());
    Ok((creds, api))
}

fn zones(sc: &ScalewayPlan, creds: &Credentials) -> Vec<String> {
    if sc.zones.is_empty() {
        vec![creds.zone.clone()]
    } else {
        sc.zones.clone()
    }
}

/// An API error in words, with what to do for the ones a user can fix.
fn explain(e: &ApiError) -> String {
    if e.is_auth() {
        format!(
            "{e}; check the Scaleway key (SCW_SECRET_KEY or the scw config) and its permissions on the project"
        )
    } else if e.is_quota() {
        format!(
            "{e}; the account's quota does not allow this machine: raise it in the Scaleway console, or pick a smaller type"
        )
    } else {
        e.to_string()
    }
}

/// `plan`'s read-only look at the cloud: credentials, project, and for each zone and type the
/// price, stock and end of service, and the image. Nothing is created. Lines to print, or the
/// user's problem (exit 2). `for_run`: what the stock says now does not stop the run (power-on
/// is the real test, and provisioning falls back), but a type no zone offers does.
pub fn check(plan: &Plan, for_run: bool) -> anyhow::Result<Vec<String>> {
    let Some(sc) = scaleway(plan) else {
        return Ok(Vec::new());
    };
    let (creds, api) = connect_api()?;
    let mut lines = vec![format!(
        "credentials: {} (api {})",
        creds.origin, creds.api_url
    )];
    if creds.project_id.is_none() {
        return Err(BadInput(
            "no Scaleway project: set default_project_id in the scw config or SCW_DEFAULT_PROJECT_ID".into(),
        )
        .into());
    }
    let (mut usable, mut offered) = (0, 0);
    for zone in zones(sc, &creds) {
        let types = match api.server_types(&zone) {
            Ok(t) => t,
            Err(e) if e.is_auth() || e.status() == Some(404) || e.status() == Some(400) => {
                return Err(BadInput(format!(
                    "target.zone {zone}: {}; use a zone Scaleway serves (fr-par-1, fr-par-2, nl-ams-1, pl-waw-1, ...)",
                    explain(&e)
                ))
                .into());
            }
            Err(e) => return Err(e).context("cannot read Scaleway's server types"),
        };
        let stock = api.availability(&zone).unwrap_or_default();
        for t in &sc.types {
            let Some(st) = types.get(t) else {
                lines.push(format!("{zone} {t}: not offered in this zone"));
                continue;
            };
            offered += 1;
            let avail = stock.get(t).map(String::as_str).unwrap_or("unknown");
            let image = api
                .image_for(&zone, &sc.image_label, t, &sc.root_volume_type)
                .map_err(|e| anyhow::anyhow!(explain(&e)))?;
            let ok = !st.end_of_service && avail != "shortage" && image.is_some();
            usable += usize::from(ok);
            lines.push(format!(
                "{zone} {t}: {} vCPU, {} GiB, {:.4} EUR/h, {avail}{}; image {}: {}",
                st.ncpus,
                st.ram_bytes >> 30,
                st.hourly_price,
                if st.end_of_service {
                    ", end of service"
                } else {
                    ""
                },
                sc.image_label,
                image.as_deref().unwrap_or("none for this type")
            ));
        }
    }
    let iam = match &creds.organization_id {
        None => Err(
            "no organization id (default_organization_id / SCW_DEFAULT_ORGANIZATION_ID)"
                .to_string(),
        ),
        Some(_) => match api.can_read_iam() {
            Ok(true) => Ok(()),
            Ok(false) => Err("the key may not manage IAM applications".to_string()),
            Err(e) => Err(explain(&e)),
        },
    };
    match iam {
        Ok(()) => lines.push(format!(
            "deadline: the instance deletes itself through the API after {} (a per-run IAM key allowed Instances in this project only, expiring an hour later)",
            crate::units::format_duration(sc.max_lifetime)
        )),
        Err(why) if sc.allow_weak_deadline => lines.push(format!(
            "deadline: {why}; only an in-guest shutdown after {} (target.allow_weak_deadline), and billing may continue after it",
            crate::units::format_duration(sc.max_lifetime)
        )),
        Err(why) => {
            return Err(BadInput(format!(
                "{why}, so the instance could not delete itself at its deadline; an in-guest shutdown may not stop billing. Use a key with IAM rights, or accept the weak deadline with target.allow_weak_deadline = true"
            ))
            .into());
        }
    }
    if usable == 0 && !(for_run && offered > 0) {
        return Err(BadInput(format!(
            "no zone and type of the config can be rented now:\n  {}\nadd zones or fallback_types, or pick another type",
            lines.join("\n  ")
        ))
        .into());
    }
    Ok(lines)
}

/// Make the run's ed25519 key pair on this machine (private half 0600); returns the public key.
fn make_key(dir: &std::path::Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let key = dir.join("id_ed25519");
    if !key.exists() {
        let local = Local::new();
        local
            .run(&Cmd::new(format!(
                "ssh-keygen -q -t ed25519 -N '' -C plexburst-run -f {}",
                quote(&key.display().to_string())
            )))
            .context("cannot make the run's SSH key (ssh-keygen)")?;
    }
    Ok(std::fs::read_to_string(key.with_extension("pub"))?
        .trim()
        .to_string())
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let sc = scaleway(&ctx.plan)
        .expect("provision runs for cloud targets")
        .clone();
    let (creds, api) = connect_api()?;
    let project = creds.project_id.clone().ok_or_else(|| {
        BadInput("no Scaleway project: set SCW_DEFAULT_PROJECT_ID or default_project_id".into())
    })?;
    let run_dir = ctx.store.dir().join("runs").join(&ctx.state.run_id);
    let public_key = make_key(&run_dir.join("ssh"))?;
    let tags: Vec<String> = sc
        .tags
        .iter()
        .map(|t| t.replace(RUN_ID, &ctx.state.run_id))
        .collect();

    // A new server has a new host key: the run's known_hosts holds only its own instance's.
    if ctx.state.instance.is_none() {
        let _ = std::fs::remove_file(run_dir.join("ssh/known_hosts"));
    }
    // The deadline's key first: a key that may not make it stops the run before anything bills.
    let deadline_key = if ctx.state.instance.is_none() {
        make_deadline_key(ctx, &api, &creds, &sc, &project)?
    } else {
        None
    };
    // A resumed provision goes on with the server it already made, if any.
    if ctx
        .state
        .instance
        .as_ref()
        .is_none_or(|i| i.server_id.is_none())
    {
        create_and_start(
            ctx,
            &api,
            &creds,
            &sc,
            &project,
            &tags,
            &public_key,
            &run_dir,
        )?;
    }
    let inst = ctx.state.instance.clone().expect("journaled above");
    let zone = inst.zone.clone();
    let id = inst.server_id.clone().expect("journaled above");

    // Running, with an address.
    let deadline = Instant::now() + sc.boot_timeout;
    let address = loop {
        ctx.check_interrupt()?;
        match api
            .server(&zone, &id)
            .map_err(|e| anyhow::anyhow!(explain(&e)))?
        {
            Some(s) if s.state == "running" && !s.ipv4.is_empty() => break s.ipv4[0].clone(),
            Some(s) if s.state == "stopped" && Instant::now() > deadline => {
                bail!(
                    "the server {id} is still stopped after {:?}; it did not boot",
                    sc.boot_timeout
                )
            }
            Some(_) => {}
            None => bail!("the server {id} disappeared while booting"),
        }
        if Instant::now() > deadline {
            bail!(
                "the server {id} did not reach running with an address within {:?}",
                sc.boot_timeout
            );
        }
        ctx.pause(POLL)?;
    };
    if let Some(i) = ctx.state.instance.as_mut() {
        i.address = Some(address.clone());
    }
    ctx.save()?;

    // SSH: the first contact records the host key; from then on it is checked strictly.
    let inst = ctx.state.instance.clone().expect("set above");
    let control = ctx.store.dir().join("ssh");
    let ssh = loop {
        ctx.check_interrupt()?;
        let first = !inst.host_key_pinned;
        let t = crate::session::instance_target(&inst, !first);
        match crate::remote::ssh::Ssh::connect(&t, &control) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => tracing::debug!("ssh not up yet: {e}"),
            Err(e) => bail!(
                "cannot reach the instance over SSH at {address}:{}: {e}",
                inst.ssh_port
            ),
        }
        ctx.pause(POLL)?;
    };
    if let Some(i) = ctx.state.instance.as_mut() {
        i.host_key_pinned = true;
    }
    ctx.save()?;
    let journaled = crate::remote::journal::Journaled::open(
        Box::new(ssh),
        &super::journal_path(ctx.store.dir(), &ctx.state.run_id),
    )?;
    ctx.remote = Box::new(journaled);

    // cloud-init ran plexburst's user data: wait for it, and say what failed if it did.
    let out = ctx
        .remote
        .exec(&Cmd::new("cloud-init status --wait --long").timeout(sc.boot_timeout))?;
    let status = out.stdout_str();
    if out.status != 0 || !status.contains("status: done") {
        let tail = ctx
            .remote
            .exec(&Cmd::new("tail -n 30 /var/log/cloud-init-output.log"))
            .map(|o| o.stdout_str())
            .unwrap_or_default();
        bail!(
            "cloud-init did not finish cleanly on the instance:\n{}\nlast lines of /var/log/cloud-init-output.log:\n{}",
            status.trim(),
            tail.trim_end()
        );
    }
    let deadline = match deadline_key {
        Some(key) => arm_deadline(ctx, &creds, &zone, &id, &key, sc.max_lifetime)?,
        None if ctx.state.iam.is_empty() => format!(
            "deadline: in-guest shutdown after {} only (target.allow_weak_deadline)",
            crate::units::format_duration(sc.max_lifetime)
        ),
        None => "deadline armed at the first boot".into(),
    };
    let i = ctx.state.instance.as_ref().expect("set above");
    // The price is the rented server's record: one place for it, the cost's.
    let price = ctx
        .state
        .rented
        .iter()
        .find(|r| r.server_id == id)
        .map(|r| r.hourly_price)
        .unwrap_or_default();
    Ok(Outcome::Done(Some(format!(
        "server {} ({}, {}, {:.4} EUR/h) at {}:{}, cloud-init done; {deadline}",
        id, i.commercial_type, i.zone, price, address, i.ssh_port
    ))))
}

/// The IAM application, policy and key the instance deletes itself with at its deadline (each id
/// journaled as it is made). `None` when the key may not make them and the user accepted the
/// weak deadline; bad input when not accepted.
fn make_deadline_key(
    ctx: &mut Ctx,
    api: &Api,
    creds: &Credentials,
    sc: &ScalewayPlan,
    project: &str,
) -> anyhow::Result<Option<crate::cloud::scaleway::api::DeadlineKey>> {
    let weak = |why: String| -> anyhow::Result<Option<_>> {
        if sc.allow_weak_deadline {
            tracing::warn!(
                "{why}; the deadline is an in-guest shutdown only (target.allow_weak_deadline), which may not stop billing"
            );
            Ok(None)
        } else {
            Err(BadInput(format!(
                "{why}, so the instance cannot delete itself at its deadline; an in-guest shutdown may not stop billing (scaleway.md App. B #8). Use a key with IAM rights (IAMManager), or accept the weak deadline with target.allow_weak_deadline = true"
            ))
            .into())
        }
    };
    let Some(org) = creds.organization_id.clone() else {
        return weak(
            "no Scaleway organization id (default_organization_id / SCW_DEFAULT_ORGANIZATION_ID)"
                .into(),
        );
    };
    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(
            sc.max_lifetime + Duration::from_secs(3600),
        )?)?
        .round(jiff::Unit::Second)?;
    let name = format!("plexburst-{}", ctx.state.run_id);
    let mut made: Vec<(String, String)> = Vec::new();
    let result = api.create_deadline_key(
        &name,
        &org,
        project,
        &expires.to_string(),
        &mut |kind, id| {
            made.push((kind.to_string(), id.to_string()));
        },
    );
    ctx.state.iam.extend(made);
    ctx.save()?;
    match result {
        Ok(k) => Ok(Some(k)),
        Err(e) if e.is_auth() => weak(format!(
            "the Scaleway key may not make an IAM application for the deadline ({e})"
        )),
        Err(e) => Err(anyhow::anyhow!(explain(&e))).context("cannot make the deadline's IAM key"),
    }
}

/// On the instance: the key in a 0600 header file (never on a command line), and a detached
/// watchdog that terminates the server through the API at the deadline, whether or not plexburst
/// is alive then.
fn arm_deadline(
    ctx: &mut Ctx,
    creds: &Credentials,
    zone: &str,
    id: &str,
    key: &crate::cloud::scaleway::api::DeadlineKey,
    max_lifetime: Duration,
) -> anyhow::Result<String> {
    let dir = "/root/.plexburst";
    ctx.remote
        .run(&Cmd::new(format!("mkdir -p {dir} && chmod 700 {dir}")))?;
    let header = format!("X-Auth-Token: {}\n", key.secret_key.expose());
    ctx.remote
        .put_file(&format!("{dir}/deadline.header"), header.as_bytes(), 0o600)
        .context("cannot put the deadline's key on the instance")?;
    let url = format!(
        "{}/instance/v1/zones/{zone}/servers/{id}/action",
        creds.api_url
    );
    let secs = max_lifetime.as_secs();
    let watchdog = format!(
        "sleep {secs}; curl -fsS -X POST -H @{dir}/deadline.header -H 'Content-Type: application/json' -d '{{\"action\":\"terminate\"}}' {} >>{dir}/deadline.log 2>&1",
        quote(&url)
    );
    ctx.remote.run(&Cmd::new(format!(
        "setsid nohup sh -c {} </dev/null >/dev/null 2>&1 &",
        quote(&watchdog)
    )))?;
    Ok(format!(
        "deadline: the instance terminates itself through the API after {} (IAM key {}, expires an hour later)",
        crate::units::format_duration(max_lifetime),
        key.access_key
    ))
}

/// Create the server, exactly once. A create whose answer is lost or refused with a retryable
/// error may or may not have made it: the run's tag says which. Only when no server carries the
/// tag is the create sent again, so a retry never makes a second server.
fn create_once(
    api: &Api,
    zone: &str,
    req: &NewServer,
    run_id: &str,
) -> Result<crate::cloud::scaleway::api::Server, ApiError> {
    let mut wait = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match api.create_server(zone, req) {
            Ok(s) => return Ok(s),
            Err(e) if e.is_retryable() && attempt < 5 => {
                if let Some(s) = api
                    .servers_tagged(zone, &run_tag(run_id))?
                    .into_iter()
                    .next()
                {
                    tracing::info!(
                        "the create's answer was lost ({e}); the server {} exists",
                        s.id
                    );
                    return Ok(s);
                }
                tracing::warn!(
                    "creating the server failed ({e}); no server carries the run's tag, so trying again"
                );
                std::thread::sleep(wait);
                wait *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Try each zone and type in order until one server is created and powered on.
#[allow(clippy::too_many_arguments)]
fn create_and_start(
    ctx: &mut Ctx,
    api: &Api,
    creds: &Credentials,
    sc: &ScalewayPlan,
    project: &str,
    tags: &[String],
    public_key: &str,
    run_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let dirs = vec![
        ctx.plan.target.work_dir.clone(),
        ctx.plan.plex.data_dir.clone(),
        ctx.plan.export.destination.clone(),
    ];
    let (runtime, image) = match ctx.runtime() {
        crate::runtime::Runtime::Docker(d) => ("docker", d.image.clone()),
        crate::runtime::Runtime::Command(_) => ("command", String::new()),
    };
    let user_data = userdata::cloud_config(&userdata::UserData {
        public_key,
        runtime,
        image: &image,
        dirs: &dirs,
        deadline: sc.max_lifetime,
    });
    let mut tried = Vec::new();
    for zone in zones(sc, creds) {
        let types = api
            .server_types(&zone)
            .map_err(|e| anyhow::anyhow!(explain(&e)))?;
        let stock = api.availability(&zone).unwrap_or_default();
        for t in &sc.types {
            ctx.check_interrupt()?;
            let Some(st) = types.get(t) else {
                tried.push(format!("{zone} {t}: not offered"));
                continue;
            };
            if stock.get(t).is_some_and(|a| a == "shortage") || st.end_of_service {
                tried.push(format!("{zone} {t}: out of stock or end of service"));
                tracing::warn!("{zone} {t} is out of stock or at end of service; trying the next");
                continue;
            }
            let Some(image_id) = api
                .image_for(&zone, &sc.image_label, t, &sc.root_volume_type)
                .map_err(|e| anyhow::anyhow!(explain(&e)))?
            else {
                tried.push(format!("{zone} {t}: no {} image", sc.image_label));
                continue;
            };
            let name = format!("plexburst-{}", ctx.state.run_id);
            let req = NewServer {
                name: name.clone(),
                commercial_type: t.clone(),
                image_id,
                project_id: project.to_string(),
                tags: tags.to_vec(),
                root_volume_type: sc.root_volume_type.clone(),
                root_volume_bytes: sc.root_volume_bytes,
            };
            // Journal the attempt before the call: a crash between the create and its answer
            // leaves the run tag to find the server by.
            ctx.state.instance = Some(Instance {
                provider: "scaleway".into(),
                zone: zone.clone(),
                commercial_type: t.clone(),
                server_id: None,
                volumes: Vec::new(),
                address: None,
                ssh_port: sc.ssh_port,
                key_path: run_dir.join("ssh/id_ed25519").display().to_string(),
                known_hosts: run_dir.join("ssh/known_hosts").display().to_string(),
                host_key_pinned: false,
            });
            ctx.save()?;
            let server = match create_once(api, &zone, &req, &ctx.state.run_id) {
                Ok(s) => s,
                Err(e) if e.is_quota() => {
                    return Err(
                        BadInput(format!("creating a {t} in {zone}: {}", explain(&e))).into(),
                    );
                }
                Err(e) if e.is_out_of_stock() => {
                    tried.push(format!("{zone} {t}: out of stock at create"));
                    ctx.state.instance = None;
                    ctx.save()?;
                    continue;
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(explain(&e))).context("cannot create the server");
                }
            };
            if let Some(i) = ctx.state.instance.as_mut() {
                i.server_id = Some(server.id.clone());
                i.volumes = server.volumes.clone();
            }
            ctx.state.rented.push(crate::state::Rented {
                server_id: server.id.clone(),
                commercial_type: t.clone(),
                zone: zone.clone(),
                hourly_price: st.hourly_price,
                started_at: crate::state::now(),
                ended_at: None,
            });
            ctx.save()?;
            tracing::info!(
                "created server {} ({t} in {zone}, {:.4} EUR/h)",
                server.id,
                st.hourly_price
            );
            api.set_user_data(&zone, &server.id, "cloud-init", &user_data)
                .map_err(|e| anyhow::anyhow!(explain(&e)))
                .context("cannot set the server's cloud-init user data")?;
            match api.action(&zone, &server.id, "poweron") {
                Ok(()) => return Ok(()),
                Err(e) if e.is_out_of_stock() => {
                    tracing::warn!(
                        "{t} in {zone} is out of stock at power-on; deleting the server and trying the next zone or type"
                    );
                    tried.push(format!("{zone} {t}: out of stock at power-on"));
                    release(ctx, api)?;
                }
                Err(e) if e.is_quota() => {
                    release(ctx, api)?;
                    return Err(
                        BadInput(format!("powering on a {t} in {zone}: {}", explain(&e))).into(),
                    );
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(explain(&e))).context("cannot power the server on");
                }
            }
        }
    }
    bail!(
        "no zone and type could be rented:\n  {}\nadd zones or fallback_types to [target], or try later",
        tried.join("\n  ")
    )
}

/// Delete the run's server and everything it had, then sweep the run's tag; clears
/// `state.instance` only when nothing is left. Safe to call again (what is gone is gone).
pub fn release(ctx: &mut Ctx, api: &Api) -> anyhow::Result<()> {
    let mut state = ctx.state.clone();
    let result = release_state(&mut state, api, &mut |s| {
        ctx.store.save(s)?;
        Ok(())
    });
    ctx.state = state;
    if ctx.state.instance.is_none() {
        ctx.remote = Box::new(crate::remote::Pending(ctx.plan.target.describe.clone()));
    }
    result
}

/// `release` on a bare state (`destroy` has no live run): `save` persists each step.
pub fn release_state(
    state: &mut crate::state::State,
    api: &Api,
    save: &mut dyn FnMut(&mut crate::state::State) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(inst) = state.instance.clone() else {
        for (kind, iam_id) in state.iam.clone() {
            api.delete_iam(&kind, &iam_id)
                .map_err(|e| anyhow::anyhow!(explain(&e)))?;
            state.released.push(format!("IAM {kind} {iam_id}"));
        }
        state.iam.clear();
        save(state)?;
        return Ok(());
    };
    let zone = inst.zone.clone();
    let mut volumes = inst.volumes.clone();
    let mut ids: Vec<String> = inst.server_id.iter().cloned().collect();
    // A create whose answer was lost: the tag finds it.
    if let Ok(found) = api.servers_tagged(&zone, &run_tag(&state.run_id)) {
        for s in found {
            if !ids.contains(&s.id) {
                ids.push(s.id.clone());
            }
            for v in s.volumes {
                if !volumes.contains(&v) {
                    volumes.push(v);
                }
            }
        }
    }
    for id in &ids {
        delete_server(api, &zone, id, &mut volumes)?;
        for r in state
            .rented
            .iter_mut()
            .filter(|r| &r.server_id == id && r.ended_at.is_none())
        {
            r.ended_at = Some(crate::state::now());
        }
        state
            .released
            .push(format!("server {id} ({}, {zone})", inst.commercial_type));
    }
    for (vid, vtype) in &volumes {
        api.delete_volume(&zone, vid, vtype)
            .map_err(|e| anyhow::anyhow!(explain(&e)))
            .with_context(|| format!("cannot delete the volume {vid}"))?;
        if api.volume_exists(&zone, vid, vtype).unwrap_or(true) {
            bail!(
                "the volume {vid} ({vtype}) is still there after its delete; `plexburst destroy` tries again"
            );
        }
        state.released.push(format!("volume {vid} ({vtype})"));
    }
    let tag = run_tag(&state.run_id);
    let left_servers = api
        .servers_tagged(&zone, &tag)
        .map_err(|e| anyhow::anyhow!(explain(&e)))?;
    let left_ips = api
        .ips_tagged(&zone, &tag)
        .map_err(|e| anyhow::anyhow!(explain(&e)))?;
    for (ip, addr) in &left_ips {
        api.delete_ip(&zone, ip)
            .map_err(|e| anyhow::anyhow!(explain(&e)))?;
        state.released.push(format!("ip {addr}"));
    }
    if !left_servers.is_empty() {
        bail!(
            "servers tagged {tag} are still there: {}; run `plexburst destroy` again",
            left_servers
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (kind, iam_id) in state.iam.clone() {
        api.delete_iam(&kind, &iam_id)
            .map_err(|e| anyhow::anyhow!(explain(&e)))
            .with_context(|| format!("cannot delete the deadline's IAM {kind} {iam_id}"))?;
        state.released.push(format!("IAM {kind} {iam_id}"));
    }
    state.iam.clear();
    state.instance = None;
    save(state)?;
    Ok(())
}

/// Terminate a running server (it deletes its local volumes), or delete a stopped one, and wait
/// until the API says 404. Transient states are waited out.
fn delete_server(
    api: &Api,
    zone: &str,
    id: &str,
    volumes: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut asked = false;
    loop {
        let Some(s) = api
            .server(zone, id)
            .map_err(|e| anyhow::anyhow!(explain(&e)))?
        else {
            // Gone. Its volumes are still deleted one by one: a delete of one that terminate
            // already took is a 404, which counts as done.
            return Ok(());
        };
        for v in &s.volumes {
            if !volumes.contains(v) {
                volumes.push(v.clone());
            }
        }
        match s.state.as_str() {
            "running" if !asked => {
                api.action(zone, id, "terminate")
                    .map_err(|e| anyhow::anyhow!(explain(&e)))?;
                asked = true;
            }
            "stopped" | "stopped in place" => {
                api.delete_server(zone, id)
                    .map_err(|e| anyhow::anyhow!(explain(&e)))?;
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bail!(
                "the server {id} is still there ({}) after 10 minutes",
                s.state
            );
        }
        // Not `ctx.pause`: a second Ctrl-C must not stop a teardown half-way.
        std::thread::sleep(POLL);
    }
}

/// `plexburst destroy --sweep`: every server tagged `plexburst` in `zones` (with its volumes),
/// every IP so tagged, and the deadlines' IAM applications and policies (named `plexburst-…`,
/// tagged `plexburst`): listed, then deleted once the user says yes (or `--yes`).
pub fn sweep(zones: &[String], yes: bool) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let (creds, api) = connect_api()?;
    let zones: Vec<String> = if zones.is_empty() {
        vec![creds.zone.clone()]
    } else {
        zones.to_vec()
    };
    let tag = crate::cloud::scaleway::TAG;
    let mut found: Vec<(String, String)> = Vec::new();
    let mut servers = Vec::new();
    let mut ips = Vec::new();
    for zone in &zones {
        for s in api
            .servers_tagged(zone, tag)
            .map_err(|e| anyhow::anyhow!(explain(&e)))?
        {
            found.push((
                format!(
                    "server {} ({}, {zone}, {})",
                    s.id, s.commercial_type, s.state
                ),
                zone.clone(),
            ));
            servers.push((zone.clone(), s));
        }
        for (id, addr) in api
            .ips_tagged(zone, tag)
            .map_err(|e| anyhow::anyhow!(explain(&e)))?
        {
            found.push((format!("ip {addr} ({zone})"), zone.clone()));
            ips.push((zone.clone(), id));
        }
    }
    let iam = api
        .iam_tagged(tag)
        .map_err(|e| anyhow::anyhow!(explain(&e)))?;
    for (kind, id, name) in &iam {
        found.push((format!("IAM {kind} {id} ({name})"), String::new()));
    }
    if found.is_empty() {
        eprintln!(
            "sweep: nothing tagged {tag} in {}, and no plexburst IAM objects",
            zones.join(", ")
        );
        return Ok(());
    }
    eprintln!("sweep: found, tagged {tag}:");
    for (what, _) in &found {
        eprintln!("  {what}");
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(BadInput("the sweep deletes what it listed only when you say so: pass --yes, or run it on a terminal".into()).into());
        }
        eprint!("delete all of it? [y/N] ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            eprintln!("sweep: nothing deleted");
            return Ok(());
        }
    }
    for (zone, s) in servers {
        let mut volumes = s.volumes.clone();
        delete_server(&api, &zone, &s.id, &mut volumes)?;
        for (vid, vtype) in &volumes {
            api.delete_volume(&zone, vid, vtype)
                .map_err(|e| anyhow::anyhow!(explain(&e)))?;
        }
    }
    for (zone, id) in ips {
        api.delete_ip(&zone, &id)
            .map_err(|e| anyhow::anyhow!(explain(&e)))?;
    }
    for (kind, id, _) in iam {
        api.delete_iam(&kind, &id)
            .map_err(|e| anyhow::anyhow!(explain(&e)))?;
    }
    eprintln!("sweep: deleted {} resources", found.len());
    Ok(())
}

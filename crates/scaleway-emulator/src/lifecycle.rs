//! The timed half of the state machine (scaleway.md Appendix A): carries out the [`Effect`]s
//! the world returns — boot and stop delays, the instance hook's `boot` and `halt`, SBS
//! detaches — on tokio tasks, then writes the outcome back into the world.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hook::{CallEnv, HookCall, HookRunner, Verb, write_user_data};
use crate::model::Pending;
use crate::world::{Effect, Shared, World, lock};

/// What the HTTP handlers and the timers share.
#[derive(Clone)]
pub struct App {
    pub world: Shared,
    /// The hook, whose work dir (a temp dir owned by the server loop) also holds
    /// `user-data/<server id>/`.
    pub hook: Option<Arc<HookRunner>>,
    pub hook_seq: Arc<AtomicU64>,
}

impl App {
    /// The boot hook's `USERDATA_DIR` for a server; None without a hook.
    fn user_data_dir(&self, server_id: &str) -> Option<PathBuf> {
        let hook = self.hook.as_ref()?;
        Some(hook.work_dir.join("user-data").join(server_id))
    }

    fn remove_user_data_dir(&self, server_id: &str) {
        if let Some(dir) = self.user_data_dir(server_id) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn save(&self, w: &World) {
        if let Err(e) = w.save() {
            eprintln!("scaleway-emulator: state file: {e:#}");
        }
    }

    async fn run_hook(
        &self,
        verb: Verb,
        server_id: &str,
        zone: &str,
        env: &CallEnv<'_>,
    ) -> Option<HookCall> {
        let hook = self.hook.as_ref()?;
        let dir = self.user_data_dir(server_id)?;
        let seq = self.hook_seq.fetch_add(1, Ordering::Relaxed);
        let call = hook
            .run(
                verb,
                server_id,
                zone,
                (verb == Verb::Boot).then_some(dir.as_path()),
                env,
                seq,
            )
            .await;
        if !call.ok {
            eprintln!("scaleway-emulator: server {server_id}: {}", call.error);
        }
        lock(&self.world).hook_calls.push(call.clone());
        Some(call)
    }
}

/// Start every effect on its own task. Must run inside the tokio runtime.
pub fn run_effects(app: &App, effects: Vec<Effect>) {
    for effect in effects {
        let app = app.clone();
        tokio::spawn(async move {
            match effect {
                Effect::Transition { server_id, epoch } => {
                    transition(&app, &server_id, epoch).await
                }
                Effect::Halt {
                    server_id,
                    zone,
                    name,
                    commercial_type,
                } => {
                    let public_ip = lock(&app.world).opts.public_ip.clone();
                    let env = CallEnv {
                        server_name: &name,
                        commercial_type: &commercial_type,
                        public_ip: &public_ip,
                    };
                    app.run_hook(Verb::Halt, &server_id, &zone, &env).await;
                    app.remove_user_data_dir(&server_id);
                }
                Effect::Detach {
                    volume_id,
                    server_id,
                } => {
                    let delay = {
                        let w = lock(&app.world);
                        w.faults.detach_delay(w.opts.detach_delay)
                    };
                    tokio::time::sleep(delay).await;
                    let mut w = lock(&app.world);
                    w.detach_done(&volume_id, &server_id);
                    app.save(&w);
                }
            }
        });
    }
}

/// Finish the transition `server_id` entered at `epoch`.
async fn transition(app: &App, server_id: &str, epoch: u64) {
    let (pending, zone, name, ctype, user_data, boot_delay, stop_delay, public_ip) = {
        let w = lock(&app.world);
        let Some((pending, s)) = w.pending(server_id, epoch) else {
            return;
        };
        (
            pending,
            s.zone.clone(),
            s.name.clone(),
            s.commercial_type.clone(),
            s.user_data.clone(),
            w.faults.boot_delay(w.opts.boot_delay),
            w.opts.stop_delay,
            w.opts.public_ip.clone(),
        )
    };
    let env = CallEnv {
        server_name: &name,
        commercial_type: &ctype,
        public_ip: &public_ip,
    };
    match pending {
        Pending::Boot => {
            let boot = async {
                let dir = app.user_data_dir(server_id)?;
                if let Err(e) = write_user_data(&dir, &user_data) {
                    return Some(Err(format!(
                        "boot hook not run: writing user data to {}: {e}",
                        dir.display()
                    )));
                }
                app.run_hook(Verb::Boot, server_id, &zone, &env)
                    .await
                    .map(Ok)
            };
            let ((), outcome) = tokio::join!(tokio::time::sleep(boot_delay), boot);
            let failure = match outcome {
                None => None,
                Some(Ok(call)) if call.ok => {
                    let mut w = lock(&app.world);
                    w.boot_done(server_id, epoch, call.public_ip);
                    app.save(&w);
                    return;
                }
                Some(Ok(call)) => Some(call.error),
                Some(Err(why)) => {
                    eprintln!("scaleway-emulator: server {server_id}: {why}");
                    Some(why)
                }
            };
            if let Some(why) = &failure {
                // Clean up whatever the failed boot left behind (halt is idempotent by contract)
                // while the server is still `starting`, so no new boot can overlap this halt.
                app.run_hook(Verb::Halt, server_id, &zone, &env).await;
                let mut w = lock(&app.world);
                w.boot_failed(server_id, epoch, why);
                app.save(&w);
            } else {
                let mut w = lock(&app.world);
                w.boot_done(server_id, epoch, None);
                app.save(&w);
            }
        }
        Pending::Reboot => {
            tokio::time::sleep(boot_delay).await;
            let mut w = lock(&app.world);
            w.boot_done(server_id, epoch, None);
            app.save(&w);
        }
        Pending::Poweroff | Pending::StopInPlace | Pending::Terminate => {
            let halt = app.run_hook(Verb::Halt, server_id, &zone, &env);
            tokio::join!(tokio::time::sleep(stop_delay), halt);
            // The server's user data folder goes before the server does, so nothing is left
            // once clients see the 404.
            if pending == Pending::Terminate {
                app.remove_user_data_dir(server_id);
            }
            let effects = {
                let mut w = lock(&app.world);
                let effects = w.stop_done(server_id, epoch);
                app.save(&w);
                effects
            };
            run_effects(app, effects);
        }
    }
}

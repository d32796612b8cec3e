//! Phase configure: save the user's prefs, turn every background task off in one PUT, and create
//! the config's sections that Plex does not have yet (matched by name).

use anyhow::{Context, bail};

use super::Outcome;
use crate::plex::api::{ApiError, NewSection, Pref};
use crate::session::Ctx;
use crate::state::{SavedPref, SectionRef};

pub fn to_saved(p: &Pref) -> SavedPref {
    SavedPref {
        id: p.id.clone(),
        kind: p.kind.clone(),
        value: p.value.clone(),
        default: p.default.clone(),
    }
}

pub fn to_pref(p: &SavedPref) -> Pref {
    Pref {
        id: p.id.clone(),
        kind: p.kind.clone(),
        value: p.value.clone(),
        default: p.default.clone(),
    }
}

/// Ids that could hold a secret are never written to the state.
fn secret_like(id: &str) -> bool {
    let l = id.to_ascii_lowercase();
    l.contains("token") || l.contains("password") || l.contains("secret")
}

/// Turn off every background task `current` (the server's prefs) still has on; returns how many
/// prefs changed. The scan and each analysis run only when plexburst asks for them.
pub fn background_off(ctx: &Ctx, current: &[crate::plex::api::Pref]) -> anyhow::Result<usize> {
    let off = crate::plex::prefs::background_off(current);
    if !off.is_empty() {
        ctx.client()?.set_prefs(&off)?;
    }
    Ok(off.len())
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    ctx.ensure_plex()?;
    let current = ctx.client()?.prefs().context("cannot read Plex's prefs")?;
    // Saved once: on a resume the server already has plexburst's values, which must not be saved.
    if ctx.state.saved_prefs.is_none() {
        ctx.state.saved_prefs = Some(
            current
                .iter()
                .filter(|p| !secret_like(&p.id))
                .map(to_saved)
                .collect(),
        );
        ctx.state.saved_prefs_file = prefs_file_snapshot(ctx, &current);
        ctx.save()?;
    }
    let changed =
        background_off(ctx, &current).context("cannot turn Plex's background tasks off")?;
    tracing::info!("background tasks off ({changed} prefs changed)");

    let existing =
        ctx.retry_starting(|| ctx.client().map_err(|_| unreachable_err())?.sections())?;
    let mut created = 0;
    for s in &ctx.plan.sections {
        match existing.iter().find(|e| e.title == s.name) {
            Some(e) if e.kind != s.kind.api_kind() => bail!(
                "Plex already has a section {:?} of type {:?}, but the config says {}; rename one of them",
                s.name,
                e.kind,
                s.kind.as_str()
            ),
            Some(_) => {}
            None => {
                let new = NewSection {
                    name: s.name.clone(),
                    kind: s.kind.api_kind().into(),
                    agent: s.agent.clone(),
                    scanner: s.scanner.clone(),
                    language: s.language.clone(),
                    locations: s.paths.clone(),
                };
                ctx.retry_starting(|| {
                    ctx.client()
                        .map_err(|_| unreachable_err())?
                        .create_section(&new)
                })
                .with_context(|| format!("cannot create section {:?}", s.name))?;
                created += 1;
                tracing::info!("created section {:?} ({})", s.name, s.kind.as_str());
            }
        }
    }
    let after = ctx.retry_starting(|| ctx.client().map_err(|_| unreachable_err())?.sections())?;
    let mut refs = Vec::new();
    for s in &ctx.plan.sections {
        let Some(e) = after.iter().find(|e| e.title == s.name) else {
            bail!("Plex does not list section {:?} after creating it", s.name);
        };
        let was_created = !existing.iter().any(|x| x.title == s.name)
            || ctx
                .state
                .sections
                .iter()
                .any(|r| r.name == s.name && r.created);
        refs.push(SectionRef {
            name: s.name.clone(),
            id: e.id,
            section_type: s.kind.code(),
            created: was_created,
        });
    }
    ctx.state.sections = refs;
    Ok(Outcome::Done(Some(format!(
        "{changed} prefs turned off, {created} sections created"
    ))))
}

/// How Preferences.xml states the prefs plexburst manages, before it changes them: what a
/// restore with Plex stopped writes back. `None` when the file cannot be read; such a restore
/// then goes by the saved values.
fn prefs_file_snapshot(
    ctx: &Ctx,
    current: &[Pref],
) -> Option<std::collections::BTreeMap<String, Option<String>>> {
    let read = ctx
        .remote
        .get_file(&ctx.plan.plex.prefs_path)
        .map_err(anyhow::Error::from)
        .and_then(|b| crate::plex::xml::attrs(&String::from_utf8_lossy(&b)));
    match read {
        Ok(file) => Some(crate::plex::prefs::file_snapshot(current, &file)),
        Err(e) => {
            tracing::warn!(
                "cannot read {} to record its settings: {e:#}",
                ctx.plan.plex.prefs_path
            );
            None
        }
    }
}

fn unreachable_err() -> ApiError {
    ApiError::Unreachable {
        url: String::new(),
        detail: "not connected".into(),
    }
}

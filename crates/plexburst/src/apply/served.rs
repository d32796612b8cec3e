//! What the home Plex serves, through its API, against the manifest's counts.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Options;
use super::site::Site;
use crate::export::Manifest;
use crate::plex::api::Client;

/// The leaf metadata type a section's `items` counts (plex.md §1.3): movies, episodes, tracks,
/// photos.
pub(super) fn leaf_type(section_type: i64) -> i64 {
    match section_type {
        2 => 4,
        8 => 10,
        13 => 13,
        _ => 1,
    }
}

/// Wait for the home Plex to answer (its token read from its `Preferences.xml` on the host), and
/// return its identity.
pub(super) fn connect_api(
    site: &Site,
    opts: &Options,
) -> anyhow::Result<(Client, Box<dyn crate::remote::Forward>, String)> {
    let fwd = site
        .remote
        .forward(opts.plex_port)
        .context("cannot reach the home Plex's port")?;
    let xml = site.remote.get_file(&site.prefs())?;
    let token = crate::plex::xml::online_token(&String::from_utf8_lossy(&xml))?;
    let client = Client::new(
        &format!("http://{}", fwd.local_addr()),
        token,
        Duration::from_secs(30),
    );
    let deadline = Instant::now() + opts.timeout;
    loop {
        let up = client.identity().and_then(|id| client.ready().map(|_| id));
        match up {
            Ok(id) => return Ok((client, fwd, id.machine_identifier)),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                // Polling a server that is starting; the deadline bounds it.
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the home Plex on port {} did not come up within {}",
                    opts.plex_port,
                    crate::units::format_duration(opts.timeout)
                )));
            }
        }
    }
}

/// Per section of the manifest, what the home Plex serves, compared with the manifest.
pub(super) fn check_served(
    site: &Site,
    manifest: &Manifest,
    opts: &Options,
) -> anyhow::Result<Vec<String>> {
    let (client, _fwd, machine) = connect_api(site, opts)?;
    let served = client.sections()?;
    let mut lines = vec![format!("home Plex up, machineIdentifier {machine}")];
    let mut wrong = Vec::new();
    for s in &manifest.sections {
        let Some(have) = served.iter().find(|h| h.id == s.section_id) else {
            wrong.push(format!(
                "section {} {:?} is not served",
                s.section_id, s.name
            ));
            continue;
        };
        if have.title != s.name {
            wrong.push(format!(
                "section {} is {:?}, the manifest says {:?}",
                s.section_id, have.title, s.name
            ));
        }
        // Plex lists trashed items too, so the manifest's `items + deleted` is what it serves.
        let expect = s.items + s.deleted;
        let got = client.count_items(s.section_id, leaf_type(s.section_type), false)?;
        if got != expect {
            wrong.push(format!(
                "section {:?}: {got} items served, the manifest says {expect}",
                s.name
            ));
        }
        let mut line = format!("  {}: {got} items", s.name);
        // Trashed tracks may carry Sonic data too; the comparison holds when the trash is empty.
        if s.section_type == 8 && s.deleted == 0 {
            let sonic = client.count_items(s.section_id, 10, true)?;
            if sonic != s.sonic_analyzed {
                wrong.push(format!(
                    "section {:?}: {sonic} Sonic-analysed tracks served, the manifest says {}",
                    s.name, s.sonic_analyzed
                ));
            }
            line.push_str(&format!(", {sonic} Sonic-analysed"));
        }
        lines.push(line);
    }
    if !wrong.is_empty() {
        bail!("{}", wrong.join("; "));
    }
    lines.push("counts match the manifest".into());
    Ok(lines)
}

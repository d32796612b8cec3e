//! Phase preflight: before Plex starts, every section path is a folder on the target (on rclone
//! storage: through the mount) holding files of its type. A problem is the config's fault (exit
//! 2) and stops the run here, so a typo never costs a scan; the counts become the scan's total.

use super::Outcome;
use crate::error::BadInput;
use crate::session::Ctx;
use crate::survey::{self, Wanted};
use crate::units::format_bytes;

/// The sections of the plan as the survey takes them.
pub fn wanted(plan: &crate::plan::Plan) -> Vec<Wanted<'_>> {
    plan.sections
        .iter()
        .map(|s| Wanted {
            name: &s.name,
            kind: s.kind,
            paths: &s.paths,
            extensions: &s.extensions,
        })
        .collect()
}

/// Survey the plan's sections on `remote`; `Err(BadInput)` naming every problem.
pub fn check(
    plan: &crate::plan::Plan,
    remote: &dyn crate::remote::Remote,
) -> anyhow::Result<Vec<survey::SectionSurvey>> {
    let wanted = wanted(plan);
    let surveys = survey::survey(remote, &wanted)?;
    let problems = survey::problems(&surveys, &wanted);
    if !problems.is_empty() {
        return Err(BadInput(format!(
            "the section folders on {} are not what the config says:\n  {}\nfix `paths` (or `type`) of those sections in the config, then run again",
            remote.describe(),
            problems.join("\n  ")
        ))
        .into());
    }
    Ok(surveys)
}

/// One line per section: `Music: 1000 files, 3.2 GiB`.
pub fn summary(surveys: &[survey::SectionSurvey]) -> String {
    surveys
        .iter()
        .map(|s| {
            format!(
                "{}: {} files, {}",
                s.name,
                s.media_files,
                format_bytes(s.media_bytes)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let surveys = check(&ctx.plan, ctx.remote.as_ref())?;
    let line = summary(&surveys);
    tracing::info!("media files found: {line}");
    ctx.state.survey = surveys;
    Ok(Outcome::Done(Some(line)))
}

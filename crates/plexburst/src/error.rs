//! The errors callers branch on across modules: bad input (exit 2) and an interrupted run (exit 130).
//!
//! They live here, below every other module, so that the pipeline, the session and the app can all
//! raise and recognise them without importing each other.

/// Bad input from the user (config, flags, missing claim, a plan that changed): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The run was stopped by Ctrl-C or SIGTERM: exit code 130.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// A cap of the run (budget, maximum run time) was reached: the watched phase stops waiting and
/// the run goes on to export what exists and tear down.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LimitReached(pub String);

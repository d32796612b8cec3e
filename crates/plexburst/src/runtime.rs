//! How the Plex server process is started, stopped and restarted on the target: docker or command.

use serde::{Deserialize, Serialize};

/// A bind mount for the Plex container: `-v host:container:options`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub host: String,
    pub container: String,
    /// Docker mount options such as `rw`, `ro` or `rslave`.
    pub options: String,
}

/// Plex in a container (the official pms-docker image, or the emulator's image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerSpec {
    pub name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    /// Passed as `-e NAME` with the value in the docker client's environment: never on argv.
    pub secret_env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    /// Published as `127.0.0.1:{port}:32400` only.
    pub port: u16,
    pub extra_args: Vec<String>,
}

/// Plex (or the emulator) started by a shell command line, detached on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// A shell line; may reference `$PLEX_CLAIM` and the other env names.
    pub command: String,
    pub env: Vec<(String, String)>,
    pub secret_env: Vec<(String, String)>,
    pub port: u16,
    pub pid_file: String,
    pub log_file: String,
}

/// How Plex runs on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Runtime {
    Docker(DockerSpec),
    Command(CommandSpec),
}

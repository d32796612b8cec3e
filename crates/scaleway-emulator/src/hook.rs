//! The instance hook (README "Instance hook"): `PATH boot SERVER_ID ZONE USERDATA_DIR` when a
//! server powers on, `PATH halt SERVER_ID ZONE` when it stops or goes away. The only place the
//! emulator starts processes. Output goes to files, not pipes, so a hook that leaves a daemon
//! behind (holding inherited descriptors) cannot stall the emulator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Boot,
    Halt,
}

/// What one hook call did, as `GET /_emulator/hooks` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HookCall {
    pub verb: Verb,
    pub server_id: String,
    pub zone: String,
    pub ok: bool,
    /// The exit code; null when the hook could not start, was killed, or timed out.
    pub exit_code: Option<i32>,
    /// `public_ip=ADDRESS` from the boot hook's stdout, if it printed one.
    pub public_ip: Option<String>,
    /// Why it failed, ending with the last line the hook wrote to stderr; empty on success.
    pub error: String,
    pub duration_ms: u64,
}

/// How to run the hook: its path, its time limit, the folder for output files, and the
/// `SCALEWAY_EMULATOR_*` variables added to the inherited environment.
#[derive(Debug, Clone)]
pub struct HookRunner {
    pub path: PathBuf,
    pub timeout: Duration,
    pub work_dir: PathBuf,
    pub emulator_url: String,
}

/// Per-call variables (README "Instance hook").
pub struct CallEnv<'a> {
    pub server_name: &'a str,
    pub commercial_type: &'a str,
    pub public_ip: &'a str,
}

impl HookRunner {
    pub async fn run(
        &self,
        verb: Verb,
        server_id: &str,
        zone: &str,
        user_data_dir: Option<&Path>,
        env: &CallEnv<'_>,
        seq: u64,
    ) -> HookCall {
        let started = Instant::now();
        let mut call = HookCall {
            verb,
            server_id: server_id.to_string(),
            zone: zone.to_string(),
            ok: false,
            exit_code: None,
            public_ip: None,
            error: String::new(),
            duration_ms: 0,
        };
        let verb_s = match verb {
            Verb::Boot => "boot",
            Verb::Halt => "halt",
        };
        let out_path = self.work_dir.join(format!("hook-{seq}-{verb_s}.out"));
        let err_path = self.work_dir.join(format!("hook-{seq}-{verb_s}.err"));
        let result = self
            .spawn_and_wait(
                verb_s,
                server_id,
                zone,
                user_data_dir,
                env,
                &out_path,
                &err_path,
            )
            .await;
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        for line in stdout.lines().chain(stderr.lines()) {
            eprintln!("scaleway-emulator: hook {verb_s} {server_id}: {line}");
        }
        call.public_ip = stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix("public_ip="))
            .map(|a| a.trim().to_string())
            .rfind(|a| !a.is_empty());
        let last_err = stderr
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default();
        match result {
            Ok(Some(0)) => call.ok = true,
            Ok(code) => {
                call.exit_code = code;
                let how = code.map_or("killed by a signal".to_string(), |c| {
                    format!("exit status {c}")
                });
                call.error = format!("{verb_s} hook failed ({how})");
            }
            Err(e) => call.error = format!("{verb_s} hook failed: {e}"),
        }
        if call.ok {
            call.exit_code = Some(0);
        } else if !last_err.is_empty() {
            let tail: String = last_err.chars().take(300).collect();
            call.error = format!("{}: {tail}", call.error);
        }
        call.duration_ms = started.elapsed().as_millis() as u64;
        call
    }

    #[allow(clippy::too_many_arguments)]
    async fn spawn_and_wait(
        &self,
        verb: &str,
        server_id: &str,
        zone: &str,
        user_data_dir: Option<&Path>,
        env: &CallEnv<'_>,
        out_path: &Path,
        err_path: &Path,
    ) -> Result<Option<i32>, String> {
        let out = std::fs::File::create(out_path).map_err(|e| format!("{out_path:?}: {e}"))?;
        let err = std::fs::File::create(err_path).map_err(|e| format!("{err_path:?}: {e}"))?;
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.arg(verb).arg(server_id).arg(zone);
        if let Some(dir) = user_data_dir {
            cmd.arg(dir);
        }
        cmd.env("SCALEWAY_EMULATOR_URL", &self.emulator_url)
            .env("SCALEWAY_EMULATOR_SERVER_NAME", env.server_name)
            .env("SCALEWAY_EMULATOR_COMMERCIAL_TYPE", env.commercial_type)
            .env("SCALEWAY_EMULATOR_PUBLIC_IP", env.public_ip)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.path.display()))?;
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => Ok(status.code()),
            Ok(Err(e)) => Err(format!("waiting for the hook: {e}")),
            Err(_) => {
                let _ = child.kill().await;
                Err(format!(
                    "timed out after {:?} (--hook-timeout) and was killed",
                    self.timeout
                ))
            }
        }
    }
}

/// Write one file per user-data key into `dir` (emptied first), as the boot hook reads them.
pub fn write_user_data(dir: &Path, data: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for (key, value) in data {
        std::fs::write(dir.join(key), value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_becomes_one_file_per_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("srv");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stale"), "old").unwrap();
        let mut data = BTreeMap::new();
        data.insert("cloud-init".to_string(), b"#cloud-config\n".to_vec());
        data.insert("hello".to_string(), b"world".to_vec());
        write_user_data(&dir, &data).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("cloud-init")).unwrap(),
            "#cloud-config\n"
        );
        assert_eq!(std::fs::read_to_string(dir.join("hello")).unwrap(), "world");
        assert!(!dir.join("stale").exists());
    }
}

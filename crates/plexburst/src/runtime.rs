//! How the Plex server process is started, stopped and restarted on the target: docker or command.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::remote::{Cmd, Remote, quote};

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
    /// Names of secret variables, passed as `-e NAME` with the value in the docker client's
    /// environment (from `Secrets` at start): never on argv, never in the plan.
    pub secret_env: Vec<String>,
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
    /// Names of secret variables the command gets from `Secrets` at start (never their values).
    pub secret_env: Vec<String>,
    pub port: u16,
    pub pid_file: String,
    pub log_file: String,
}

/// How Plex runs on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Runtime {
    Docker(DockerSpec),
    Command(CommandSpec),
}

impl Runtime {
    /// Start Plex. Idempotent: an already running server is left alone. `secrets` holds the
    /// values of the spec's `secret_env` names that are set this time (a claim token, say); a
    /// name without a value is simply not set for the server.
    pub fn start(&self, r: &dyn Remote, secrets: &[(String, String)]) -> anyhow::Result<()> {
        match self {
            Runtime::Docker(d) => d.start(r, secrets),
            Runtime::Command(c) => c.start(r, secrets),
        }
        .with_context(|| format!("starting Plex ({}) on {}", self.describe(), r.describe()))
    }

    /// Have the server's image on the target before anything waits on it: a `docker run` that
    /// pulls would spend a claim token's 4 minutes downloading (plex.md §5). Nothing to do for a
    /// command.
    pub fn ensure_image(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let Runtime::Docker(d) = self else {
            return Ok(());
        };
        let image = quote(&d.image);
        r.run(
            &Cmd::new(format!(
                "docker image inspect {image} >/dev/null 2>&1 || docker pull -q {image}"
            ))
            .timeout(Duration::from_secs(1800)),
        )
        .with_context(|| format!("cannot pull the Plex image {} on {}", d.image, r.describe()))?;
        Ok(())
    }

    /// Stop Plex: SIGTERM (or `docker stop -t`), then SIGKILL after `grace`. Stopping a server
    /// that is not running is fine.
    pub fn stop(&self, r: &dyn Remote, grace: Duration) -> anyhow::Result<()> {
        match self {
            Runtime::Docker(d) => d.stop(r, grace),
            Runtime::Command(c) => c.stop(r, grace),
        }
        .with_context(|| format!("stopping Plex ({}) on {}", self.describe(), r.describe()))
    }

    pub fn is_running(&self, r: &dyn Remote) -> anyhow::Result<bool> {
        match self {
            Runtime::Docker(d) => d.is_running(r),
            Runtime::Command(c) => c.is_running(r),
        }
        .with_context(|| {
            format!(
                "checking whether Plex ({}) runs on {}",
                self.describe(),
                r.describe()
            )
        })
    }

    /// The pid, in the target's own (host) pid namespace, of the process at the root of the
    /// server we started: the command's pid (from the pid file, checked against its start time)
    /// or the container's init process. `None` when it is not running. Its process tree is what
    /// `host::cpu_sample` measures, so another Plex on the same host is never counted.
    pub fn root_pid(&self, r: &dyn Remote) -> anyhow::Result<Option<u32>> {
        match self {
            Runtime::Docker(d) => d.root_pid(r),
            Runtime::Command(c) => c.root_pid(r),
        }
        .with_context(|| {
            format!(
                "finding the process of Plex ({}) on {}",
                self.describe(),
                r.describe()
            )
        })
    }

    /// The last `lines` lines of the server's output (for error messages).
    pub fn log_tail(&self, r: &dyn Remote, lines: usize) -> anyhow::Result<String> {
        match self {
            Runtime::Docker(d) => d.log_tail(r, lines),
            Runtime::Command(c) => c.log_tail(r, lines),
        }
        .with_context(|| {
            format!(
                "reading the log of Plex ({}) on {}",
                self.describe(),
                r.describe()
            )
        })
    }

    /// Plex's port on the target's 127.0.0.1.
    pub fn port(&self) -> u16 {
        match self {
            Runtime::Docker(d) => d.port,
            Runtime::Command(c) => c.port,
        }
    }

    /// The line that starts the server, as the plan prints it and the run issues it: the whole
    /// `docker run` script, or the command line the detached shell execs.
    pub fn start_line(&self) -> String {
        match self {
            Runtime::Docker(d) => d.run_script(),
            Runtime::Command(c) => c.command.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Runtime::Docker(d) => format!("docker container {}", d.name),
            Runtime::Command(c) => format!("command with pid file {}", c.pid_file),
        }
    }
}

/// A command carrying the values of the `names` that `secrets` sets in its environment
/// (`Cmd.env`: never on a command line, redacted everywhere).
fn with_secret_env(mut cmd: Cmd, names: &[String], secrets: &[(String, String)]) -> Cmd {
    for (k, v) in secrets.iter().filter(|(k, _)| names.contains(k)) {
        cmd = cmd.env(k, v).secret(v);
    }
    cmd
}

/// `unset K` for each secret name this start does not set: a value plexburst itself inherited
/// (a `PLEX_CLAIM` exported in the user's shell) must not reach a server that was decided to need
/// none.
fn unset_lines(names: &[String], secrets: &[(String, String)]) -> String {
    names
        .iter()
        .filter(|n| !secrets.iter().any(|(k, _)| k == *n))
        .map(|n| format!("unset {n}\n"))
        .collect()
}

/// `export K='V'` lines for plain (non-secret) settings. They go in the script rather than in
/// `Cmd.env`, whose values are redacted: a data path must stay readable in logs and errors.
fn export_lines(env: &[(String, String)]) -> anyhow::Result<String> {
    let mut out = String::new();
    for (k, v) in env {
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bail!("environment variable name {k:?} is not a valid shell name");
        }
        out.push_str(&format!("export {k}={}\n", quote(v)));
    }
    Ok(out)
}

impl DockerSpec {
    /// The `docker run` line. Secret values are not in it: `-e NAME` makes docker take the value
    /// from its own environment, which the command gets through `Cmd.env`.
    pub fn run_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            self.name.clone(),
            "--restart".into(),
            "no".into(),
            "-p".into(),
            format!("127.0.0.1:{}:32400", self.port),
        ];
        for (k, v) in &self.env {
            a.push("-e".into());
            a.push(format!("{k}={v}"));
        }
        for k in &self.secret_env {
            a.push("-e".into());
            a.push(k.clone());
        }
        for v in &self.volumes {
            a.push("-v".into());
            if v.options.is_empty() {
                a.push(format!("{}:{}", v.host, v.container));
            } else {
                a.push(format!("{}:{}:{}", v.host, v.container, v.options));
            }
        }
        a.extend(self.extra_args.iter().cloned());
        a.push(self.image.clone());
        a
    }

    /// Refuse extra arguments that would publish Plex beyond 127.0.0.1: Plex's port is only
    /// ever reached through the loopback (and an SSH forward), never on a public address.
    pub fn check_extra_args(&self) -> anyhow::Result<()> {
        let mut args = self.extra_args.iter().map(String::as_str).peekable();
        while let Some(a) = args.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f, Some(v)),
                None => (a, None),
            };
            let publishes = matches!(flag, "-p" | "--publish" | "-P" | "--publish-all")
                || (flag.starts_with("-p") && !flag.starts_with("--") && flag.len() > 2);
            let network = matches!(flag, "--network" | "--net");
            let value = inline.or_else(|| if network { args.peek().copied() } else { None });
            if publishes || (network && value == Some("host")) {
                bail!(
                    "docker argument `{a}` would expose ports beyond 127.0.0.1; remove it from \
                     plex.docker_args (plexburst publishes 127.0.0.1:{}:32400 itself)",
                    self.port
                );
            }
        }
        Ok(())
    }

    /// `true`/`false` for an existing container, `None` when there is none.
    fn state(&self, r: &dyn Remote) -> anyhow::Result<Option<bool>> {
        let out = r.exec(&Cmd::new(format!(
            "docker inspect -f '{{{{.State.Running}}}}' {}",
            quote(&self.name)
        )))?;
        let stdout = out.stdout_str();
        match (out.status, stdout.trim()) {
            (0, "true") => Ok(Some(true)),
            (0, "false") => Ok(Some(false)),
            (_, _) if String::from_utf8_lossy(&out.stderr).contains("No such") => Ok(None),
            _ => bail!(
                "`docker inspect {}` failed with status {}: {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    /// The `docker run` script, quoted for `sh`.
    pub fn run_script(&self) -> String {
        let line: Vec<String> = self.run_args().iter().map(|a| quote(a)).collect();
        format!("docker {}", line.join(" "))
    }

    fn start(&self, r: &dyn Remote, secrets: &[(String, String)]) -> anyhow::Result<()> {
        self.check_extra_args()?;
        match self.state(r)? {
            Some(true) => return Ok(()),
            // A stopped container keeps its old settings; recreate it from the spec.
            Some(false) => {
                r.run(&Cmd::new(format!("docker rm -f {}", quote(&self.name))))?;
            }
            None => {}
        }
        let script = format!(
            "{}{}",
            unset_lines(&self.secret_env, secrets),
            self.run_script()
        );
        let cmd = with_secret_env(
            Cmd::new(script).timeout(Duration::from_secs(300)),
            &self.secret_env,
            secrets,
        );
        r.run(&cmd)?;
        Ok(())
    }

    fn stop(&self, r: &dyn Remote, grace: Duration) -> anyhow::Result<()> {
        if self.state(r)?.is_none() {
            return Ok(());
        }
        let name = quote(&self.name);
        r.run(
            &Cmd::new(format!(
                "docker stop -t {} {name} >/dev/null && docker rm {name} >/dev/null",
                grace.as_secs()
            ))
            .timeout(grace + Duration::from_secs(60)),
        )?;
        Ok(())
    }

    fn is_running(&self, r: &dyn Remote) -> anyhow::Result<bool> {
        Ok(self.state(r)? == Some(true))
    }

    fn root_pid(&self, r: &dyn Remote) -> anyhow::Result<Option<u32>> {
        // `.State.Pid` is the container's pid 1 as the host sees it (0 when stopped): the same
        // view as the target's /proc, which `host::cpu_sample` reads.
        let out = r.exec(&Cmd::new(format!(
            "docker inspect -f '{{{{.State.Pid}}}}' {}",
            quote(&self.name)
        )))?;
        let stdout = out.stdout_str();
        match (out.status, stdout.trim().parse::<u32>()) {
            (0, Ok(0)) => Ok(None),
            (0, Ok(pid)) => Ok(Some(pid)),
            (_, _) if String::from_utf8_lossy(&out.stderr).contains("No such") => Ok(None),
            _ => bail!(
                "`docker inspect {}` failed with status {}: {} {}",
                self.name,
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    fn log_tail(&self, r: &dyn Remote, lines: usize) -> anyhow::Result<String> {
        let out = r.run(&Cmd::new(format!(
            "docker logs --tail {lines} {} 2>&1",
            quote(&self.name)
        )))?;
        Ok(out.stdout_str())
    }
}

/// Reads `/proc/$pid/stat`'s start time (field 22, counted after the command name, which may
/// contain spaces and parentheses). Used by every Command-runtime script below.
const START_TIME_FN: &str = r#"pb_start_time() { sed -n 's/^.*) //p' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
pb_alive() {
  pid=$(cat "$PB_PID" 2>/dev/null) || return 1
  want=$(cat "$PB_PID.start" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -n "$want" ] || return 1
  state=$(sed -n 's/^.*) //p' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$(pb_start_time "$pid")" = "$want" ]
}
"#;

impl CommandSpec {
    /// Shell prelude: the helper functions and the quoted file names.
    fn prelude(&self) -> String {
        format!(
            "PB_PID={}\nPB_LOG={}\n{START_TIME_FN}",
            quote(&self.pid_file),
            quote(&self.log_file)
        )
    }

    fn start(&self, r: &dyn Remote, secrets: &[(String, String)]) -> anyhow::Result<()> {
        if self.is_running(r)? {
            return Ok(());
        }
        // The detached shell records its own pid and start time, then execs the command: the pid
        // stays the same, and as a session leader (setsid) it also names the process group that
        // stop() signals. Its output goes to the log file so nothing holds our pipes open.
        let script = format!(
            r#"{prelude}
mkdir -p -- "$(dirname -- "$PB_PID")" "$(dirname -- "$PB_LOG")"
rm -f -- "$PB_PID" "$PB_PID.start"
setsid nohup sh -c '
  pid=$$
  sed -n "s/^.*) //p" "/proc/$pid/stat" | cut -d" " -f20 > "$1.start.tmp" && mv -f "$1.start.tmp" "$1.start"
  echo "$pid" > "$1.tmp" && mv -f "$1.tmp" "$1"
  exec sh -c "$2"' plexburst-runtime "$PB_PID" {command} </dev/null >>"$PB_LOG" 2>&1 &
i=0
while [ ! -s "$PB_PID" ]; do
  i=$((i + 1))
  if [ "$i" -gt 200 ]; then echo "the command did not write its pid file $PB_PID within 20 s" >&2; exit 1; fi
  sleep 0.1
done
"#,
            prelude = self.prelude(),
            command = quote(&self.command),
        );
        let script = format!(
            "{}{}{script}",
            unset_lines(&self.secret_env, secrets),
            export_lines(&self.env)?
        );
        let cmd = with_secret_env(
            Cmd::new(script).timeout(Duration::from_secs(60)),
            &self.secret_env,
            secrets,
        );
        r.run(&cmd)?;
        Ok(())
    }

    fn stop(&self, r: &dyn Remote, grace: Duration) -> anyhow::Result<()> {
        let tenths = grace.as_millis().div_ceil(100);
        // Signal the process group only after checking the pid is still our process: a stale pid
        // file must never make us kill an unrelated process that reused the number. The stop is
        // over when the whole group is gone, not just its leader: `sh -c` may run the server as
        // a child, which can take longer than the shell to exit on SIGTERM.
        let script = format!(
            r#"{prelude}
pb_any() {{ pb_alive || kill -0 "-$pid" 2>/dev/null; }}
if pb_alive; then
  pid=$(cat "$PB_PID")
  kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  i=0
  while pb_any && [ "$i" -lt {tenths} ]; do i=$((i + 1)); sleep 0.1; done
  if pb_any; then echo "still running after {secs} s; sending SIGKILL" >&2; fi
  kill -KILL "-$pid" 2>/dev/null || true
  i=0
  while pb_any; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then echo "process $pid survived SIGKILL" >&2; exit 1; fi
    sleep 0.1
  done
fi
rm -f -- "$PB_PID" "$PB_PID.start"
"#,
            prelude = self.prelude(),
            secs = grace.as_secs_f64(),
        );
        r.run(&Cmd::new(script).timeout(grace + Duration::from_secs(30)))?;
        Ok(())
    }

    fn is_running(&self, r: &dyn Remote) -> anyhow::Result<bool> {
        let out = r.run(&Cmd::new(format!(
            "{}\nif pb_alive; then echo yes; else echo no; fi",
            self.prelude()
        )))?;
        Ok(out.stdout_str().trim() == "yes")
    }

    fn root_pid(&self, r: &dyn Remote) -> anyhow::Result<Option<u32>> {
        // The same liveness check as is_running, so a stale pid file (a reused pid) is `None`.
        let out = r.run(&Cmd::new(format!(
            "{}\nif pb_alive; then cat \"$PB_PID\"; fi",
            self.prelude()
        )))?;
        let text = out.stdout_str();
        match text.trim() {
            "" => Ok(None),
            pid => pid
                .parse()
                .map(Some)
                .with_context(|| format!("pid file {} holds {pid:?}, not a pid", self.pid_file)),
        }
    }

    fn log_tail(&self, r: &dyn Remote, lines: usize) -> anyhow::Result<String> {
        let out = r.run(&Cmd::new(format!(
            "{}\n[ ! -e \"$PB_LOG\" ] || tail -n {lines} -- \"$PB_LOG\"",
            self.prelude()
        )))?;
        Ok(out.stdout_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_not_given_this_time_is_unset_not_inherited() {
        let names = vec!["PLEX_CLAIM".to_string()];
        assert_eq!(unset_lines(&names, &[]), "unset PLEX_CLAIM\n");
        let given = [("PLEX_CLAIM".to_string(), "claim-x".to_string())];
        assert_eq!(unset_lines(&names, &given), "");
    }

    fn spec(extra: &[&str]) -> DockerSpec {
        DockerSpec {
            name: "plexburst-plex".into(),
            image: "plexinc/pms-docker:latest".into(),
            env: vec![("TZ".into(), "UTC".into())],
            secret_env: vec!["PLEX_CLAIM".into()],
            volumes: vec![
                Volume {
                    host: "/srv/plex".into(),
                    container: "/config".into(),
                    options: "rw".into(),
                },
                Volume {
                    host: "/mnt/media".into(),
                    container: "/mnt/media".into(),
                    options: "ro,rslave".into(),
                },
            ],
            port: 32401,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn docker_run_line_publishes_on_loopback_and_keeps_secrets_off_argv() {
        assert_eq!(
            spec(&["--cpus", "4"]).run_args().join(" "),
            "run -d --name plexburst-plex --restart no -p 127.0.0.1:32401:32400 -e TZ=UTC \
             -e PLEX_CLAIM -v /srv/plex:/config:rw -v /mnt/media:/mnt/media:ro,rslave --cpus 4 \
             plexinc/pms-docker:latest"
        );
    }

    #[test]
    fn docker_args_that_expose_plex_are_refused() {
        for bad in [
            &["-p", "32400:32400"][..],
            &["--publish=0.0.0.0:32400:32400"],
            &["-p32400:32400"],
            &["-P"],
            &["--network", "host"],
            &["--net=host"],
        ] {
            let err = spec(bad).check_extra_args().unwrap_err().to_string();
            assert!(err.contains("plex.docker_args"), "{bad:?}: {err}");
        }
        for ok in [
            &["--cpus", "4"][..],
            &["--network", "bridge"],
            &["--pull=never"],
        ] {
            spec(ok).check_extra_args().unwrap();
        }
    }
}

//! The Docker image's entrypoint: pms-docker's container contract (plex.md §5) around `serve`.
//!
//! pms-docker's start-up does, in order: rewrite the `plex` user to `PLEX_UID`/`PLEX_GID`, chown
//! `/config` (and `/transcode`) when `CHANGE_CONFIG_DIR_OWNERSHIP` is true (the default), create
//! the data folder, then run the server as `plex` (`s6-setuidgid plex`). The claim token comes from
//! `PLEX_CLAIM` (or the file named by `PLEX_CLAIM_FILE`). This module does the same steps in the
//! same order, so a media mount the chosen uid cannot read gives an empty scan, as with real Plex.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// Where pms-docker installs the server; invoked under this name the binary runs [`main`].
pub const PMS_BINARY: &str = "/usr/lib/plexmediaserver/Plex Media Server";
/// The data folder inside `/config`, exactly as pms-docker lays it out.
pub const DATA_SUBDIR: &str = "Library/Application Support/Plex Media Server";
/// The port pms-docker's server listens on (published by the runtime to 127.0.0.1 only).
pub const PORT: u16 = 32400;

/// Folders a fresh Plex creates in its data folder on first start [I], so a freshly started
/// container already has the layout the export and the tests expect.
const DATA_FOLDERS: &[&str] = &[
    "Cache",
    "Codecs",
    "Crash Reports",
    "Diagnostics",
    "Logs",
    "Media/localhost",
    "Metadata",
    "Plug-in Support/Caches",
    "Plug-in Support/Data",
    "Plug-in Support/Databases",
    "Plug-in Support/Preferences",
    "Plug-ins",
    "Scanners",
];

/// The container's settings, read from the environment as pms-docker reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEnv {
    pub uid: u32,
    pub gid: u32,
    /// `PLEX_CLAIM`, else the trimmed content of `PLEX_CLAIM_FILE`; `None` when neither is set.
    pub claim: Option<String>,
    /// `PLEX_EMULATOR_PLEXTV_URL`: the plex.tv the claim is exchanged at (the real image always
    /// uses https://plex.tv; the emulator only exchanges when this is set).
    pub plextv_url: Option<String>,
    pub tz: Option<String>,
    pub change_config_dir_ownership: bool,
    pub config_dir: PathBuf,
    pub transcode_dir: PathBuf,
}

impl ContainerEnv {
    /// Read the settings through `get` (the process environment in production, a map in tests).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let id = |name: &str| -> anyhow::Result<u32> {
            match get(name).filter(|v| !v.trim().is_empty()) {
                // 1000 is the `plex` user's id in the image's /etc/passwd.
                None => Ok(1000),
                Some(v) => v.trim().parse().with_context(|| {
                    format!("{name}={v:?} is not a numeric id; set it to a uid/gid such as 1000")
                }),
            }
        };
        let claim = match get("PLEX_CLAIM").filter(|v| !v.trim().is_empty()) {
            Some(c) => Some(c.trim().to_owned()),
            None => match get("PLEX_CLAIM_FILE").filter(|v| !v.is_empty()) {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading PLEX_CLAIM_FILE {file}"))?;
                    Some(text.trim().to_owned()).filter(|c| !c.is_empty())
                }
                None => None,
            },
        };
        // pms-docker compares the lower-cased value with "true"; anything else disables the chown.
        let change = get("CHANGE_CONFIG_DIR_OWNERSHIP")
            .is_none_or(|v| v.trim().eq_ignore_ascii_case("true"));
        Ok(Self {
            uid: id("PLEX_UID")?,
            gid: id("PLEX_GID")?,
            claim,
            plextv_url: get("PLEX_EMULATOR_PLEXTV_URL")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
            tz: get("TZ").filter(|v| !v.is_empty()),
            change_config_dir_ownership: change,
            config_dir: PathBuf::from("/config"),
            transcode_dir: PathBuf::from("/transcode"),
        })
    }

    /// The Plex data folder under `/config`.
    pub fn data_folder(&self) -> PathBuf {
        self.config_dir.join(DATA_SUBDIR)
    }
}

/// True when the process was started as pms-docker's server binary (the image's entrypoint).
pub fn invoked_as_pms() -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|argv0| Path::new(&argv0).file_name() == Path::new(PMS_BINARY).file_name())
}

/// The command line to parse: started as `Plex Media Server`, the arguments are those of the
/// `container` subcommand, so `main` can do `Cli::parse_from(container::argv())` and keep one parser.
pub fn argv() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if invoked_as_pms() {
        args.insert(1, OsString::from("container"));
    }
    args
}

/// `plex-emulator container [SERVE FLAGS]`: what the image runs (as `Plex Media Server`).
#[derive(Debug, Clone, clap::Args)]
pub struct ContainerArgs {
    /// Extra `serve` flags (`--scan-rate`, `--fault`, ...), e.g. after the image name in
    /// `docker run`. The data dir, listen address and claim come from the container contract.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "SERVE_FLAGS"
    )]
    pub serve_flags: Vec<String>,
}

/// `plex-emulator healthcheck`: the image's HEALTHCHECK.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    #[arg(long, default_value = "127.0.0.1:32400")]
    pub addr: SocketAddr,
    /// Connect and read timeout (the HEALTHCHECK itself allows 2s).
    #[arg(long, default_value = "1500ms", value_parser = crate::faults::parse_duration)]
    pub timeout: Duration,
}

/// The `container` subcommand: prepare as pms-docker does, then serve until SIGTERM.
pub fn main(args: ContainerArgs) -> anyhow::Result<()> {
    let env = prepare()?;
    let mut argv: Vec<String> = vec![
        "container".into(),
        "--data-dir".into(),
        env.config_dir.display().to_string(),
        "--listen".into(),
        listen_addr().to_string(),
    ];
    argv.extend(args.serve_flags);
    // The serve flags are parsed by serve's own definition, so both commands accept the same ones.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        serve: crate::server::ServeArgs,
    }
    let flags = <Flags as clap::Parser>::try_parse_from(argv).context("container: serve flags")?;
    let mut opts: crate::state::ServeOptions = flags.serve.into();
    opts.claim = env.claim;
    // A --plextv-url among the serve flags wins over the container env.
    opts.plextv_url = opts.plextv_url.or(env.plextv_url);
    crate::server::serve(opts)
}

/// Prepare the container as pms-docker does, drop to `PLEX_UID`/`PLEX_GID`, and return the
/// settings to serve with: data dir `/config`, listen on `0.0.0.0:32400`, claim from the env.
/// The caller (the `container` subcommand) then runs the server with them.
pub fn prepare() -> anyhow::Result<ContainerEnv> {
    let env = ContainerEnv::from_env(|k| std::env::var(k).ok())?;
    eprintln!(
        "container: PLEX_UID={} PLEX_GID={} TZ={} CHANGE_CONFIG_DIR_OWNERSHIP={} claim={} plex.tv={}",
        env.uid,
        env.gid,
        env.tz.as_deref().unwrap_or("(unset)"),
        env.change_config_dir_ownership,
        if env.claim.is_some() { "set" } else { "unset" },
        env.plextv_url.as_deref().unwrap_or("(no exchange)"),
    );
    let root = current_euid() == 0;
    if root {
        // As pms-docker's usermod/groupmod: `ps` and `ls -l` inside the container show `plex`.
        // Only inside a container (Docker creates /.dockerenv): never edit a host's /etc/passwd.
        if Path::new("/.dockerenv").exists()
            && let Err(e) = set_plex_ids(Path::new("/etc"), env.uid, env.gid)
        {
            eprintln!("container: could not rewrite the plex user in /etc/passwd: {e:#}");
        }
        for dir in [&env.config_dir, &env.transcode_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if env.change_config_dir_ownership {
            for dir in [&env.config_dir, &env.transcode_dir] {
                let changed = chown_tree(dir, env.uid, env.gid)?;
                eprintln!(
                    "container: chowned {changed} entries under {} to {}:{}",
                    dir.display(),
                    env.uid,
                    env.gid
                );
            }
        }
    }
    if root && env.uid != 0 {
        drop_privileges(env.uid, env.gid)?;
        eprintln!("container: running as uid {} gid {}", env.uid, env.gid);
    }
    create_layout(&env.data_folder())?;
    Ok(env)
}

/// The listen address inside the container.
pub fn listen_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], PORT))
}

/// `mkdir -p` the data folder and its standard folders. Called after dropping privileges, so
/// they belong to `plex` and an unwritable `/config` fails here as it would for real Plex.
pub fn create_layout(data_folder: &Path) -> anyhow::Result<()> {
    for sub in DATA_FOLDERS {
        let dir = data_folder.join(sub);
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "creating {} (is /config writable by PLEX_UID? CHANGE_CONFIG_DIR_OWNERSHIP=true fixes it)",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// `chown -R -h uid:gid dir`, touching only entries not already owned so (as pms-docker's `find
/// \! -user plex`), without following symlinks. Returns how many entries changed.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> anyhow::Result<u64> {
    let mut changed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        if md.uid() != uid || md.gid() != gid {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .with_context(|| format!("chown {}:{} {}", uid, gid, path.display()))?;
            changed += 1;
        }
        if md.is_dir() {
            for entry in
                std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))?
            {
                stack.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

/// Rewrite the `plex` entries of `etc/passwd` and `etc/group` to the given ids.
pub fn set_plex_ids(etc: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    let rewrite = |file: &str, fix: &dyn Fn(&mut Vec<String>)| -> anyhow::Result<()> {
        let path = etc.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let out: Vec<String> = text
            .lines()
            .map(|line| {
                let mut fields: Vec<String> = line.split(':').map(str::to_owned).collect();
                if fields.first().is_some_and(|n| n == "plex") {
                    fix(&mut fields);
                }
                fields.join(":")
            })
            .collect();
        std::fs::write(&path, out.join("\n") + "\n")
            .with_context(|| format!("writing {}", path.display()))
    };
    rewrite("passwd", &|f| {
        if f.len() >= 4 {
            f[2] = uid.to_string();
            f[3] = gid.to_string();
        }
    })?;
    rewrite("group", &|f| {
        if f.len() >= 3 {
            f[2] = gid.to_string();
        }
    })
}

#[allow(unsafe_code)]
fn current_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// setgroups/setgid/setuid, in that order (after setuid we could no longer change groups), then
/// check the switch really happened: continuing as root would hide unreadable mounts.
#[allow(unsafe_code)]
fn drop_privileges(uid: u32, gid: u32) -> anyhow::Result<()> {
    let groups = [gid as libc::gid_t];
    // SAFETY: plain syscalls; `groups` outlives the setgroups call that reads it.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            bail!(
                "setgroups([{gid}]) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::setgid(gid) != 0 {
            bail!("setgid({gid}) failed: {}", std::io::Error::last_os_error());
        }
        if libc::setuid(uid) != 0 {
            bail!("setuid({uid}) failed: {}", std::io::Error::last_os_error());
        }
        if libc::getuid() != uid || libc::geteuid() != uid || libc::getgid() != gid {
            bail!(
                "still running as uid {} gid {} after dropping to {uid}:{gid}",
                libc::geteuid(),
                libc::getgid()
            );
        }
    }
    Ok(())
}

/// The `healthcheck` subcommand: `GET /identity` on the local server, as pms-docker's
/// `curl --fail http://localhost:32400/identity`. Ok only on an HTTP 200.
pub fn healthcheck(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /identity HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut got = 0;
    // The status line is all we need; read until it is complete.
    while got < head.len() && !head[..got].contains(&b'\n') {
        let n = stream
            .read(&mut head[got..])
            .context("reading the response")?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let status = line.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => bail!("GET http://{addr}/identity answered {status:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_match_pms_docker() {
        let e = ContainerEnv::from_env(env(&[])).unwrap();
        assert_eq!((e.uid, e.gid), (1000, 1000));
        assert!(
            e.change_config_dir_ownership,
            "pms-docker's Dockerfile sets CHANGE_CONFIG_DIR_OWNERSHIP=true"
        );
        assert_eq!(e.claim, None);
        assert_eq!(e.plextv_url, None);
        assert_eq!(
            e.data_folder(),
            Path::new("/config/Library/Application Support/Plex Media Server")
        );
    }

    #[test]
    fn reads_ids_claim_and_ownership_switch() {
        let e = ContainerEnv::from_env(env(&[
            ("PLEX_UID", "1234"),
            ("PLEX_GID", "99"),
            ("PLEX_CLAIM", " claim-abc \n"),
            ("CHANGE_CONFIG_DIR_OWNERSHIP", "False"),
            ("TZ", "Europe/Paris"),
            ("PLEX_EMULATOR_PLEXTV_URL", " http://127.0.0.1:9/ "),
        ]))
        .unwrap();
        assert_eq!(e.plextv_url.as_deref(), Some("http://127.0.0.1:9/"));
        assert_eq!((e.uid, e.gid), (1234, 99));
        assert_eq!(e.claim.as_deref(), Some("claim-abc"));
        assert!(!e.change_config_dir_ownership);
        assert_eq!(e.tz.as_deref(), Some("Europe/Paris"));
    }

    #[test]
    fn claim_file_is_used_when_claim_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("claim");
        std::fs::write(&file, "claim-from-file\n").unwrap();
        let e = ContainerEnv::from_env(env(&[
            ("PLEX_CLAIM", ""),
            ("PLEX_CLAIM_FILE", file.to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(e.claim.as_deref(), Some("claim-from-file"));
    }

    #[test]
    fn non_numeric_uid_is_an_error_naming_the_variable() {
        let err = ContainerEnv::from_env(env(&[("PLEX_UID", "plex")])).unwrap_err();
        assert!(format!("{err:#}").contains("PLEX_UID"), "{err:#}");
    }

    #[test]
    fn plex_user_is_rewritten_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nplex:x:1000:1000:plex:/config:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("group"), "root:x:0:\nplex:x:1000:\n").unwrap();
        set_plex_ids(dir.path(), 4242, 4343).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("passwd")).unwrap(),
            "root:x:0:0:root:/root:/bin/sh\nplex:x:4242:4343:plex:/config:/bin/false\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("group")).unwrap(),
            "root:x:0:\nplex:x:4343:\n"
        );
    }

    #[test]
    fn layout_has_the_pms_docker_folders() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join(DATA_SUBDIR);
        create_layout(&data).unwrap();
        for sub in [
            "Plug-in Support/Databases",
            "Media/localhost",
            "Metadata",
            "Logs",
        ] {
            assert!(data.join(sub).is_dir(), "{sub} missing");
        }
    }

    #[test]
    fn healthcheck_fails_when_nothing_listens() {
        // Bind then drop to get a port nobody listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(healthcheck(addr, Duration::from_secs(1)).is_err());
    }
}

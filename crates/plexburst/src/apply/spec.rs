//! What `apply` is pointed at, parsed from its flags: the home data dir (`--to`) and how the
//! home Plex is stopped and started (`--service`). Pure parsing; a bad value is `BadInput`
//! naming the flag and the fix.

use crate::error::BadInput;
use crate::remote::quote;

/// Where the home data dir is: this machine, or a host reached over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    Local {
        path: String,
    },
    Ssh {
        user: String,
        host: String,
        port: u16,
        path: String,
    },
}

impl Home {
    /// The data dir on the home host (the folder holding `Library/`).
    pub fn path(&self) -> &str {
        match self {
            Home::Local { path } | Home::Ssh { path, .. } => path,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Home::Local { path } => format!("{path} (this machine)"),
            Home::Ssh {
                user,
                host,
                port,
                path,
            } => format!("{path} on ssh {user}@{host}:{port}"),
        }
    }
}

/// `--to PATH` or `--to ssh://user@host[:port]/PATH`. A local relative path is made absolute
/// against `cwd`.
pub fn parse_to(to: &str, cwd: &std::path::Path) -> Result<Home, BadInput> {
    let bad = |why: &str| {
        BadInput(format!(
            "--to {to:?}: {why}; give the home data dir (the folder holding `Library/`) as PATH or ssh://user@host[:port]/PATH"
        ))
    };
    if let Some(rest) = to.strip_prefix("ssh://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(bad("the ssh address has no /PATH")),
        };
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Err(bad("the path is `/`"));
        }
        let Some((user, hostport)) = authority.split_once('@') else {
            return Err(bad("the ssh address has no user (user@host)"));
        };
        if user.is_empty() {
            return Err(bad("the user is empty"));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    bad(&format!("the port {p:?} is not a number from 1 to 65535"))
                })?,
            ),
            None => (hostport, 22),
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        return Ok(Home::Ssh {
            user: user.to_string(),
            host: host.to_string(),
            port,
            path: path.to_string(),
        });
    }
    if to.contains("://") {
        return Err(bad("only ssh:// addresses are supported"));
    }
    if to.is_empty() {
        return Err(bad("it is empty"));
    }
    let p = std::path::Path::new(to);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    let path = abs.to_string_lossy().trim_end_matches('/').to_string();
    if path.is_empty() {
        return Err(bad("the path is `/`"));
    }
    Ok(Home::Local { path })
}

/// How the home Plex is stopped and started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    Systemd(String),
    Docker(String),
    /// A command run with `stop` or `start` appended (README "Bringing the result home").
    Command(String),
}

impl Service {
    pub fn stop_line(&self) -> String {
        self.line("stop")
    }
    pub fn start_line(&self) -> String {
        self.line("start")
    }
    fn line(&self, verb: &str) -> String {
        match self {
            Service::Systemd(n) => format!("systemctl {verb} {}", quote(n)),
            Service::Docker(n) => format!("docker {verb} {}", quote(n)),
            Service::Command(c) => format!("{c} {verb}"),
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Service::Systemd(n) => format!("systemd:{n}"),
            Service::Docker(n) => format!("docker:{n}"),
            Service::Command(c) => format!("command:{c}"),
        }
    }
}

/// `--service systemd:NAME | docker:NAME | command:'...'`.
pub fn parse_service(s: &str) -> Result<Service, BadInput> {
    let bad = |why: &str| {
        BadInput(format!(
            "--service {s:?}: {why}; use systemd:NAME, docker:NAME or command:'CMD' (run as `CMD stop` and `CMD start`)"
        ))
    };
    let Some((kind, value)) = s.split_once(':') else {
        return Err(bad("no kind"));
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(bad("the name or command is empty"));
    }
    let name_ok = |v: &str| {
        v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
    };
    match kind {
        "systemd" if name_ok(value) => Ok(Service::Systemd(value.into())),
        "docker" if name_ok(value) => Ok(Service::Docker(value.into())),
        "systemd" | "docker" => Err(bad(
            "the name holds characters a unit or container name cannot",
        )),
        "command" => Ok(Service::Command(value.into())),
        other => Err(bad(&format!("unknown kind {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_parses_local_and_ssh_and_names_what_is_wrong() {
        let cwd = std::path::Path::new("/work");
        assert_eq!(
            parse_to("plex/", cwd).unwrap(),
            Home::Local {
                path: "/work/plex".into()
            }
        );
        assert_eq!(
            parse_to("ssh://me@home.lan:2222/srv/plex/", cwd).unwrap(),
            Home::Ssh {
                user: "me".into(),
                host: "home.lan".into(),
                port: 2222,
                path: "/srv/plex".into()
            }
        );
        assert_eq!(
            parse_to("ssh://me@home.lan/srv/plex", cwd).unwrap().path(),
            "/srv/plex"
        );
        for (bad, why) in [
            ("ssh://home.lan/srv", "no user"),
            ("ssh://me@home.lan", "no /PATH"),
            ("ssh://me@home.lan:99999/srv", "not a number"),
            ("ssh://me@home.lan/", "the path is `/`"),
            ("ssh://me@:22/srv", "host is empty"),
            ("http://x/y", "only ssh://"),
            ("", "empty"),
        ] {
            let e = parse_to(bad, cwd).unwrap_err().0;
            assert!(e.contains(why) && e.contains("--to"), "{bad}: {e}");
        }
    }

    #[test]
    fn service_lines_append_the_verb() {
        let c = parse_service("command:/usr/local/bin/plexctl --quiet").unwrap();
        assert_eq!(c.stop_line(), "/usr/local/bin/plexctl --quiet stop");
        assert_eq!(
            parse_service("systemd:plexmediaserver")
                .unwrap()
                .start_line(),
            "systemctl start plexmediaserver"
        );
        assert_eq!(
            parse_service("docker:plex").unwrap().stop_line(),
            "docker stop plex"
        );
        for bad in ["plex", "systemd:", "docker:a b", "upstart:plex"] {
            let e = parse_service(bad).unwrap_err().0;
            assert!(e.contains("--service"), "{e}");
        }
    }
}

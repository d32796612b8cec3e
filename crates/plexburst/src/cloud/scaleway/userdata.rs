//! The cloud-init user data of a run's instance: a `#cloud-config` that authorizes the run's own
//! public key for root, writes `user_allow_other` into /etc/fuse.conf at boot (before any mount),
//! and runs `prepare-instance.sh` (packages, rclone, Docker and the Plex image when the runtime is
//! docker, the directories, the in-guest deadline). Nothing secret is in it: user data is readable
//! with any API key of the project (scaleway.md §2.6).

use std::time::Duration;

/// The provisioning script, with `@NAME@` placeholders (kept as a file so `shellcheck` reads it).
pub const PREPARE_SCRIPT: &str = include_str!("prepare-instance.sh");

/// The official rclone build the script installs when the image's rclone is older than 1.68.
pub const RCLONE_URL: &str = "https://downloads.rclone.org/rclone-current-linux-amd64.zip";

/// What the user data needs to know.
#[derive(Debug, Clone)]
pub struct UserData<'a> {
    /// `ssh-ed25519 AAAA… comment`: the run's public key.
    pub public_key: &'a str,
    /// `docker` or `command`.
    pub runtime: &'a str,
    /// The Plex image for a docker runtime (empty otherwise).
    pub image: &'a str,
    /// Directories to create.
    pub dirs: &'a [String],
    /// After this, the instance powers itself off (0: never).
    pub deadline: Duration,
}

fn quote_for_script(v: &str) -> String {
    // The placeholders sit inside single quotes in the script.
    v.replace('\'', "'\\''")
}

/// The script with its placeholders filled in.
pub fn script(u: &UserData) -> String {
    PREPARE_SCRIPT
        .replace("@RUNTIME@", &quote_for_script(u.runtime))
        .replace("@IMAGE@", &quote_for_script(u.image))
        .replace("@DIRS@", &quote_for_script(&u.dirs.join(" ")))
        .replace(
            "@DEADLINE_MINUTES@",
            &u.deadline.as_secs().div_ceil(60).to_string(),
        )
        .replace("@RCLONE_URL@", RCLONE_URL)
}

/// The `#cloud-config` document.
pub fn cloud_config(u: &UserData) -> String {
    let script = script(u);
    let indented: String = script
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("      {l}\n")
            }
        })
        .collect();
    format!(
        "#cloud-config\n\
         # Written by plexburst for one run; no secret in it.\n\
         disable_root: false\n\
         ssh_authorized_keys:\n  - {key}\n\
         bootcmd:\n  - [sh, -c, \"grep -qx user_allow_other /etc/fuse.conf 2>/dev/null || echo user_allow_other >> /etc/fuse.conf\"]\n\
         write_files:\n  - path: /usr/local/sbin/plexburst-prepare\n    permissions: '0755'\n    content: |\n{indented}\
         runcmd:\n  - [/usr/local/sbin/plexburst-prepare]\n",
        key = u.public_key.trim(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_snapshot() {
        let dirs = vec![
            "/var/lib/plexburst".to_string(),
            "/var/lib/plexburst/plex".to_string(),
        ];
        let u = UserData {
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample plexburst-run",
            runtime: "docker",
            image: "plexinc/pms-docker:latest",
            dirs: &dirs,
            deadline: Duration::from_secs(96 * 3600),
        };
        let got = cloud_config(&u);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/it/snapshots/user-data.yaml");
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            got,
            want,
            "user data changed; review it and refresh {}",
            path.display()
        );
        assert!(got.contains("PB_DEADLINE_MINUTES='5760'"));
        assert!(!got.contains('@'), "a placeholder was left: {got}");
        // A valid YAML document whose script is the filled-in script, byte for byte.
        let v: serde_yaml::Value = serde_yaml::from_str(&got).unwrap();
        assert_eq!(v["write_files"][0]["content"].as_str().unwrap(), script(&u));
        assert_eq!(v["ssh_authorized_keys"][0].as_str().unwrap(), u.public_key);
    }
}

//! Booting stand-ins from the user data plexburst sends: root logs in with the user data's key
//! while cloud-init still runs, `cloud-init status --wait` ends `done`, the cloud-config and
//! shell-script parts took effect, and rclone mounts FUSE inside.

use crate::harness::{Instance, Server};

/// Holds cloud-init's final stage (runcmd runs in it) until the test creates /run/pb-release, so
/// the test can see cloud-init still running; bounded at 120 s so a failed test cannot hang it.
const HOLD_FINAL: &str =
    "i=0; while [ ! -e /run/pb-release ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done";

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("host hostname")
        .trim()
        .to_owned()
}

/// The cloud-init result every boot must end with: done, from the NoCloud seed, and no stage
/// reported an error or logged a warning.
fn assert_cloud_init_done(instance: &Instance) {
    let status = instance.ssh_ok("timeout 120 cloud-init status --wait --long");
    assert!(
        status.contains("status: done"),
        "cloud-init status: {status}"
    );
    assert!(
        status.contains("DataSourceNoCloud [seed=/var/lib/cloud/seed/nocloud]"),
        "datasource: {status}"
    );
    let errors = instance.ssh_ok(
        "python3 -c 'import json; print(json.load(open(\"/run/cloud-init/result.json\"))[\"v1\"][\"errors\"])'",
    );
    assert_eq!(errors.trim(), "[]", "cloud-init errors");
    let warnings = instance.ssh_ok("grep WARNING /var/log/cloud-init.log || true");
    assert!(warnings.is_empty(), "cloud-init warnings:\n{warnings}");
    let output = instance.ssh_ok("cat /var/log/cloud-init-output.log");
    assert!(
        output.contains("Cloud-init v. 22.4.2 finished"),
        "cloud-init-output.log:\n{output}"
    );
}

#[test]
fn cloud_config_instance_takes_ssh_before_cloud_init_is_done_and_mounts_fuse() {
    let server = Server::new();
    server.set_user_data(
        "cloud-init",
        &format!(
            r#"#cloud-config
ssh_authorized_keys:
  - {key}
write_files:
  - path: /etc/plexburst/standin.txt
    permissions: '0640'
    content: |
      written by write_files
runcmd:
  - [sh, -c, 'echo "$(id -un) $(hostname)" > /root/runcmd.out']
  - [sh, -c, '{HOLD_FINAL}']
"#,
            key = server.public_key
        ),
    );
    // The plex-emulator the hook binds: a script here, since this crate does not build the
    // emulator; the bind is what is under test.
    let emulator = server.dir.path().join("plex-emulator");
    std::fs::write(&emulator, "#!/bin/sh\necho \"plex-emulator stand-in $*\"\n").unwrap();
    std::fs::set_permissions(
        &emulator,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let hostname = server.hostname();
    let host_hostname_before = host_hostname();

    let emulator = emulator.to_str().expect("UTF-8 temp path");
    let instance = server.boot(&[("PB_INSTANCE_BIND_EMULATOR", emulator)]);

    // The hook returned as soon as sshd answered: the first login works (cloud-init's init stage
    // put the key in root's authorized_keys before sshd started), and cloud-init is not done yet.
    let early = instance.ssh_ok("cloud-init status");
    assert!(
        early.contains("status: running"),
        "status at first login: {early}"
    );
    instance.ssh_ok("touch /run/pb-release");
    assert_cloud_init_done(&instance);

    // write_files and runcmd, as root, under the hostname from the meta-data.
    assert_eq!(
        instance.ssh_ok("cat /etc/plexburst/standin.txt; stat -c %a /etc/plexburst/standin.txt"),
        "written by write_files\n640\n"
    );
    assert_eq!(
        instance.ssh_ok("cat /root/runcmd.out"),
        format!("root {hostname}\n")
    );
    assert_eq!(instance.ssh_ok("hostname"), format!("{hostname}\n"));
    // The container has its own UTS namespace: naming the instance did not rename this machine.
    assert_eq!(host_hostname(), host_hostname_before);

    // The tools plexburst runs on an instance.
    let tools = instance.ssh_ok(
        "for t in rclone sqlite3 tar zstd findmnt fusermount3 setsid curl sudo; do \
         command -v $t || echo \"missing $t\"; done",
    );
    assert!(!tools.contains("missing"), "{tools}");
    assert_eq!(instance.ssh_ok("sqlite3 :memory: 'select 6*7'"), "42\n");
    assert_eq!(
        instance.ssh_ok("tar -C /etc/plexburst -cf - . | zstd -q | zstd -dqc | tar -tf - | sort"),
        "./\n./standin.txt\n"
    );
    assert_eq!(
        instance.ssh_ok("plex-emulator --version; touch /usr/local/bin/plex-emulator 2>/dev/null || echo read-only"),
        "plex-emulator stand-in --version\nread-only\n"
    );

    // FUSE: rclone mounts a local folder with --allow-other (which needs user_allow_other in
    // /etc/fuse.conf), another user reads through it, fusermount3 unmounts it.
    let fuse = instance.ssh_ok(
        "set -e
         grep -qx user_allow_other /etc/fuse.conf || echo user_allow_other >>/etc/fuse.conf
         grep -x user_allow_other /etc/fuse.conf
         mkdir -p /srv/media /mnt/media
         echo 'a track' >/srv/media/track.flac
         rclone mount /srv/media /mnt/media --allow-other --daemon 2>/dev/null
         findmnt -n -o FSTYPE /mnt/media
         sudo -u debian cat /mnt/media/track.flac
         fusermount3 -u /mnt/media
         findmnt /mnt/media >/dev/null || echo unmounted",
    );
    assert_eq!(
        fuse, "user_allow_other\nfuse.rclone\na track\nunmounted\n",
        "FUSE inside the instance"
    );

    instance.halt();
}

#[test]
fn multipart_mime_user_data_runs_its_cloud_config_and_its_shell_script() {
    let server = Server::new();
    // What Python's email.mime (and `cloud-init devel make-mime`) produce.
    let boundary = "===============plexburst-standin==";
    server.set_user_data(
        "cloud-init",
        &format!(
            r#"Content-Type: multipart/mixed; boundary="{boundary}"
MIME-Version: 1.0

--{boundary}
Content-Type: text/cloud-config; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename="cloud-config.yaml"

#cloud-config
ssh_authorized_keys:
  - {key}
write_files:
  - path: /etc/plexburst/from-cloud-config
    content: cloud-config part

--{boundary}
Content-Type: text/x-shellscript; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename="prepare.sh"

#!/bin/sh
set -e
echo "$(cat /etc/plexburst/from-cloud-config)" >/root/from-shell-script
echo "shell-script part as $(id -un)" >>/root/from-shell-script

--{boundary}--
"#,
            key = server.public_key
        ),
    );

    let instance = server.boot(&[]);
    assert_cloud_init_done(&instance);
    assert_eq!(
        instance.ssh_ok("cat /root/from-shell-script"),
        "cloud-config part\nshell-script part as root\n"
    );

    instance.halt();
}

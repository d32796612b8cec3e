//! The rclone storage kind against a real S3 server (`rclone serve s3` on loopback) and a real
//! FUSE mount on this machine: mount, probe, kill and recover, a mount that lists but cannot
//! read, warm-before-analysis, config privacy and the streamed export.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexburst::config::{RcloneConfig, StorageConfig};
use plexburst::plan::storage::resolve;
use plexburst::remote::local::Local;
use plexburst::remote::{Cmd, Remote};
use plexburst::storage::rclone::{Rclone, UploadSpec, upload_stream};
use plexburst::storage::{Health, Storage, StorageSpec};

use crate::harness::{
    Lab, LabOpts, MOVIES, PHOTOS, StrayWriter, TRACKS, command, emulator_bin, free_port,
    pids_with_cmdline, run, text, wait_for,
};

/// `rclone serve s3` on 127.0.0.1 over a temp directory whose top-level directories are buckets,
/// with a generated key pair. Killed on drop.
pub struct S3Server {
    /// The served directory: each subdirectory is a bucket.
    pub root: PathBuf,
    _owned: Option<tempfile::TempDir>,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    child: Child,
}

impl S3Server {
    /// Start a server with one bucket `media` holding a small library (see `write_library`).
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        write_library(&root.path().join("media"));
        std::fs::create_dir_all(root.path().join("exports")).unwrap();
        let mut s = S3Server::over(root.path());
        s._owned = Some(root);
        s
    }

    /// Serve an existing directory: each of its subdirectories is a bucket.
    pub fn over(root: &Path) -> S3Server {
        S3Server::over_with_secret(root, &format!("SK{}", uuid::Uuid::new_v4().simple()))
    }

    /// As `over`, with this secret key.
    pub fn over_with_secret(root: &Path, secret_key: &str) -> S3Server {
        let access_key = format!("AK{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let secret_key = secret_key.to_string();
        let port = free_port();
        let child = spawn_serve(root, port, &access_key, &secret_key);
        let server = S3Server {
            root: root.to_path_buf(),
            _owned: None,
            port,
            access_key,
            secret_key,
            child,
        };
        wait_for("rclone serve s3 to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An rclone.conf section for this server under `name`, as a user would have it.
    pub fn user_conf(&self, name: &str) -> String {
        format!(
            "[{name}]\ntype = s3\nprovider = Other\nenv_auth = false\naccess_key_id = {}\nsecret_access_key = {}\nendpoint = {}\n",
            self.access_key,
            self.secret_key,
            self.endpoint()
        )
    }

    /// The directory backing `bucket`.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// Kill the server: the bucket is unreachable (connections refused) until `restart`.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Serve again on the same port with the same keys, as a bucket that comes back.
    pub fn restart(&mut self) {
        self.child = spawn_serve(&self.root, self.port, &self.access_key, &self.secret_key);
        let port = self.port;
        wait_for(
            "rclone serve s3 to listen again",
            Duration::from_secs(30),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Test code spawns the S3 server itself: it is the fixture, not a product process.
#[allow(clippy::disallowed_methods)]
fn spawn_serve(dir: &Path, port: u16, ak: &str, sk: &str) -> Child {
    std::process::Command::new("rclone")
        .args([
            "serve",
            "s3",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--config",
            "/dev/null",
        ])
        .arg(dir)
        // The key pair travels in the environment (rclone reads any flag as RCLONE_<FLAG>; a list
        // flag is CSV there, so the pair is quoted to stay one entry).
        .env("RCLONE_AUTH_KEY", format!("\"{ak},{sk}\""))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rclone is installed")
}

/// A small library: Movies/<name>/<name>.mkv and Music/<artist>/<album>/<track>.flac, each file
/// with distinct content so a read is checkable.
pub fn write_library(dir: &Path) {
    for m in ["Alien (1979)", "Heat (1995)", "Ran (1985)"] {
        let d = dir.join("Movies").join(m);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{m}.mkv")), content(m, 100_000)).unwrap();
    }
    for (artist, album) in [("Nina Simone", "Pastel Blues"), ("Can", "Tago Mago")] {
        let d = dir.join("Music").join(artist).join(album);
        std::fs::create_dir_all(&d).unwrap();
        for t in 1..=4 {
            let name = format!("{t:02} Track.flac");
            std::fs::write(
                d.join(&name),
                content(&format!("{artist}{album}{t}"), 70_000),
            )
            .unwrap();
        }
    }
}

fn content(seed: &str, len: usize) -> Vec<u8> {
    seed.bytes()
        .cycle()
        .take(len)
        .enumerate()
        .map(|(i, b)| b.wrapping_add(i as u8))
        .collect()
}

/// A mounted storage on this machine that unmounts itself (and the parent bind) on drop.
pub struct Mounted {
    pub spec: StorageSpec,
    pub storage: Storage,
    pub tmp: tempfile::TempDir,
}

impl Mounted {
    pub fn rclone(&self) -> &Rclone {
        match &self.storage {
            Storage::Rclone(rc) => rc,
            Storage::Path { .. } => unreachable!(),
        }
    }
    pub fn mount_point(&self) -> String {
        self.storage.media_root().to_string()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.storage.unmount(&Local::new());
        let parent = self.tmp.path().join("mnt");
        let _ = Local::new().exec(&Cmd::new(format!(
            "umount -l '{}' 2>/dev/null; true",
            parent.display()
        )));
    }
}

/// An rclone storage config for `s3` written as a user would (remote name in their rclone.conf).
pub fn rclone_storage(s3: &S3Server, extra_toml: &str) -> Mounted {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("user-rclone.conf");
    std::fs::write(&conf, s3.user_conf("s3lib")).unwrap();
    let toml = format!(
        "kind = \"rclone\"\nremote = \"s3lib\"\nrclone_conf = \"{}\"\nbucket = \"media\"\nmount_point = \"{}\"\nrc_port = {}\n{extra_toml}",
        conf.display(),
        tmp.path().join("mnt/media").display(),
        free_port()
    );
    let cfg: StorageConfig = toml::from_str(&toml).unwrap();
    assert_eq!(cfg.validate(), vec![]);
    let spec = resolve(&cfg, "lite", &tmp.path().join("work").display().to_string());
    let storage = Storage::from_plan(&spec);
    Mounted { spec, storage, tmp }
}

fn prepared_and_mounted(s3: &S3Server, extra_toml: &str) -> Mounted {
    let m = rclone_storage(s3, extra_toml);
    let r = Local::new();
    m.storage.prepare(&r).unwrap();
    m.storage.mount(&r).unwrap();
    m
}

fn rclone_pid(m: &Mounted) -> u32 {
    let pid =
        std::fs::read_to_string(format!("{}/rclone/mount.pid", m.rclone().work_dir())).unwrap();
    pid.trim().parse().unwrap()
}

/// Captures every tracing event of the current thread, to prove secrets never reach a log.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn mount_reads_through_fuse_and_keeps_the_secret_private() {
    let s3 = S3Server::start();
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let m = tracing::subscriber::with_default(subscriber, || {
        prepared_and_mounted(&s3, "mtime = \"server\"")
    });
    let r = Local::new();

    // The bytes Plex would read through FUSE are the bucket's bytes.
    let rel = "Movies/Heat (1995)/Heat (1995).mkv";
    let through_mount = std::fs::read(format!("{}/{rel}", m.mount_point())).unwrap();
    assert_eq!(
        through_mount,
        std::fs::read(s3.bucket_dir("media").join(rel)).unwrap()
    );
    assert_eq!(m.storage.health(&r).unwrap(), Health::Healthy);

    // The pushed config is 0600, holds only the needed remote, and the secret is nowhere else.
    let conf = m.rclone().conf_path();
    let mode = std::fs::metadata(&conf).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let captured = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        captured.contains("rclone"),
        "the remote layer logged the commands: {captured}"
    );
    assert!(
        !captured.contains(&s3.secret_key),
        "secret leaked into the logs"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", rclone_pid(&m))).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("--read-only") && cmdline.contains("--allow-other"),
        "{cmdline}"
    );
    assert!(
        !cmdline.contains(&s3.secret_key),
        "secret on the rclone command line"
    );
    let rclone_log = std::fs::read_to_string(m.rclone().log_path()).unwrap();
    assert!(
        !rclone_log.contains(&s3.secret_key),
        "secret in rclone's log"
    );

    // The prewarm runs through the rc port and the mount keeps serving.
    m.storage.prewarm(&r).unwrap();
    assert_eq!(m.storage.health(&r).unwrap(), Health::Healthy);
}

#[test]
fn killed_mount_is_degraded_then_recovered() {
    let s3 = S3Server::start();
    let m = prepared_and_mounted(&s3, "");
    let r = Local::new();
    let pid = rclone_pid(&m);
    r.run(&Cmd::new(format!("kill -9 {pid}"))).unwrap();
    wait_for("rclone to die", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });

    // What Plex would see: the dead FUSE endpoint.
    let err = std::fs::read_dir(m.mount_point()).map(|_| ()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let Health::Degraded(why) = m.storage.health(&r).unwrap() else {
        panic!("a dead mount must be degraded")
    };
    assert!(
        why.contains("gone") || why.contains("not connected"),
        "{why}"
    );

    m.storage.recover(&r).unwrap();
    assert_eq!(m.storage.health(&r).unwrap(), Health::Healthy);
    assert_ne!(rclone_pid(&m), pid, "a new rclone process serves the mount");
    let n = std::fs::read_dir(format!("{}/Music/Can/Tago Mago", m.mount_point()))
        .unwrap()
        .count();
    assert_eq!(n, 4);

    // Unmount leaves nothing mounted: neither the bucket nor the shared bind of its parent.
    m.storage.unmount(&r).unwrap();
    let parent = m.tmp.path().join("mnt");
    for p in [Path::new(&m.mount_point()), parent.as_path()] {
        let out = r
            .exec(&Cmd::new(format!("findmnt -M '{}'", p.display())))
            .unwrap();
        assert_ne!(out.status, 0, "{} is still a mount point", p.display());
    }
}

#[test]
fn directory_that_lists_but_cannot_be_read_is_degraded() {
    let s3 = S3Server::start();
    let m = prepared_and_mounted(&s3, "");
    let r = Local::new();
    m.storage.prewarm(&r).unwrap();
    assert_eq!(m.storage.health(&r).unwrap(), Health::Healthy);

    // The bucket stops serving Music's objects; the cached listing (long --dir-cache-time) still
    // shows them, exactly the mount that once let a scan trash a library.
    std::fs::remove_dir_all(s3.bucket_dir("media").join("Music")).unwrap();
    let listed = std::fs::read_dir(format!("{}/Music/Can/Tago Mago", m.mount_point()))
        .unwrap()
        .count();
    assert_eq!(listed, 4, "the directory still lists");

    let Health::Degraded(why) = m.storage.health(&r).unwrap() else {
        panic!("a mount whose files do not read must be degraded")
    };
    assert!(
        why.contains("Music"),
        "the reason names the unreadable file: {why}"
    );
}

#[test]
fn warm_files_reports_missing_files_apart_from_read_files() {
    let s3 = S3Server::start();
    let m = prepared_and_mounted(&s3, "");
    let r = Local::new();
    let mp = m.mount_point();
    let mut files: Vec<String> = (1..=4)
        .map(|t| format!("{mp}/Music/Nina Simone/Pastel Blues/{t:02} Track.flac"))
        .collect();
    let gone = vec![
        format!("{mp}/Music/Nina Simone/Pastel Blues/05 Not In Bucket.flac"),
        format!("{mp}/Music/Gone Artist/Gone Album/01 Track.flac"),
    ];
    files.extend(gone.iter().cloned());
    let rep = m.storage.warm_files(&r, &files).unwrap();
    assert_eq!(rep.ok, 4);
    let mut missing = rep.missing.clone();
    missing.sort();
    let mut want = gone.clone();
    want.sort();
    assert_eq!(missing, want);
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
}

/// An S3 server, a prepared rclone storage over it (not mounted) and a data folder holding a small
/// library at `<src>/Library`: what the upload tests archive.
fn upload_lab() -> (S3Server, Mounted, PathBuf) {
    let s3 = S3Server::start();
    let m = rclone_storage(&s3, "");
    m.storage.prepare(&Local::new()).unwrap();
    let src = m.tmp.path().join("data");
    write_library(&src.join("Library"));
    (s3, m, src)
}

/// The spec the export streams `src` with: the entry list `plan::list_command` writes (Plex's
/// Cache, Logs... left out), archived as it stands, to `object`.
fn export_spec(r: &Local, m: &Mounted, src: &Path, object: &str) -> UploadSpec {
    let src = src.display().to_string();
    let list = m.tmp.path().join("export.files").display().to_string();
    let snapshot = m.tmp.path().join("export.before").display().to_string();
    r.run(&Cmd::new(plexburst::archive::list_command(
        &src, &list, &snapshot,
    )))
    .unwrap();
    UploadSpec {
        src_dir: src,
        list,
        object: object.into(),
        zstd_level: 3,
    }
}

#[test]
fn upload_stream_lands_in_the_bucket_and_verifies() {
    let (s3, m, src) = upload_lab();
    let r = Local::new();
    let cache = src.join("Library/Application Support/Plex Media Server/Cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("skip.me"), b"cache").unwrap();
    let object = "exports/run-1.tar.zst";
    let spec = export_spec(&r, &m, &src, object);
    let rep = upload_stream(m.rclone(), &r, &spec).unwrap();
    assert!(!rep.checksum_verified, "not read back: size check only");
    assert_eq!(rep.sha256, None);
    let landed = s3.root.join(object);
    let bytes = std::fs::read(&landed).unwrap();
    assert_eq!(bytes.len() as u64, rep.bytes);

    // The read back the export does: the object's sha256 and every listed entry.
    let (sum, entries) = m.rclone().read_back_archive(&r, &rep.object).unwrap();
    let sha = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes));
    assert_eq!(sum, hex::encode(sha));
    let listed = std::fs::read(&spec.list).unwrap();
    assert_eq!(
        entries,
        listed.iter().filter(|b| **b == 0).count() as u64,
        "one tar entry per listed entry"
    );
    let listing = r
        .run(&Cmd::new(format!(
            "zstd -dc '{}' | tar -tf -",
            landed.display()
        )))
        .unwrap()
        .stdout_str();
    assert!(
        listing.contains("Library/Movies/Ran (1985)/Ran (1985).mkv"),
        "{listing}"
    );
    assert!(
        !listing.contains("skip.me"),
        "excluded files stay out: {listing}"
    );
}

/// The stream carries no hash tap, so the read back is what catches a byte changed between zstd
/// and the bucket: zstd's frame checksum (or its block decoder) refuses the object.
#[test]
fn read_back_refuses_a_streamed_archive_changed_in_the_bucket() {
    let (s3, m, src) = upload_lab();
    let r = Local::new();
    let spec = export_spec(&r, &m, &src, "exports/flip.tar.zst");
    let rep = upload_stream(m.rclone(), &r, &spec).unwrap();
    let (sum, entries) = m.rclone().read_back_archive(&r, &rep.object).unwrap();
    assert_eq!(sum.len(), 64);
    assert!(entries > 5, "{entries}");
    let landed = s3.root.join("exports/flip.tar.zst");
    let mut bytes = std::fs::read(&landed).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&landed, &bytes).unwrap();
    let err = format!(
        "{:#}",
        m.rclone().read_back_archive(&r, &rep.object).unwrap_err()
    );
    assert!(err.contains("failed stages: zstd"), "{err}");
}

#[test]
fn path_storage_mounts_a_readable_dir_and_degrades_when_it_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    write_library(&lib);
    let storage = Storage::from_plan(&resolve(
        &StorageConfig::Path {
            path: lib.display().to_string(),
        },
        "lite",
        "/tmp",
    ));
    let r = Local::new();
    storage.mount(&r).unwrap();
    assert_eq!(storage.health(&r).unwrap(), Health::Healthy);
    std::fs::remove_dir_all(&lib).unwrap();
    assert!(matches!(storage.health(&r).unwrap(), Health::Degraded(_)));
    assert!(storage.mount(&r).is_err());
}

#[test]
fn endpoint_config_is_pushed_without_the_secret_on_any_command_line() {
    let s3 = S3Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg: RcloneConfig = toml::from_str(&format!(
        "endpoint = \"{}\"\naccess_key_id = \"{}\"\nbucket = \"media\"\nmount_point = \"{}\"",
        s3.endpoint(),
        s3.access_key,
        tmp.path().join("mnt/media").display()
    ))
    .unwrap();
    let StorageSpec::Rclone(spec) = resolve(
        &StorageConfig::Rclone(cfg),
        "standard",
        &tmp.path().join("work").display().to_string(),
    ) else {
        panic!("not an rclone spec");
    };
    let rc = Rclone::with_secret(&spec, Some(s3.secret_key.clone()));
    rc.prepare(&Local::new()).unwrap();
    let conf = std::fs::read_to_string(rc.conf_path()).unwrap();
    assert!(conf.starts_with("[plexburst]\ntype = s3\n"), "{conf}");
    assert!(conf.contains(&format!("secret_access_key = {}", s3.secret_key)));
    let mode = std::fs::metadata(rc.conf_path()).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

/// A local image with only a static busybox, kept alive by `sleep` (no registry needed).
fn busybox_sleeper_image() -> String {
    let tag = "plexburst-test/busybox-sleep:dev".to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("busybox"))
        .expect("/bin/busybox (apt-get install -y busybox-static)");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\nCMD [\"sleep\", \"3600\"]\n",
    )
    .unwrap();
    Local::new()
        .run(
            &Cmd::new(format!(
                "docker build -q -t {tag} '{}'",
                dir.path().display()
            ))
            .timeout(Duration::from_secs(300)),
        )
        .expect("docker build (is dockerd running?)");
    tag
}

/// Removes the container on drop, even when an assertion fails.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Local::new().exec(&Cmd::new(format!(
            "docker rm -f {} >/dev/null 2>&1",
            self.0
        )));
    }
}

#[test]
fn running_container_reads_the_new_mount_after_a_remount() {
    let s3 = S3Server::start();
    let m = prepared_and_mounted(&s3, "");
    let r = Local::new();
    let image = busybox_sleeper_image();
    let name = format!("pb-storage-{}", uuid::Uuid::new_v4().simple());
    let vols: Vec<String> = m
        .spec
        .container_volumes()
        .iter()
        .map(|v| format!("-v '{}:{}:{}'", v.host, v.container, v.options))
        .collect();
    r.run(&Cmd::new(format!(
        "docker run -d --name {name} {} {image}",
        vols.join(" ")
    )))
    .unwrap();
    let _guard = Container(name.clone());
    let rel = "Music/Can/Tago Mago/03 Track.flac";
    let want = std::fs::read(s3.bucket_dir("media").join(rel)).unwrap();
    let in_container = |r: &Local| {
        r.exec(&Cmd::new(format!(
            "docker exec {name} /bin/busybox cat '{}/{rel}'",
            m.mount_point()
        )))
        .unwrap()
    };
    let before = in_container(&r);
    assert_eq!(
        before.status,
        0,
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    assert_eq!(before.stdout, want);

    // rclone dies: the container sees the dead endpoint, as Plex would.
    let pid = rclone_pid(&m);
    r.run(&Cmd::new(format!("kill -9 {pid}"))).unwrap();
    wait_for("rclone to die", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let dead = in_container(&r);
    assert_ne!(dead.status, 0, "a read through a dead mount cannot succeed");
    assert!(matches!(m.storage.health(&r).unwrap(), Health::Degraded(_)));

    // The remount propagates into the running container through the rslave bind of the parent:
    // no container restart, no stale "Transport endpoint is not connected".
    m.storage.recover(&r).unwrap();
    let after = in_container(&r);
    assert_eq!(
        after.status,
        0,
        "container still sees a dead mount: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert_eq!(after.stdout, want);
}

// ---- End-to-end: the real binary with storage.kind = "rclone" ----------------------------------

const ITEMS: &str =
    "SELECT count(*) FROM metadata_items WHERE metadata_type IN (1, 10, 13) AND deleted_at IS NULL";
const DELETED: &str = "SELECT count(*) FROM metadata_items WHERE deleted_at IS NOT NULL";

/// A harness `Lab` whose generated library is served by `rclone serve s3` (bucket `media`) and
/// mounted by plexburst itself: the config's `[storage]` becomes `kind = "rclone"` and the sections
/// point under the mount point. Unmounts whatever is left on drop.
pub struct RcloneLab {
    pub mount_point: String,
    /// Serves the lab's directory for the lab's lifetime.
    pub s3: S3Server,
    pub lab: Lab,
}

impl RcloneLab {
    pub fn new(opts: LabOpts, extra_storage_toml: &str) -> RcloneLab {
        let lab = Lab::new(opts);
        std::fs::create_dir_all(lab.path("exports")).unwrap();
        let s3 = S3Server::over(lab.dir.path());
        let conf = lab.path("user-rclone.conf");
        std::fs::write(&conf, s3.user_conf("s3lib")).unwrap();
        let storage = format!(
            "remote = \"s3lib\"\nrclone_conf = \"{}\"\n{extra_storage_toml}",
            conf.display()
        );
        RcloneLab::with_storage(lab, s3, &storage)
    }

    /// As `new`, but the storage is given by endpoint and key id, and the S3 secret (`secret`)
    /// reaches plexburst only through the environment variable `secret_env`: no file on this
    /// machine holds it, so one found in a file was written by the run.
    pub fn with_endpoint(
        opts: LabOpts,
        extra_storage_toml: &str,
        secret_env: &str,
        secret: &str,
    ) -> RcloneLab {
        let lab = Lab::new(opts);
        std::fs::create_dir_all(lab.path("exports")).unwrap();
        let s3 = S3Server::over_with_secret(lab.dir.path(), secret);
        let storage = format!(
            "endpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key_env = \"{secret_env}\"\n{extra_storage_toml}",
            s3.endpoint(),
            s3.access_key
        );
        RcloneLab::with_storage(lab, s3, &storage)
    }

    /// The lab's config with its `[storage]` replaced by an rclone one (`remote` lines given)
    /// mounting bucket `media`, and the sections pointed under the mount point.
    fn with_storage(lab: Lab, s3: S3Server, remote_toml: &str) -> RcloneLab {
        let media = lab.path("media").display().to_string();
        let mount_point = lab.path("mnt/media").display().to_string();
        let toml = std::fs::read_to_string(lab.config_path()).unwrap();
        let old = format!("[storage]\nkind = \"path\"\npath = \"{media}\"\n");
        assert!(
            toml.contains(&old),
            "the harness config changed shape:\n{toml}"
        );
        let new = format!(
            "[storage]\nkind = \"rclone\"\nbucket = \"media\"\nmount_point = \"{mount_point}\"\nrc_port = {}\n{remote_toml}\n",
            free_port()
        );
        let toml = toml
            .replace(&old, &new)
            .replace(&format!("\"{media}/"), &format!("\"{mount_point}/"));
        std::fs::write(lab.config_path(), toml).unwrap();
        RcloneLab {
            mount_point,
            s3,
            lab,
        }
    }

    /// The S3 access and secret key the lab's bucket answers to.
    pub fn s3_keys(&self) -> (String, String) {
        (self.s3.access_key.clone(), self.s3.secret_key.clone())
    }

    /// Pids of `rclone mount` processes serving this lab's mount point.
    pub fn mount_pids(&self) -> Vec<i32> {
        pids_with_cmdline(&self.mount_point)
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c).into_owned();
                        let mut args = c.split('\0');
                        args.next().is_some_and(|a| a.ends_with("rclone"))
                            && args.next() == Some("mount")
                    })
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for RcloneLab {
    fn drop(&mut self) {
        for p in self.mount_pids() {
            let _ = Local::new().exec(&Cmd::new(format!("kill -9 {p}")));
        }
        let parent = self.lab.path("mnt");
        let _ = Local::new().exec(&Cmd::new(format!(
            "fusermount3 -uz '{}' 2>/dev/null; umount -l '{}' 2>/dev/null; true",
            self.mount_point,
            parent.display()
        )));
    }
}

fn assert_counts_match(rl: &RcloneLab, out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    rl.lab.assert_plan_is_what_ran();
    let lab = &rl.lab;
    assert_eq!(lab.count(TRACKS), lab.counts.tracks, "tracks in the DB");
    assert_eq!(lab.count(MOVIES), lab.counts.movies, "movies in the DB");
    assert_eq!(lab.count(PHOTOS), lab.counts.photos, "photos in the DB");
    assert_eq!(lab.count(DELETED), 0, "nothing was ever marked deleted");
    let paths = lab.sql("SELECT file FROM media_parts LIMIT 1");
    assert!(
        paths.starts_with(&rl.mount_point),
        "Plex read the library through the mount: {paths}"
    );
    assert!(rl.mount_pids().is_empty(), "the run unmounted rclone");
}

/// The verified archive and its manifest are in the bucket. Staged (`export.staged = true`): the
/// local archive was copied byte for byte. Streamed (the default): nothing was staged on the
/// target, and the object has the size, sha256 and entries the state records.
fn assert_archive_in_bucket(rl: &RcloneLab, staged: bool) {
    let state = rl.lab.state();
    let x = &state["export"];
    let archive = x["archive"]
        .as_str()
        .expect("export in the state")
        .to_string();
    let name = archive.rsplit('/').next().unwrap();
    let object = rl.lab.path("exports/plexburst").join(name);
    let landed = std::fs::read(&object)
        .unwrap_or_else(|e| panic!("{} not in the bucket: {e}", object.display()));
    let local_archives: Vec<_> = std::fs::read_dir(rl.lab.path("export"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    if staged {
        assert_eq!(
            landed,
            std::fs::read(&archive).unwrap(),
            "the bucket holds the same archive"
        );
    } else {
        assert!(
            archive.starts_with("s3lib:exports/plexburst/"),
            "the state names the object: {archive}"
        );
        assert!(
            local_archives.is_empty(),
            "a streamed export stages nothing on the target: {local_archives:?}"
        );
        assert_eq!(landed.len() as u64, x["bytes"].as_u64().unwrap());
        let sha = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&landed));
        assert_eq!(hex::encode(sha), x["sha256"].as_str().unwrap());
        let listing = Local::new()
            .run(&Cmd::new(format!(
                "zstd -dc '{}' | tar -tf -",
                object.display()
            )))
            .unwrap()
            .stdout_str();
        assert_eq!(
            listing.lines().count() as u64,
            x["files"].as_u64().unwrap(),
            "entries in the object"
        );
        assert!(
            listing.contains("Plug-in Support/Databases/com.plexapp.plugins.library.db"),
            "{listing}"
        );
        assert!(!listing.contains("Plex Media Server/Cache/"), "{listing}");
    }
    let manifest = x["manifest"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let manifest = rl.lab.path("exports/plexburst").join(manifest);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest).unwrap_or_else(|e| panic!("manifest not uploaded: {e}")),
    )
    .unwrap();
    assert_eq!(m["sha256"], x["sha256"], "{m}");
    assert_eq!(m["entries"], x["files"], "{m}");
}

/// A distinctive claim token for the secrets audit (the emulator claims itself with any).
const PLANTED_CLAIM: &str = "claim-Planted-Lc4Rt8Yq2";

/// Looks at this machine, the local target, until finished: every command line, the listening
/// sockets and the mode of the lab's pushed rclone config. Also returns the ports of the lab's
/// Plex and rclone rc, and the plan output they come from.
fn local_sampler(rl: &RcloneLab) -> (crate::audit::Sampler, [u16; 2], std::process::Output) {
    let printed = rl.lab.plexburst(&["plan", "--offline", "--json"]);
    assert!(printed.status.success(), "{}", text(&printed));
    let plan: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    let conf = plan["storage"]["conf_path"].as_str().unwrap().to_string();
    let rc = plan["storage"]["rc_port"].as_u64().unwrap() as u16;
    let probe = crate::audit::probe_script(&conf);
    let sampler = crate::audit::Sampler::start(move || {
        let o = crate::harness::run(command("sh").arg("-c").arg(&probe));
        Some(String::from_utf8_lossy(&o.stdout).into_owned())
    });
    (sampler, [rl.lab.port, rc], printed)
}

/// The secrets audit and the exposure check of a completed local run: the S3 keys and the
/// planted claim are in none of the plan's and the run's `outputs`, the state dir (logs, state, plan, report,
/// journal), the bucket's archive and manifest, or a command line on the target (this machine);
/// Plex and rclone's rc listened on loopback only; the pushed rclone config and the state file
/// were 0600.
fn audit_local_run(
    rl: &RcloneLab,
    outputs: &[&std::process::Output],
    samples: &[String],
    ports: &[u16; 2],
) {
    let (access, secret) = rl.s3_keys();
    let looks = samples.len();
    assert!(looks >= 3, "the sampler looked {looks} times");
    let texts = [
        (
            "plan and run output",
            outputs
                .iter()
                .map(|o| text(o))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("the target's command lines", samples.join("\n")),
    ];
    let texts: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let secrets = [
        ("the S3 access key", access.as_str()),
        ("the S3 secret key", secret.as_str()),
        ("the claim token", PLANTED_CLAIM),
    ];
    let leaks = crate::audit::leaks(
        &secrets,
        &texts,
        &[
            &rl.lab.state_dir(),
            &rl.lab.path("exports"),
            &rl.lab.path("export"),
        ],
        &[],
    );
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    let needles: Vec<String> = ports.iter().map(|p| format!(":{p} ")).collect();
    let (open, seen) = crate::audit::exposed(samples, &needles);
    assert!(open.is_empty(), "listening beyond loopback: {open:#?}");
    assert!(
        seen.iter().all(|n| *n > 0),
        "Plex and rclone's rc were seen listening on {ports:?}: {seen:?}"
    );
    assert_eq!(
        crate::audit::modes(samples),
        ["600".to_string()].into(),
        "the pushed rclone config's mode"
    );
    let state = rl.lab.state_dir().join("state.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&state).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600, "{}", state.display());
    eprintln!(
        "secrets audit (local run): {} secrets, {} sinks + every file under the state dir, the export dir and the bucket, {looks} looks at the target: 0 found; Plex and rclone rc on loopback only",
        secrets.len(),
        texts.len()
    );
}

#[test]
fn local_run_on_an_rclone_mount_scans_everything() {
    let rl = RcloneLab::new(LabOpts::default(), "export_path = \"exports/plexburst\"");
    // The staged export: archived and verified on the target, then copied with retries.
    let cfg = std::fs::read_to_string(rl.lab.config_path()).unwrap();
    assert!(cfg.contains("[export]\n"), "{cfg}");
    std::fs::write(
        rl.lab.config_path(),
        cfg.replace("[export]\n", "[export]\nstaged = true\n"),
    )
    .unwrap();
    // The secrets audit and the exposure check on the local target ride on this run.
    let (sampler, ports, plan) = local_sampler(&rl);
    let out = crate::harness::run(rl.lab.cmd(&["run"]).env("PLEX_CLAIM", PLANTED_CLAIM));
    let samples = sampler.finish();
    assert_counts_match(&rl, &out);
    assert_archive_in_bucket(&rl, true);
    audit_local_run(&rl, &[&plan, &out], &samples, &ports);
    // The music section's analysis ran with the prefetcher, which read what it could and left.
    let prefetch = rl.lab.phase("analyze")["prefetch"].clone();
    assert_eq!(prefetch["failed"], 0, "{prefetch:#}");
    assert!(
        pids_with_cmdline("prefetch.sh").is_empty(),
        "the prefetcher is gone"
    );
    // The timeline of report.html has the bytes the mount read from the bucket (rclone's
    // core/stats): the scan reads every file through it.
    let read: Vec<u64> = timeline(&rl.lab)
        .iter()
        .filter_map(|s| s["bucket_bytes"].as_u64())
        .collect();
    assert!(
        read.iter().any(|b| *b > 0),
        "no bucket bytes on the timeline: {read:?}"
    ); // And, while Sonic ran, the prefetcher's bytes ahead of the analyser (its series in the picture).
    let tl = timeline(&rl.lab);
    assert!(
        tl.iter()
            .filter(|s| s["phase"] == "analyze" && s["unit"] == "tracks")
            .any(|s| s["prefetch_bytes"].is_u64()),
        "no prefetch window on the analysis timeline"
    );
    assert!(
        tl.iter()
            .filter(|s| s["phase"] != "analyze")
            .all(|s| s["prefetch_bytes"].is_null()),
        "a prefetch window outside the analysis"
    );
}

/// The run's `samples.jsonl`, one JSON value a line.
pub fn timeline(lab: &crate::harness::Lab) -> Vec<serde_json::Value> {
    let id = lab.state()["run_id"].as_str().unwrap().to_string();
    std::fs::read_to_string(lab.state_dir().join(format!("runs/{id}/samples.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ssh_run_on_an_rclone_mount_scans_everything() {
    let sshd = crate::sshd::Sshd::start();
    let rl = RcloneLab::new(
        LabOpts {
            target_toml: Some(sshd.config_toml()),
            ..Default::default()
        },
        "export_path = \"exports/plexburst\"",
    );
    // The default export of an rclone storage: streamed to the bucket over the ssh target.
    let out = rl.lab.plexburst(&["run"]);
    assert_counts_match(&rl, &out);
    assert_archive_in_bucket(&rl, false);
}

/// Run the lab, kill the `rclone mount` process once the scan has written its first item, and
/// return (the run's output, the killed pid, the item count when killed, the most items ever
/// seen marked deleted during the run).
fn run_and_kill_rclone_mid_scan(rl: &RcloneLab) -> (std::process::Output, u32, i64, i64) {
    let lab = &rl.lab;
    let (out, killed, max_deleted) = std::thread::scope(|s| {
        let run = s.spawn(|| lab.plexburst(&["run"]));
        let mut killed = None;
        let mut max_deleted = 0;
        let deadline = Instant::now() + Duration::from_secs(300);
        while !run.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the run did not finish within 300 s"
            );
            // Read the DB only while Plex serves: once the export has stopped it, a reader would
            // touch the `-shm` file the archive is being made of.
            if TcpStream::connect(("127.0.0.1", lab.port)).is_err() {
                std::thread::sleep(Duration::from_millis(100)); // sampling interval of the DB watcher
                continue;
            }
            // The DB file appears before its schema: a failed read here just means "not yet".
            let counts = Local::new().exec(
                &Cmd::new(format!(
                    "sqlite3 -readonly -cmd '.timeout 10000' '{}' \"SELECT ({ITEMS}) || ' ' || ({DELETED})\"",
                    lab.db_path().display()
                )),
            );
            if let Ok(o) = counts
                && o.status == 0
            {
                let counts = o.stdout_str();
                let mut it = counts
                    .trim()
                    .split(' ')
                    .map(|n| n.parse::<i64>().unwrap_or(0));
                let (items, deleted) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                max_deleted = max_deleted.max(deleted);
                if killed.is_none() && items >= 1 {
                    let pids = rl.mount_pids();
                    assert_eq!(pids.len(), 1, "one rclone mount serves the lab: {pids:?}");
                    Local::new()
                        .run(&Cmd::new(format!("kill -9 {}", pids[0])))
                        .unwrap();
                    killed = Some((pids[0], items));
                }
            }
            std::thread::sleep(Duration::from_millis(100)); // sampling interval of the DB watcher
        }
        (run.join().unwrap(), killed, max_deleted)
    });
    let (pid, at) = killed.expect("rclone was killed while the scan ran");
    (out, pid as u32, at, max_deleted)
}

/// The assertions both kill tests share: killed mid-scan, the guard acted, nothing was ever
/// marked deleted, the old rclone is gone and every count matches.
fn assert_recovered_from_kill(rl: &RcloneLab, run: (std::process::Output, u32, i64, i64)) {
    let (out, pid, at, max_deleted) = run;
    let lab = &rl.lab;
    let total = lab.counts.tracks + lab.counts.movies + lab.counts.photos;
    let log = text(&out);
    assert!(
        at < total,
        "killed mid-scan ({at} of {total} items):\n{log}"
    );
    assert!(
        log.contains("storage is degraded"),
        "the guard saw the dead mount:\n{log}"
    );
    assert!(
        !log.contains("restarting it"),
        "Plex itself never had to be restarted:\n{log}"
    );
    assert_eq!(max_deleted, 0, "an item was marked deleted during the run");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_counts_match(rl, &out);
}

#[test]
fn rclone_killed_mid_scan_is_remounted_and_nothing_is_marked_deleted() {
    // A slow scan (2 files/s over 22 files) leaves room to kill rclone in the middle of it.
    let rl = RcloneLab::new(
        LabOpts {
            emulator_args: vec!["--scan-rate".into(), "2".into()],
            ..Default::default()
        },
        "",
    );
    let killed = run_and_kill_rclone_mid_scan(&rl);
    assert_recovered_from_kill(&rl, killed);
    let remounts = timeline(&rl.lab)
        .iter()
        .filter(|s| s["phase"] == "scan")
        .flat_map(|s| s["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e == "remount")
        .count();
    assert!(remounts >= 1, "the remount is on report.html's timeline");
}

#[test]
fn docker_container_reads_the_remount_after_rclone_is_killed_mid_scan() {
    let image = crate::harness::emulator_image();
    let mut rl = RcloneLab::new(
        LabOpts {
            docker_image: Some(image.into()),
            ..Default::default()
        },
        "",
    );
    // The container runs the server as uid 1000: it must reach its data dir.
    run(command("chmod").args(["755", rl.lab.dir.path().to_str().unwrap()]));
    // The image takes no scan-rate flag, so the library is made big enough (~1,700 files read
    // through FUSE) for the scan to last while rclone is killed.
    let media = rl.lab.path("media");
    std::fs::remove_dir_all(&media).unwrap();
    let out = run(command(emulator_bin()).args([
        "gen-library",
        "--out",
        media.to_str().unwrap(),
        "--artists",
        "20",
        "--albums",
        "100",
        "--tracks",
        "1500",
        "--movies",
        "100",
        "--photos",
        "100",
        "--seed",
        "11",
    ]));
    assert!(out.status.success(), "gen-library: {}", text(&out));
    rl.lab.counts = serde_json::from_slice(&out.stdout).expect("gen-library JSON");
    let killed = run_and_kill_rclone_mid_scan(&rl);
    assert_recovered_from_kill(&rl, killed);
}

#[test]
fn scan_refuses_a_mount_that_lists_but_cannot_read() {
    let rl = RcloneLab::new(LabOpts::default(), "");
    let lab = &rl.lab;
    let prepared = || {
        std::fs::read(lab.state_dir().join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|st| {
                st["phases"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["name"] == "prepare" && p["status"] == "done")
                })
            })
    };
    let out = std::thread::scope(|s| {
        let run = s.spawn(|| lab.plexburst(&["run"]));
        // Once the mount is up and its listing cached (phase prepare done), the bucket stops
        // serving Music: the mount still lists it, as the degraded mount of the field record did.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !run.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the run did not finish within 120 s"
            );
            if prepared() {
                std::fs::remove_dir_all(lab.path("media/Music")).unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(20)); // polling the state file
        }
        run.join().unwrap()
    });
    let log = text(&out);
    assert_ne!(out.status.code(), Some(0), "the run must not go on:\n{log}");
    assert!(log.contains("refusing to scan"), "{log}");
    assert!(
        log.contains("/Music/"),
        "the reason names the unreadable directory:\n{log}"
    );
    // Plex started (the refusal is in the scan phase), so its DB exists and shows no scan ran.
    assert!(lab.db_path().exists(), "{}", lab.db_path().display());
    assert_eq!(lab.count(ITEMS), 0, "no scan ran");
    assert_eq!(lab.count(DELETED), 0);
}

#[test]
fn hung_mount_is_degraded_within_the_probe_deadline_then_recovered() {
    let s3 = S3Server::start();
    let m = prepared_and_mounted(&s3, "");
    let r = Local::new();
    let pid = rclone_pid(&m);
    // A stopped rclone answers no FUSE request: every read through the mount hangs, the way a
    // deadlocked mount does (ops.md §3), while the process and the mount entry both still exist.
    r.run(&Cmd::new(format!("kill -STOP {pid}"))).unwrap();
    let t = Instant::now();
    let health = m.storage.health(&r).unwrap();
    let took = t.elapsed();
    let Health::Degraded(why) = health else {
        panic!("a hung mount must be degraded")
    };
    assert!(why.contains("hung"), "{why}");
    assert!(
        took < plexburst::storage::HEALTH_TIMEOUT + Duration::from_secs(10),
        "the probe took {took:?}"
    );

    m.storage.recover(&r).unwrap();
    assert_eq!(m.storage.health(&r).unwrap(), Health::Healthy);
    assert_ne!(rclone_pid(&m), pid);
    wait_for(
        "the stopped rclone to be killed",
        Duration::from_secs(10),
        || !Path::new(&format!("/proc/{pid}")).exists(),
    );
}

#[test]
fn streamed_export_of_a_changing_data_folder_is_refused_and_removed_from_the_bucket() {
    let rl = RcloneLab::new(LabOpts::default(), "export_path = \"exports/plexburst\"");
    let lab = &rl.lab;
    let lib = lab.data_dir().join("Library");
    std::fs::create_dir_all(&lib).unwrap();
    // A stray writer in the data folder (as a Plex process that did not stop would be).
    let writer = StrayWriter::start(lib.join("writer.txt"));
    let out = lab.plexburst(&["run", "--skip-analysis"]);
    drop(writer);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("streaming the export to s3lib:exports/plexburst/"),
        "{log}"
    );
    assert!(
        log.contains("the data folder changed while it was archived") && log.contains("writer.txt"),
        "{log}"
    );
    let in_bucket: Vec<_> = std::fs::read_dir(lab.path("exports/plexburst"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        in_bucket.is_empty(),
        "an unverified archive stayed in the bucket: {in_bucket:?}"
    );
    let left: Vec<_> = std::fs::read_dir(lab.path("export"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary export files left: {left:?}");

    // Once the folder is quiet the same run streams, verifies and completes.
    std::fs::remove_file(lib.join("writer.txt")).unwrap();
    let out = lab.plexburst(&["resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_archive_in_bucket(&rl, false);
}

/// A DB the prefetcher reads its queue from: one music section whose tracks are `files`, none
/// analysed yet, in this order.
fn prefetch_db(dir: &Path, files: &[String]) -> PathBuf {
    let db = dir.join("queue.db");
    let mut sql = String::from(
        "CREATE TABLE metadata_items(id INTEGER PRIMARY KEY, library_section_id INTEGER, metadata_type INTEGER, deleted_at INTEGER, extra_data TEXT);\n\
         CREATE TABLE media_items(id INTEGER PRIMARY KEY, metadata_item_id INTEGER);\n\
         CREATE TABLE media_parts(id INTEGER PRIMARY KEY, media_item_id INTEGER, file TEXT, size INTEGER, deleted_at INTEGER);\n",
    );
    for (i, f) in files.iter().enumerate() {
        let id = i + 1;
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(70_000);
        sql.push_str(&format!(
            "INSERT INTO metadata_items VALUES ({id}, 5, 10, NULL, NULL);\nINSERT INTO media_items VALUES ({id}, {id});\nINSERT INTO media_parts VALUES ({id}, {id}, '{}', {size}, NULL);\n",
            f.replace('\'', "''")
        ));
    }
    let out = run(command("sqlite3").arg(&db).arg(sql));
    assert!(out.status.success(), "{}", text(&out));
    db
}

fn analyse(db: &Path, ids: &str) {
    let out = run(command("sqlite3").arg(db).arg(format!(
        "UPDATE metadata_items SET extra_data = '{{\"ms:musicAnalysisVersion\":\"1\"}}' WHERE id IN ({ids})"
    )));
    assert!(out.status.success(), "{}", text(&out));
}

/// Bytes of the file at `tail` (a path ending) held in the mount's VFS cache (allocated: the
/// cache file is sparse until read).
fn cached_bytes(m: &Mounted, tail: &str) -> u64 {
    let out = Local::new()
        .run(&Cmd::new(format!(
            "find '{}/vfs' -type f -path '*/{}' -printf '%b\\n' | awk '{{print $1 * 512}}' | head -n 1",
            m.rclone().cache_dir(),
            tail
        )))
        .unwrap()
        .stdout_str();
    out.trim().parse().unwrap_or(0)
}

/// The prefetcher follows the analyser: with the window bounded by a small VFS cache it reads
/// only the queue's head, whole files into the cache, moves on as tracks get analysed, reports a
/// path it cannot read, finishes when nothing is left, and leaves no process behind.
#[test]
fn the_prefetcher_reads_whole_files_ahead_of_the_analyser_within_its_window() {
    let s3 = S3Server::start();
    // One reader: before any consumption is measured the window is two files (70 KB each).
    let m = prepared_and_mounted(&s3, "[tuning]\nprefetch_readers = 1\n");
    let r = Local::new();
    let mp = m.mount_point();
    let mut files: Vec<String> = Vec::new();
    for (artist, album) in [("Nina Simone", "Pastel Blues"), ("Can", "Tago Mago")] {
        for t in 1..=4 {
            files.push(format!("{mp}/Music/{artist}/{album}/{t:02} Track.flac"));
        }
    }
    let gone = format!("{mp}/Music/Can/Tago Mago/09 Not In Bucket.flac");
    files.insert(5, gone.clone());
    let db = prefetch_db(m.tmp.path(), &files);
    let rc = m.rclone();
    rc.prefetch_start(
        &r,
        &plexburst::storage::rclone::PrefetchJob {
            db: db.to_str().unwrap(),
            section_id: 5,
            readers: 1,
            lead_secs: 30,
            max_secs: 600,
        },
    )
    .unwrap();
    let status = || rc.prefetch_status(&r).unwrap_or_default();
    wait_for("the first window", Duration::from_secs(30), || {
        status().files >= 2
    });
    let first = status();
    assert_eq!(first.files, 2, "only the window's head: {first:?}");
    assert_eq!(first.window_bytes, 2 * 70_000, "{first:?}");
    assert_eq!(
        first.ahead_bytes,
        2 * 70_000,
        "read, not analysed yet: {first:?}"
    );
    assert!(
        cached_bytes(&m, "Pastel Blues/01 Track.flac") >= 70_000,
        "read whole into the cache"
    );
    assert_eq!(
        cached_bytes(&m, "Pastel Blues/03 Track.flac"),
        0,
        "not yet: beyond the window"
    );
    // The analyser takes two tracks at a time; the window follows, past the missing file.
    for (ids, files) in [("1,2", 4), ("3,4", 5), ("5,6", 7), ("7,8", 8)] {
        analyse(&db, ids);
        wait_for("the window to move", Duration::from_secs(30), || {
            status().files >= files
        });
    }
    assert_eq!(status().failed, 1);
    analyse(&db, "9");
    wait_for("the queue to empty", Duration::from_secs(30), || {
        status().finished
    });
    let done = rc.prefetch_stop(&r).unwrap();
    assert!(done.finished, "{done:?}");
    assert_eq!(done.failed, 1, "{done:?}");
    assert_eq!(done.failed_paths, vec![gone]);
    assert_eq!(
        done.files, 8,
        "every readable track was read once: {done:?}"
    );
    assert!(
        pids_with_cmdline(&rc.prefetch_dir()).is_empty(),
        "the prefetcher is gone"
    );
}

/// A seed in the bucket (last run's streamed export) is copied to the target with the run's own
/// rclone config, restored, and its copy removed at the end.
#[test]
fn a_seed_in_the_bucket_is_copied_with_the_runs_rclone() {
    let rl = RcloneLab::new(LabOpts::default(), "export_path = \"exports/plexburst\"");
    let out = rl.lab.plexburst(&["run", "--skip-analysis"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let archive = rl.lab.state()["export"]["archive"]
        .as_str()
        .unwrap()
        .to_string();
    let object = archive.split_once(':').unwrap().1.to_string();
    std::fs::remove_dir_all(rl.lab.data_dir()).unwrap();
    let seed = format!("bucket:{object}");
    let out = rl
        .lab
        .plexburst(&["run", "--skip-analysis", "--seed", &seed]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(rl.lab.count(TRACKS), rl.lab.counts.tracks);
    assert_eq!(rl.lab.count(DELETED), 0, "nothing was marked deleted");
    assert!(rl.mount_pids().is_empty(), "the run unmounted rclone");
    rl.lab
        .assert_plan_is_what_ran_with(&["--skip-analysis", "--seed", &seed]);
    let rec = rl.lab.state()["seed"].clone();
    assert!(
        rec["source"].as_str().unwrap().contains("in the bucket"),
        "{rec:#}"
    );
    let music = crate::seed::seeded_section(&rec, "Music");
    assert_eq!(music["tracks"], rl.lab.counts.tracks);
    let staged = rl.lab.data_dir().join(".plexburst/seed");
    assert!(
        !staged.exists(),
        "the seed's copy is gone: {}",
        staged.display()
    );
}

#[test]
fn plan_sizes_the_bucket_from_here_and_an_unreachable_target_only_costs_the_forecast() {
    // Nothing listens on this port: the ssh target is out of reach.
    let port = free_port();
    let rl = RcloneLab::new(
        LabOpts {
            target_toml: Some(format!(
                "[target]\nkind = \"ssh\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"nobody\"\nssh_options = [\"ConnectTimeout=5\", \"StrictHostKeyChecking=no\", \"UserKnownHostsFile=/dev/null\"]\n"
            )),
            ..Default::default()
        },
        "",
    );
    let out = rl.lab.plexburst(&["plan"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("preflight: the section folders are checked after the mount"),
        "{stdout}"
    );
    assert!(
        stdout.contains("forecast: omitted, the target's vCPUs are unknown ("),
        "{stdout}"
    );
    // Reachable (this machine), the same bucket is sized from here, through the user's remote.
    let local = RcloneLab::new(LabOpts::default(), "");
    let out = local.lab.plexburst(&["plan"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "forecast: Sonic analysis of {} tracks, ",
            local.lab.counts.tracks
        )),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("  this target (local): ")
                && l.contains("link speed unknown, network not counted")),
        "{stdout}"
    );
}

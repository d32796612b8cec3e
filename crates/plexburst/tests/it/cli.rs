//! The command-line surface a user reads: `--help` of the binary and of every subcommand, compared
//! with checked-in snapshots, and the snapshot helper the plan test shares.

use std::path::Path;

/// Compare `got` with `tests/it/snapshots/<name>`. After an intended change, refresh every
/// snapshot with `UPDATE_SNAPSHOTS=1 cargo test -p plexburst --test it snapshot` and review the diff.
pub fn assert_snapshot(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got,
        want,
        "{name} changed; review it and refresh {} (see assert_snapshot)",
        path.display()
    );
}

#[test]
fn help_snapshot() {
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["plan"],
        &["run"],
        &["status"],
        &["resume"],
        &["destroy"],
        &["logs"],
        &["ssh"],
        &["apply"],
    ];
    let mut got = String::new();
    for args in commands {
        let out = crate::harness::command(crate::harness::plexburst_bin())
            .args(*args)
            .arg("--help")
            .env("COLUMNS", "100")
            .output()
            .unwrap();
        assert!(out.status.success(), "plexburst {args:?} --help failed");
        got.push_str(&format!("$ plexburst {} --help\n", args.join(" ")));
        got.push_str(&String::from_utf8(out.stdout).unwrap());
        got.push('\n');
    }
    assert_snapshot("help.txt", &got);
}

//! Facts about the target host read through the remote: tools present, CPU of Plex's process tree.
//!
//! Each function is one remote command, so on an SSH target it costs one round trip.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::remote::{Cmd, Remote, quote};

/// CPU use of one process tree (the Plex server we started and its children), at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuSample {
    /// utime + stime + cutime + cstime, in clock ticks (USER_HZ, 100 per second on Linux), summed
    /// over the root process and its live descendants. The children's fields keep the sum from
    /// dropping when a short-lived scanner process exits and is reaped by its parent in the tree.
    pub total_ticks: u64,
    /// How many processes the tree has (the root included).
    pub processes: u32,
    /// A process in the tree has `Plex Media Scanner` in its command line.
    pub scanner_running: bool,
}

/// Which of `tools` the target lacks (`command -v`). An empty list means all are there.
pub fn missing_tools(r: &dyn Remote, tools: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut script = String::from("for t in");
    for t in tools {
        script.push(' ');
        script.push_str(&quote(t));
    }
    script.push_str("; do command -v \"$t\" >/dev/null 2>&1 || printf '%s\\n' \"$t\"; done");
    let out = r
        .run(&Cmd::new(script).timeout(Duration::from_secs(30)))
        .with_context(|| format!("checking for {} on {}", tools.join(", "), r.describe()))?;
    Ok(out
        .stdout_str()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Reads every process's command line (NULs turned into spaces, one `/proc/PID/cmdline:ARGS`
/// line each) and then every `/proc/PID/stat`, in one pass; then walks the parent links from the
/// root pid (`$1`) down and sums the ticks of that tree. Prints `ticks processes scanner`, or
/// `gone` when the root is not (or no longer) a live process.
///
/// Only the tree counts: another Plex-like server on the same host (or another test's emulator)
/// has its own "Plex Media Scanner" and its own CPU, which must not look like ours. "Plex Media
/// Scanner" is split in two inside the awk program so the script never matches itself (it is not
/// in the tree anyway). A process that exits between the two reads has no command line, so it
/// cannot be the scanner, and its ticks are still in the stat read.
///
/// The pass is not atomic: a tree process reaped while the stat files are read is counted twice
/// (its own stat read, then its parent's children fields) or not at all (its parent read first,
/// its stat file gone when its turn came), so the total would jump or dip by everything that
/// process ever used. Every reap inside the tree changes a tree member's children fields
/// (cutime + cstime) or removes a member, so the pass is checked against a second read of just
/// the members and taken again when one changed (at most 5 passes; a tree reaping children that
/// fast gets the last one).
const CPU_SCRIPT: &str = r#"tries=0
while :; do
tries=$((tries + 1))
line=$({
  grep -a -H '' /proc/[0-9]*/cmdline 2>/dev/null | tr '\000' ' '
  echo '--plexburst-stat--'
  cat /proc/[0-9]*/stat 2>/dev/null
} | awk -v root="$1" '
BEGIN { scanner = "Plex Media " "Scanner"; stat = 0 }
$0 == "--plexburst-stat--" { stat = 1; next }
stat == 0 {
  if ($0 !~ /^\/proc\/[0-9]+\/cmdline:/) next
  colon = index($0, ":")
  pid = substr($0, 7, colon - 15)
  if (index(substr($0, colon + 1), scanner) > 0) scans[pid] = 1
  next
}
{
  pid = $1
  rest = $0
  sub(/^.*\) /, "", rest)
  split(rest, f, " ")
  # After the command name: f[1] is field 3 (state), f[2] the parent pid, and utime..cstime
  # (fields 14..17) are f[12]..f[15].
  if (f[1] == "Z" && pid == root) next
  seen[pid] = 1
  ticks[pid] = f[12] + f[13] + f[14] + f[15]
  reaped[pid] = f[14] + f[15]
  kids[f[2]] = kids[f[2]] " " pid
}
END {
  if (!(root in seen)) { print "gone"; exit }
  stack[1] = root; top = 1
  while (top > 0) {
    p = stack[top--]
    # A pid reused while the stat files were read could link back into the tree: visit once.
    if (p in visited) continue
    visited[p] = 1
    total += ticks[p]; procs++
    members = members " " p "=" reaped[p]
    if (p in scans) running = 1
    n = split(kids[p], c, " ")
    for (i = 1; i <= n; i++) stack[++top] = c[i]
  }
  printf "%d %d %d%s\n", total, procs, running, members
}')
[ "$line" = gone ] && { echo gone; exit 0; }
# Prints the sample (and the loop ends) unless a member is gone or reaped a child since the pass.
printf '%s\n' "$line" | awk -v tries="$tries" '{
  for (i = 4; i <= NF; i++) {
    split($i, kv, "=")
    f = "/proc/" kv[1] "/stat"
    ok = (getline s < f) > 0
    close(f)
    if (!ok) { moved = 1; break }
    sub(/^.*\) /, "", s)
    split(s, g, " ")
    if (g[14] + g[15] != kv[2]) { moved = 1; break }
  }
  if (moved && tries < 5) exit 1
  print $1, $2, $3
}' && exit 0
done
"#;

/// CPU ticks of process `root` and all its descendants (the Plex server started by
/// `runtime::Runtime`, see `Runtime::root_pid`), in one remote command. A root that is not
/// running is an error, never a zero sample.
pub fn cpu_sample(r: &dyn Remote, root: u32) -> anyhow::Result<CpuSample> {
    let out = r
        .run(&Cmd::new(format!("set -- {root}\n{CPU_SCRIPT}")).timeout(Duration::from_secs(30)))
        .with_context(|| format!("reading process CPU from /proc on {}", r.describe()))?;
    let text = out.stdout_str();
    if text.trim() == "gone" {
        bail!(
            "process {root} (the Plex server) is not running on {}",
            r.describe()
        );
    }
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            anyhow::anyhow!(
                "unexpected CPU sample output from {}: {text:?}",
                r.describe()
            )
        })?;
    let [total_ticks, processes, scanner] = fields[..] else {
        bail!(
            "unexpected CPU sample output from {}: {text:?}",
            r.describe()
        );
    };
    Ok(CpuSample {
        total_ticks,
        processes: u32::try_from(processes)?,
        scanner_running: scanner != 0,
    })
}

/// Bytes available to an unprivileged user on the filesystem holding `path` (`df -Pk`).
pub fn free_disk_bytes(r: &dyn Remote, path: &str) -> anyhow::Result<u64> {
    let out = r
        .run(&Cmd::new(format!(
            "df -Pk -- {} | awk 'NR == 2 {{ print $4 }}'",
            quote(path)
        )))
        .with_context(|| format!("reading free disk space of {path} on {}", r.describe()))?;
    let text = out.stdout_str();
    let kib: u64 = text.trim().parse().with_context(|| {
        format!(
            "unexpected `df` output for {path} on {}: {text:?}",
            r.describe()
        )
    })?;
    Ok(kib * 1024)
}

/// Number of CPUs available on the target.
pub fn nproc(r: &dyn Remote) -> anyhow::Result<u32> {
    let out = r
        .run(&Cmd::new("nproc 2>/dev/null || getconf _NPROCESSORS_ONLN"))
        .with_context(|| format!("counting CPUs on {}", r.describe()))?;
    let text = out.stdout_str();
    text.trim()
        .parse()
        .with_context(|| format!("unexpected `nproc` output on {}: {text:?}", r.describe()))
}

/// Whether `path` is a mount point. A missing path is an error, not `false`.
pub fn is_mountpoint(r: &dyn Remote, path: &str) -> anyhow::Result<bool> {
    let script = format!(
        "p={}\n\
         [ -e \"$p\" ] || {{ echo \"$p does not exist\" >&2; exit 3; }}\n\
         if command -v mountpoint >/dev/null 2>&1; then mountpoint -q -- \"$p\" && echo yes || echo no\n\
         elif [ \"$(stat -c %d -- \"$p\")\" != \"$(stat -c %d -- \"$p/..\")\" ]; then echo yes\n\
         else echo no; fi",
        quote(path)
    );
    let out = r.run(&Cmd::new(script)).with_context(|| {
        format!(
            "checking whether {path} is a mount point on {}",
            r.describe()
        )
    })?;
    match out.stdout_str().trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!("unexpected mount point check output for {path}: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::local::Local;

    #[test]
    fn missing_tools_names_only_the_missing_ones() {
        let missing = missing_tools(&Local::new(), &["sh", "plexburst-no-such-tool"]).unwrap();
        assert_eq!(missing, vec!["plexburst-no-such-tool".to_string()]);
    }

    #[test]
    fn cpu_sample_of_a_missing_process_is_an_error_not_zero() {
        // Pids never exceed 2^22 on Linux (pid_max), so this one cannot exist.
        let err = cpu_sample(&Local::new(), 4_194_305).unwrap_err();
        assert!(err.to_string().contains("not running"), "{err:#}");
    }

    #[test]
    fn cpu_sample_of_this_test_process_counts_it_and_nothing_above_it() {
        let me = std::process::id();
        let s = cpu_sample(&Local::new(), me).unwrap();
        // This process plus the sampling shell it spawned (and that shell's pipeline).
        assert!(s.processes >= 2, "{s:?}");
        assert!(!s.scanner_running, "{s:?}");
    }

    /// Kills a test's process group even when an assertion fails.
    struct KillGroup(u32);

    impl Drop for KillGroup {
        fn drop(&mut self) {
            let _ = Local::new().exec(&Cmd::new(format!("kill -9 -{} 2>/dev/null", self.0)));
        }
    }

    #[test]
    fn cpu_sample_never_goes_backwards_while_the_tree_reaps_children() {
        // A server that keeps starting short busy children and reaping them (like Plex's scanner
        // and transcoder runs): each reap moves a child's ticks into its parent's children fields
        // while the sample reads /proc, which must count them once, never zero or two times.
        let local = Local::new();
        let pid: u32 = local
            .run(&Cmd::new(
                "setsid sh -c 'while :; do sh -c \"i=0; while [ \\$i -lt 20000 ]; do i=\\$((i+1)); done\"; done' \
                 >/dev/null 2>&1 & echo $!",
            ))
            .unwrap()
            .stdout_str()
            .trim()
            .parse()
            .unwrap();
        let _kill = KillGroup(pid);
        let mut last = cpu_sample(&local, pid).unwrap();
        for _ in 0..60 {
            let s = cpu_sample(&local, pid).unwrap();
            assert!(
                s.total_ticks >= last.total_ticks,
                "the tree's CPU went from {last:?} to {s:?}"
            );
            last = s;
        }
        assert!(last.total_ticks > 0, "{last:?}");
    }

    #[test]
    fn disk_cpu_and_mounts_are_read() {
        let local = Local::new();
        assert!(free_disk_bytes(&local, "/tmp").unwrap() > 0);
        assert!(nproc(&local).unwrap() >= 1);
        assert!(is_mountpoint(&local, "/proc").unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mountpoint(&local, dir.path().to_str().unwrap()).unwrap());
        assert!(is_mountpoint(&local, "/plexburst/no/such/path").is_err());
    }
}

//! Facts about the target host read through the remote: tools present, CPU of Plex processes.
//!
//! Each function is one remote command, so on an SSH target it costs one round trip.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::remote::{Cmd, Remote};

/// CPU use of the processes that matter, at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuSample {
    /// utime + stime + cutime + cstime, in clock ticks (USER_HZ, 100 per second on Linux), summed
    /// over the matching processes. The children's fields keep the sum from dropping when a
    /// short-lived scanner process exits and is reaped by a matching parent.
    pub total_ticks: u64,
    /// How many processes matched.
    pub processes: u32,
    /// Some process's command line contains `Plex Media Scanner`.
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
/// line each) and then every `/proc/PID/stat`, in one pass, and sums the ticks of the processes
/// whose command line contains one of the patterns (given on stdin, one per line).
///
/// The patterns travel on stdin and "Plex Media Scanner" is split in two inside the awk program,
/// so neither this script nor awk ever matches itself. A process that exits between the two reads
/// is simply missing from the second one.
const CPU_SCRIPT: &str = r#"PB_PATTERNS=$(cat)
export PB_PATTERNS
{
  grep -a -H '' /proc/[0-9]*/cmdline 2>/dev/null | tr '\000' ' '
  echo '--plexburst-stat--'
  cat /proc/[0-9]*/stat 2>/dev/null
} | awk -v self="$$" '
BEGIN { n = split(ENVIRON["PB_PATTERNS"], pats, "\n"); scanner = "Plex Media " "Scanner"; stat = 0 }
$0 == "--plexburst-stat--" { stat = 1; next }
stat == 0 {
  if ($0 !~ /^\/proc\/[0-9]+\/cmdline:/) next
  colon = index($0, ":")
  pid = substr($0, 7, colon - 15)
  args = substr($0, colon + 1)
  if (pid == self) next
  if (index(args, scanner) > 0) running = 1
  for (i = 1; i <= n; i++) if (pats[i] != "" && index(args, pats[i]) > 0) { want[pid] = 1; break }
  next
}
{
  pid = $1
  if (!(pid in want)) next
  rest = $0
  sub(/^.*\) /, "", rest)
  split(rest, f, " ")
  # After the command name: f[1] is field 3 (state), so utime..cstime (14..17) are f[12]..f[15].
  ticks += f[12] + f[13] + f[14] + f[15]
  procs++
}
END { printf "%d %d %d\n", ticks, procs, running }'
"#;

/// CPU ticks of the processes whose command line contains any of `patterns`.
pub fn cpu_sample(r: &dyn Remote, patterns: &[String]) -> anyhow::Result<CpuSample> {
    let stdin = patterns
        .iter()
        .filter(|p| !p.is_empty() && !p.contains('\n'))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    let out = r
        .run(
            &Cmd::new(CPU_SCRIPT)
                .stdin(stdin)
                .timeout(Duration::from_secs(30)),
        )
        .with_context(|| format!("reading process CPU from /proc on {}", r.describe()))?;
    let text = out.stdout_str();
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

fn quote(s: &str) -> String {
    shell_escape::unix::escape(s.into()).into_owned()
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
    fn cpu_sample_does_not_count_itself() {
        let s = cpu_sample(&Local::new(), &["plexburst-pattern-nobody-runs".into()]).unwrap();
        assert_eq!((s.processes, s.total_ticks), (0, 0));
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

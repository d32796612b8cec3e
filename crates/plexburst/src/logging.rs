//! Log output: stderr for the user, and the run's own log file once a run has an id.
//!
//! On a terminal a line is `HH:MM:SS message` in local time, the level shown only when it is not
//! INFO: the message is what a person reads. Anywhere else (a pipe, CI, a service's journal) and
//! in the run's log file, lines carry the full UTC timestamp and the level, for later reading; the
//! run's log file is at debug level whatever `-v` says.

use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The short form for a person at a terminal.
struct Short;

impl<S, N> FormatEvent<S, N> for Short
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(w, "{} ", short_prefix(*event.metadata().level()))?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// `12:04:05` for INFO, `12:04:05 WARN` otherwise (local time).
fn short_prefix(level: Level) -> String {
    let time = local_hms();
    if level == Level::INFO {
        time
    } else {
        format!("{time} {level}")
    }
}

/// The local wall-clock time as `HH:MM:SS` (the system's zone: `TZ`, /etc/localtime).
fn local_hms() -> String {
    jiff::ZonedDateTime::now().strftime("%H:%M:%S").to_string()
}

/// Where the run's log file goes once `to_file` names it; nothing is written before.
#[derive(Clone, Default)]
struct FileSink(Arc<Mutex<Option<File>>>);

struct SinkWriter(Arc<Mutex<Option<File>>>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut g) => match g.as_mut() {
                Some(f) => f.write(buf),
                None => Ok(buf.len()),
            },
            Err(_) => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for FileSink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(Arc::clone(&self.0))
    }
}

static SINK: std::sync::OnceLock<FileSink> = std::sync::OnceLock::new();

/// Log to stderr; `PLEXBURST_LOG` (an EnvFilter) overrides `-v`.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "plexburst=info",
        1 => "plexburst=debug",
        _ => "plexburst=trace",
    };
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("PLEXBURST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    let sink = SINK.get_or_init(FileSink::default).clone();
    // The run's log file has the whole run at debug level (secrets are masked where commands
    // are logged): an instance's own logs die with it, this one stays.
    let file = tracing_subscriber::fmt::layer()
        .with_writer(sink)
        .with_ansi(false)
        .with_target(false)
        .with_filter(tracing_subscriber::EnvFilter::new(if verbose >= 2 {
            "plexburst=trace"
        } else {
            "plexburst=debug"
        }));
    let terminal = std::io::stderr().is_terminal();
    let stderr_short = terminal.then(|| {
        tracing_subscriber::fmt::layer()
            .event_format(Short)
            .with_writer(std::io::stderr)
            .with_ansi(true)
            .with_filter(filter())
    });
    let stderr_full = (!terminal).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .with_filter(filter())
    });
    let _ = tracing_subscriber::registry()
        .with(file)
        .with(stderr_short)
        .with(stderr_full)
        .try_init();
}

/// From now on, every log line also goes to `path` (appended, 0600): the run's log file.
pub fn to_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open the run's log {}: {e}", path.display()))?;
    if let Some(sink) = SINK.get()
        && let Ok(mut g) = sink.0.lock()
    {
        *g = Some(f);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_line_shows_the_time_and_only_a_level_that_is_not_info() {
        let info = short_prefix(Level::INFO);
        assert_eq!(info.len(), 8, "{info}");
        assert_eq!(info.as_bytes()[2], b':');
        let warn = short_prefix(Level::WARN);
        assert!(warn.ends_with(" WARN"), "{warn}");
    }
}

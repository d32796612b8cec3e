//! `runs/<run-id>/report.html`: the run drawn from its samples, one timeline per watched phase.
//!
//! Self-contained: inline SVG and CSS, no script, no font or image fetched, so it opens from a
//! copied run directory on any machine. Each phase gets charts on one shared time axis: items done
//! (against the total), rate, Plex's CPU, bytes read from the bucket, the prefetch window and
//! cost, with restarts, remounts and stalls drawn as vertical marks across all of them.

use std::fmt::Write;

use super::Report;
use super::samples::SampleLine;

/// A linear map from data values onto pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pub from: f64,
    pub to: f64,
}

impl Scale {
    /// Data `lo..hi` onto pixels `from..to`; an empty range (one value, or none) is widened so
    /// every point still lands inside.
    pub fn new(lo: f64, hi: f64, from: f64, to: f64) -> Scale {
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else if lo == 0.0 {
            (0.0, 1.0)
        } else {
            (lo - lo.abs() * 0.5, hi + hi.abs() * 0.5)
        };
        Scale { lo, hi, from, to }
    }

    pub fn map(&self, v: f64) -> f64 {
        self.from + (v - self.lo) / (self.hi - self.lo) * (self.to - self.from)
    }
}

/// One line of a chart: (seconds since the phase's first sample, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// A vertical mark: an event at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub at: f64,
    pub label: String,
}

/// One chart of a phase's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub unit: String,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// Seconds the time axis spans (the phase's last sample).
    pub span: f64,
    /// What to say when no series has a point.
    pub empty: String,
}

pub const WIDTH: f64 = 760.0;
pub const HEIGHT: f64 = 150.0;
const EMPTY_HEIGHT: f64 = 52.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 26.0;

fn marker_colour(label: &str) -> &'static str {
    match label {
        "restart" => "#e67e22",
        "remount" => "#2980b9",
        _ => "#c0392b",
    }
}

/// `1.2k`, `3.4M`, `0.25`: short numbers for the axes.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// `12:05`, `1:02:03` from seconds.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Chart {
    /// The chart as an `<svg>` element.
    pub fn svg(&self) -> String {
        let mut s = String::new();
        let _ = self.svg_into(&mut s);
        s
    }

    fn svg_into(&self, s: &mut String) -> std::fmt::Result {
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|x| x.points.iter().copied())
            .collect();
        // A chart with nothing to draw is a thin strip with its reason, not a tall empty box.
        let height = if points.is_empty() {
            EMPTY_HEIGHT
        } else {
            HEIGHT
        };
        let bottom = if points.is_empty() { 4.0 } else { BOTTOM };
        let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, height - bottom, TOP);
        writeln!(
            s,
            r##"<svg width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{}">"##,
            esc(&self.title)
        )?;
        writeln!(
            s,
            r##"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="#fafafa" stroke="#999"/>"##,
            x1 - x0,
            y0 - y1
        )?;
        writeln!(
            s,
            r##"<text x="{x0}" y="16" font-size="13" font-weight="bold" fill="#222">{}{}</text>"##,
            esc(&self.title),
            if self.unit.is_empty() {
                String::new()
            } else {
                format!(" ({})", esc(&self.unit))
            }
        )?;
        let xs = Scale::new(0.0, self.span.max(1.0), x0, x1);
        // Events are marked on every chart, one with no data too: a remount explains a gap.
        for m in &self.markers {
            let x = xs.map(m.at);
            writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y0}" stroke="{}" stroke-width="2"><title>{}</title></line>"##,
                marker_colour(&m.label),
                esc(&m.label)
            )?;
        }
        if points.is_empty() {
            writeln!(
                s,
                r##"<text x="{}" y="{}" font-size="12" fill="#777" text-anchor="middle">{}</text>"##,
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0 + 4.0,
                esc(&self.empty)
            )?;
            return writeln!(s, "</svg>");
        }
        let top = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        let ys = Scale::new(0.0, top.max(0.0) * 1.05, y0, y1);
        // Axis labels: 0 and the top value; start and end of the phase.
        for (v, y) in [(ys.lo, y0), (ys.hi, y1)] {
            writeln!(
                s,
                r##"<text x="{}" y="{}" font-size="11" fill="#444" text-anchor="end">{}</text>"##,
                x0 - 6.0,
                y + 4.0,
                short(v)
            )?;
        }
        for (t, anchor) in [(0.0, "start"), (xs.hi, "end")] {
            writeln!(
                s,
                r##"<text x="{}" y="{}" font-size="11" fill="#444" text-anchor="{anchor}">{}</text>"##,
                xs.map(t),
                height - 8.0,
                clock(t)
            )?;
        }
        for (i, series) in self.series.iter().enumerate() {
            let dash = if series.dashed {
                r#" stroke-dasharray="5 4""#
            } else {
                ""
            };
            if let [(t, v)] = series.points.as_slice() {
                // One sample: a dot, since a line needs two.
                writeln!(
                    s,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"##,
                    xs.map(*t),
                    ys.map(*v),
                    series.colour
                )?;
            } else if !series.points.is_empty() {
                let path: Vec<String> = series
                    .points
                    .iter()
                    .map(|(t, v)| format!("{:.1},{:.1}", xs.map(*t), ys.map(*v)))
                    .collect();
                writeln!(
                    s,
                    r##"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"##,
                    series.colour,
                    path.join(" ")
                )?;
            }
            writeln!(
                s,
                r##"<text x="{}" y="16" font-size="11" fill="{}" text-anchor="end">{}</text>"##,
                x1 - 150.0 * i as f64,
                series.colour,
                esc(&series.name)
            )?;
        }
        writeln!(s, "</svg>")
    }
}

/// Seconds of `at` after `start` (both RFC 3339); `None` when either does not parse.
fn secs_between(start: &str, at: &str) -> Option<f64> {
    let a: jiff::Timestamp = start.parse().ok()?;
    let b: jiff::Timestamp = at.parse().ok()?;
    Some(b.duration_since(a).as_secs_f64())
}

/// The charts of one watched job's samples (all from the same phase and label).
pub fn charts(samples: &[SampleLine]) -> Vec<Chart> {
    let Some(first) = samples.first() else {
        return Vec::new();
    };
    let t: Vec<f64> = samples
        .iter()
        .map(|s| secs_between(&first.at, &s.at).unwrap_or(0.0))
        .collect();
    let span = t.last().copied().unwrap_or(0.0);
    let series = |name: &str, colour, f: &dyn Fn(&SampleLine) -> Option<f64>| Series {
        name: name.into(),
        colour,
        points: samples
            .iter()
            .zip(&t)
            .filter_map(|(s, t)| f(s).map(|v| (*t, v)))
            .collect(),
        dashed: false,
    };
    let markers: Vec<Marker> = samples
        .iter()
        .zip(&t)
        .flat_map(|(s, t)| {
            s.events.iter().map(|e| Marker {
                at: *t,
                label: e.clone(),
            })
        })
        .collect();
    let unit = first.unit.clone();
    let chart = |title: &str, unit: &str, series: Vec<Series>, empty: &str| Chart {
        title: title.into(),
        unit: unit.into(),
        series,
        markers: markers.clone(),
        span,
        empty: empty.into(),
    };
    let mut total = series("total", "#7f8c8d", &|s| s.total.map(|v| v as f64));
    total.dashed = true;
    vec![
        chart(
            &format!("{unit} done"),
            &unit,
            vec![series("done", "#27ae60", &|s| Some(s.done as f64)), total],
            "no sample",
        ),
        chart(
            "rate",
            &format!("{unit}/s"),
            vec![series("rate", "#8e44ad", &|s| s.rate)],
            "no rate yet (too few samples)",
        ),
        chart(
            "Plex CPU",
            "cores",
            vec![series("CPU", "#d35400", &|s| s.cpu_cores)],
            "no CPU reading",
        ),
        chart(
            "read from the bucket",
            "MB",
            vec![series("bytes read", "#2980b9", &|s| {
                s.bucket_bytes.map(|b| b as f64 / 1e6)
            })],
            "not measured (the media is not read through rclone)",
        ),
        chart(
            "prefetch window",
            "MB",
            vec![series("window", "#16a085", &|s| {
                s.prefetch_bytes.map(|b| b as f64 / 1e6)
            })],
            "no prefetcher ran",
        ),
        chart(
            "cost so far",
            "EUR",
            vec![series("cost", "#c0392b", &|s| s.cost_eur)],
            "nothing rented",
        ),
    ]
}

/// The samples cut into watched jobs, in order: consecutive lines of the same phase and label.
fn jobs(samples: &[SampleLine]) -> Vec<&[SampleLine]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=samples.len() {
        if i == samples.len()
            || samples[i].phase != samples[start].phase
            || samples[i].label != samples[start].label
        {
            if i > start {
                out.push(&samples[start..i]);
            }
            start = i;
        }
    }
    out
}

/// The whole page.
pub fn page(r: &Report, samples: &[SampleLine]) -> String {
    let mut h = String::new();
    let _ = page_into(&mut h, r, samples);
    h
}

fn page_into(h: &mut String, r: &Report, samples: &[SampleLine]) -> std::fmt::Result {
    writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>plexburst run {}</title>",
        esc(&r.run_id)
    )?;
    writeln!(
        h,
        "<style>body{{font-family:sans-serif;margin:24px;color:#222;background:#fff}}h2{{margin-top:28px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}.legend span{{margin-right:16px}}svg{{display:block;margin:6px 0}}</style></head><body>"
    )?;
    writeln!(h, "<h1>plexburst run {}</h1>", esc(&r.run_id))?;
    writeln!(
        h,
        "<p>status: <b>{}</b> &middot; target: {} &middot; started {}</p>",
        esc(&r.status_text),
        esc(&r.target),
        esc(&r.created_at)
    )?;
    if let Some(c) = &r.cost {
        writeln!(h, "<p>cost: {}</p>", esc(c))?;
    }
    if let Some(m) = &r.sonic_cpu {
        writeln!(h, "<p>{}</p>", esc(&m.sentence()))?;
    }
    if let Some(e) = &r.error {
        writeln!(h, "<p>error: {}</p>", esc(e))?;
    }
    writeln!(
        h,
        "<table><tr><th>phase</th><th>status</th><th>duration</th><th>rate/s</th><th>stalls</th><th>restarts</th></tr>"
    )?;
    for p in &r.phases {
        writeln!(
            h,
            "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            p.status,
            p.duration_secs
                .map(|d| format!("{d:.1} s"))
                .unwrap_or_default(),
            p.rate_per_sec
                .map(|x| format!("{x:.1}"))
                .unwrap_or_default(),
            p.stalls,
            p.restarts
        )?;
    }
    writeln!(h, "</table>")?;
    writeln!(
        h,
        "<p class=\"legend\">marks: <span style=\"color:{}\">| restart</span><span style=\"color:{}\">| remount</span><span style=\"color:{}\">| stall, timeout, failed sample</span></p>",
        marker_colour("restart"),
        marker_colour("remount"),
        marker_colour("stalled")
    )?;
    let jobs = jobs(samples);
    if jobs.is_empty() {
        writeln!(
            h,
            "<p>No phase was watched: there are no samples to draw.</p>"
        )?;
    }
    for job in jobs {
        let first = &job[0];
        writeln!(
            h,
            "<h2>{}: {}</h2><p>{} samples from {}</p>",
            esc(&first.phase),
            esc(&first.label),
            job.len(),
            esc(&first.at)
        )?;
        for c in charts(job) {
            h.push_str(&c.svg());
        }
    }
    writeln!(h, "</body></html>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at: &str, done: i64) -> SampleLine {
        SampleLine {
            at: at.into(),
            phase: "analyze".into(),
            label: "Sonic analysis of Music".into(),
            unit: "tracks".into(),
            done,
            total: Some(10),
            ..Default::default()
        }
    }

    #[test]
    fn a_scale_maps_its_ends_and_widens_an_empty_range() {
        let s = Scale::new(0.0, 100.0, 70.0, 744.0);
        assert_eq!(
            (s.map(0.0), s.map(100.0), s.map(50.0)),
            (70.0, 744.0, 407.0)
        );
        // Pixels may run backwards (the y axis grows up).
        let y = Scale::new(0.0, 10.0, 124.0, 24.0);
        assert_eq!((y.map(0.0), y.map(10.0)), (124.0, 24.0));
        // One value: it lands inside, not on a division by zero.
        let one = Scale::new(5.0, 5.0, 0.0, 100.0);
        assert_eq!(one.map(5.0), 50.0);
        assert_eq!(Scale::new(0.0, 0.0, 0.0, 100.0).map(0.0), 0.0);
    }

    #[test]
    fn an_empty_series_says_why_instead_of_drawing() {
        let c = &charts(&[line("2026-11-27T10:00:00Z", 1)])[4];
        assert_eq!(c.title, "prefetch window");
        let svg = c.svg();
        assert!(svg.contains("no prefetcher ran"), "{svg}");
        assert!(
            !svg.contains("<polyline") && !svg.contains("<circle"),
            "{svg}"
        );
    }

    #[test]
    fn one_sample_is_a_dot_and_two_are_a_line() {
        let one = charts(&[line("2026-11-27T10:00:00Z", 1)]);
        let svg = one[0].svg();
        assert!(
            svg.contains("<circle") && !svg.contains("<polyline"),
            "{svg}"
        );
        let two = charts(&[
            line("2026-11-27T10:00:00Z", 1),
            line("2026-11-27T10:01:40Z", 9),
        ]);
        assert_eq!(two[0].span, 100.0);
        let svg = two[0].svg();
        // done from (0 s, 1) to (100 s, 9): x from the left edge to the right, y up the chart.
        let ys = Scale::new(0.0, 10.0 * 1.05, HEIGHT - BOTTOM, TOP);
        let expect = format!(
            "points=\"{LEFT:.1},{:.1} {:.1},{:.1}\"",
            ys.map(1.0),
            WIDTH - RIGHT,
            ys.map(9.0)
        );
        assert!(svg.contains(&expect), "{expect} not in {svg}");
        assert!(
            svg.contains(">1:40<"),
            "the time axis ends at the last sample: {svg}"
        );
    }

    #[test]
    fn events_are_marked_on_every_chart_and_jobs_are_split() {
        let mut b = line("2026-11-27T10:00:10Z", 2);
        b.events = vec!["restart".into()];
        let mut c = line("2026-11-27T10:00:20Z", 3);
        c.label = "thumbnails of Photos".into();
        let samples = [line("2026-11-27T10:00:00Z", 1), b, c];
        let js = jobs(&samples);
        assert_eq!(js.iter().map(|j| j.len()).collect::<Vec<_>>(), [2, 1]);
        for chart in charts(js[0]) {
            assert_eq!(chart.markers.len(), 1);
            assert!(chart.svg().contains("<title>restart</title>"));
        }
    }
}

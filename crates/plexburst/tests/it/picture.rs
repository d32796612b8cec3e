//! `report.html` as a person sees it: rendered by headless Chromium (Debian's `chromium`) to a
//! PNG, decoded, and checked for a drawn page rather than a blank one.

use std::collections::BTreeSet;
use std::path::Path;

use crate::harness::{command, run, text};

/// What a screenshot holds: its size, the share of pixels that are not near-white, and the
/// distinct colours (quantised to 4 bits a channel, so anti-aliasing does not count).
#[derive(Debug)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub inked: f64,
    pub colours: usize,
}

/// Render `html` with headless Chromium to `png` at `width` x `height` and decode it. No
/// network: the page must draw with every fetch of Chromium's own switched off.
pub fn render(html: &Path, png: &Path, width: u32, height: u32) -> Picture {
    let profile = tempfile::tempdir().unwrap();
    let out = run(command("timeout")
        .arg("120")
        .arg("chromium")
        .args([
            "--headless",
            // Root in a container has no user namespace for the sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("file://{}", html.display())));
    assert!(
        out.status.success() && png.exists(),
        "chromium made no screenshot of {}: {}",
        html.display(),
        text(&out)
    );
    decode(png)
}

pub fn decode(png: &Path) -> Picture {
    let mut decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "a colour screenshot: {:?}", info.color_type);
    let mut colours = BTreeSet::new();
    let mut inked = 0u64;
    let pixels = buf[..info.buffer_size()].chunks(channels);
    let n = pixels.len() as f64;
    for p in pixels {
        let (r, g, b) = (p[0], p[1], p[2]);
        colours.insert((r >> 4, g >> 4, b >> 4));
        if r < 235 || g < 235 || b < 235 {
            inked += 1;
        }
    }
    Picture {
        width: info.width,
        height: info.height,
        inked: inked as f64 / n,
        colours: colours.len(),
    }
}

//! `Preferences.xml`: read attributes (the server's `PlexOnlineToken`, identifiers) with an XML parser.
//!
//! Plex keeps every setting as an attribute of the single root element `<Preferences .../>`
//! (plex.md §6). Values can hold XML escapes (`tok&amp;en`), so grepping the file is wrong; and
//! Plex rewrites the file while it runs, so a half-written file must be an error the caller
//! retries, never a silent "no token".

use anyhow::{Context, bail};
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

/// The server's own token (`PlexOnlineToken`), written a few seconds after a claim. `Ok(None)` while
/// it is absent (or empty); `Err` when the document is not well-formed XML.
pub fn online_token(xml: &str) -> anyhow::Result<Option<String>> {
    Ok(attr(xml, "PlexOnlineToken")?.filter(|t| !t.is_empty()))
}

/// The unescaped value of attribute `name` on the root element; `Ok(None)` when the root element
/// lacks it. The whole document is parsed, so a truncated or malformed file is an `Err`.
pub fn attr(xml: &str, name: &str) -> anyhow::Result<Option<String>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut found: Option<Option<String>> = None;
    let mut depth = 0usize;
    loop {
        let event = reader.read_event().with_context(|| {
            format!(
                "Preferences.xml is not well-formed XML (near byte {})",
                reader.buffer_position()
            )
        })?;
        let (root, opens) = match &event {
            Event::Start(e) => (depth == 0)
                .then_some(e)
                .map_or((None, true), |e| (Some(e), true)),
            Event::Empty(e) => ((depth == 0).then_some(e), false),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                (None, false)
            }
            Event::Eof => break,
            _ => (None, false),
        };
        if let Some(e) = root {
            if found.is_some() {
                bail!("Preferences.xml has more than one root element");
            }
            found = Some(root_attr(e, name)?);
        }
        if opens {
            depth += 1;
        }
    }
    if depth != 0 {
        bail!("Preferences.xml is truncated: the root element is not closed");
    }
    match found {
        Some(v) => Ok(v),
        None => bail!("Preferences.xml has no root element"),
    }
}

fn root_attr(e: &BytesStart<'_>, name: &str) -> anyhow::Result<Option<String>> {
    let mut value = None;
    // With checks on, duplicate or unquoted attributes are errors, not guesses.
    for a in e.attributes().with_checks(true) {
        let a = a.context("Preferences.xml has a malformed attribute")?;
        if a.key.as_ref() == name {
            let v = a
                .normalized_value(XmlVersion::Implicit1_0)
                .with_context(|| format!("Preferences.xml: bad escape in attribute {name}"))?;
            value = Some(v.into_owned());
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<Preferences OldestPreviousVersion="1.32.5.7349-8f4248874" MachineIdentifier="27d0d69e-7851-4f42-8d87-1f7deb109e43" ProcessedMachineIdentifier="e59a3c2ab3611dc8357e15fd578e338e80bd16c5" AcceptedEULA="1" PlexOnlineToken="tok&amp;en-123" PlexOnlineUsername="me" TranscoderTempDirectory="/transcode"/>
"#;

    #[test]
    fn token_is_unescaped() {
        assert_eq!(online_token(REAL).unwrap().as_deref(), Some("tok&en-123"));
    }

    #[test]
    fn other_attributes() {
        assert_eq!(
            attr(REAL, "ProcessedMachineIdentifier").unwrap().as_deref(),
            Some("e59a3c2ab3611dc8357e15fd578e338e80bd16c5")
        );
        assert_eq!(attr(REAL, "Nope").unwrap(), None);
    }

    #[test]
    fn missing_or_empty_token_is_none() {
        let fresh = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences/>\n";
        assert_eq!(online_token(fresh).unwrap(), None);
        let empty = r#"<Preferences MachineIdentifier="x" PlexOnlineToken=""/>"#;
        assert_eq!(online_token(empty).unwrap(), None);
    }

    #[test]
    fn start_end_root_works_too() {
        let xml = r#"<Preferences PlexOnlineToken="a&lt;b&quot;c"></Preferences>"#;
        assert_eq!(online_token(xml).unwrap().as_deref(), Some("a<b\"c"));
    }

    #[test]
    fn byte_order_mark_and_crlf_are_fine() {
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<Preferences\r\n PlexOnlineToken=\"abc\"/>\r\n";
        assert_eq!(online_token(xml).unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in [
            "",
            "   \n",
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<Preferences PlexOnlineToken="abc"#,
            r#"<Preferences PlexOnlineToken="abc">"#,
            r#"<Preferences PlexOnlineToken=abc/>"#,
            r#"<Preferences PlexOnlineToken="a" PlexOnlineToken="b"/>"#,
            r#"<Preferences PlexOnlineToken="a&bogus;b"/>"#,
            r#"<Preferences/><Preferences/>"#,
            r#"<Preferences></Other>"#,
        ] {
            assert!(online_token(bad).is_err(), "accepted {bad:?}");
        }
    }
}

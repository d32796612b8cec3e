//! `Preferences.xml`: read attributes (the server's `PlexOnlineToken`, identifiers) with an XML
//! parser, and edit a few of them in place (`set_attrs`, for putting settings back with Plex
//! stopped).
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
    Ok(root(xml)?.1.remove(name))
}

/// The root element's attributes by name, unescaped.
pub type Attrs = std::collections::BTreeMap<String, String>;

/// Every attribute of the root element, unescaped.
pub fn attrs(xml: &str) -> anyhow::Result<Attrs> {
    Ok(root(xml)?.1)
}

/// The byte range of the root element's start tag (`<` to `>`) and its attributes, unescaped.
/// The whole document is parsed: a truncated or malformed file is an `Err`.
fn root(xml: &str) -> anyhow::Result<(std::ops::Range<usize>, Attrs)> {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut found = None;
    let mut depth = 0usize;
    loop {
        let start = reader.buffer_position() as usize;
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
            let end = reader.buffer_position() as usize;
            found = Some((tag_range(xml, start..end)?, root_attrs(e)?));
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

/// The parser's positions for the root start tag as byte offsets into `xml`: it counts from after
/// a byte order mark it skipped, so they may be short by the mark's length.
fn tag_range(xml: &str, at: std::ops::Range<usize>) -> anyhow::Result<std::ops::Range<usize>> {
    let bom = if xml.starts_with('\u{feff}') { 3 } else { 0 };
    [0, bom]
        .into_iter()
        .map(|shift| at.start + shift..at.end + shift)
        .find(|r| {
            xml.get(r.clone())
                .is_some_and(|t| t.starts_with('<') && t.ends_with('>'))
        })
        .context("internal: cannot locate the root element of Preferences.xml")
}

fn root_attrs(e: &BytesStart<'_>) -> anyhow::Result<Attrs> {
    let mut out = Attrs::new();
    // With checks on, duplicate or unquoted attributes are errors, not guesses.
    for a in e.attributes().with_checks(true) {
        let a = a.context("Preferences.xml has a malformed attribute")?;
        let name = a.key.as_ref().to_string();
        let v = a
            .normalized_value(XmlVersion::Implicit1_0)
            .with_context(|| format!("Preferences.xml: bad escape in attribute {name}"))?;
        out.insert(name, v.into_owned());
    }
    Ok(out)
}

/// One attribute of the root start tag as it is written: the whitespace before it starts at
/// `lead`, its value (between the quotes) is `value`, and it ends after the closing quote.
struct Span {
    name: String,
    lead: usize,
    value: std::ops::Range<usize>,
}

/// `xml` with the root element's attributes changed as `edits` say (`Some(v)`: set to `v`,
/// added after the last attribute when absent; `None`: removed), and every other byte as it was:
/// the declaration, the other attributes (the server's token among them), their order, quoting
/// and spacing. Nothing else is rewritten, so Plex reads back exactly what it wrote, plus these.
pub fn set_attrs(xml: &str, edits: &[(String, Option<String>)]) -> anyhow::Result<String> {
    let (tag, _) = root(xml)?;
    let spans = attr_spans(xml, tag.clone())?;
    // After the last attribute, or after the element name when there is none.
    let append_at = spans.last().map(|s| s.value.end + 1).unwrap_or_else(|| {
        tag.start
            + 1
            + xml[tag.start + 1..tag.end]
                .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
                .unwrap_or(0)
    });
    let mut patches: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut appended = String::new();
    for (name, value) in edits {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bail!("{name:?} is not an attribute name plexburst writes in Preferences.xml");
        }
        let escaped = value.as_deref().map(quick_xml::escape::escape);
        match (spans.iter().find(|s| &s.name == name), escaped) {
            (Some(s), Some(v)) => patches.push((s.value.clone(), v.into_owned())),
            (Some(s), None) => patches.push((s.lead..s.value.end + 1, String::new())),
            (None, Some(v)) => appended.push_str(&format!(" {name}=\"{v}\"")),
            (None, None) => {}
        }
    }
    if !appended.is_empty() {
        patches.push((append_at..append_at, appended));
    }
    // From the end, so the earlier ranges still point where they did.
    patches.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = xml.to_string();
    for (range, text) in patches {
        out.replace_range(range, &text);
    }
    Ok(out)
}

/// The attributes of the root start tag at `tag` (already checked well-formed by the parser),
/// with the byte ranges `set_attrs` edits.
fn attr_spans(xml: &str, tag: std::ops::Range<usize>) -> anyhow::Result<Vec<Span>> {
    let b = xml.as_bytes();
    let mut i = tag.start + 1;
    while i < tag.end && !(b[i].is_ascii_whitespace() || b[i] == b'/' || b[i] == b'>') {
        i += 1;
    }
    let mut spans = Vec::new();
    loop {
        let lead = i;
        while i < tag.end && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= tag.end || b[i] == b'/' || b[i] == b'>' {
            return Ok(spans);
        }
        let name_start = i;
        while i < tag.end && !(b[i].is_ascii_whitespace() || b[i] == b'=') {
            i += 1;
        }
        let name = xml[name_start..i].to_string();
        while i < tag.end && (b[i].is_ascii_whitespace() || b[i] == b'=') {
            i += 1;
        }
        let quote = *b
            .get(i)
            .filter(|q| **q == b'"' || **q == b'\'')
            .with_context(|| format!("Preferences.xml: attribute {name} is not quoted"))?;
        let value_start = i + 1;
        let len = xml[value_start..tag.end]
            .bytes()
            .position(|c| c == quote)
            .with_context(|| format!("Preferences.xml: attribute {name} is not closed"))?;
        i = value_start + len + 1;
        spans.push(Span {
            name,
            lead,
            value: value_start..value_start + len,
        });
    }
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

    fn set(xml: &str, edits: &[(&str, Option<&str>)]) -> String {
        let edits: Vec<(String, Option<String>)> = edits
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .collect();
        set_attrs(xml, &edits).unwrap()
    }

    #[test]
    fn set_attrs_changes_only_the_named_attributes() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences MachineIdentifier=\"m-1\" autoEmptyTrash=\"0\" PlexOnlineToken=\"tok&amp;en-123\"  GenerateIntroMarkerBehavior='never' FriendlyName=\"a &lt;b&gt;\"/>\n";
        let out = set(
            xml,
            &[
                // Back to its default: Plex keeps no attribute for it.
                ("autoEmptyTrash", None),
                ("GenerateIntroMarkerBehavior", Some("asap")),
                ("MusicAnalysisBehavior", Some("sched\"ul&ed")),
                ("NeverThere", None),
            ],
        );
        assert_eq!(
            out,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences MachineIdentifier=\"m-1\" PlexOnlineToken=\"tok&amp;en-123\"  GenerateIntroMarkerBehavior='asap' FriendlyName=\"a &lt;b&gt;\" MusicAnalysisBehavior=\"sched&quot;ul&amp;ed\"/>\n"
        );
        let back = attrs(&out).unwrap();
        assert_eq!(back["MusicAnalysisBehavior"], "sched\"ul&ed");
        assert_eq!(back["PlexOnlineToken"], "tok&en-123");
        assert!(!back.contains_key("autoEmptyTrash"));
        // No edit, no change: not a byte moves.
        assert_eq!(set(xml, &[]), xml);
        assert_eq!(set(xml, &[("NeverThere", None)]), xml);
    }

    #[test]
    fn set_attrs_on_an_empty_root_a_start_end_root_and_crlf() {
        let fresh = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences/>\n";
        assert_eq!(
            set(fresh, &[("autoEmptyTrash", Some("0"))]),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences autoEmptyTrash=\"0\"/>\n"
        );
        let pair = "<Preferences a=\"1\"></Preferences>";
        assert_eq!(
            set(pair, &[("a", None), ("b", Some("2"))]),
            "<Preferences b=\"2\"></Preferences>"
        );
        let crlf = "\u{feff}<?xml version=\"1.0\"?>\r\n<Preferences\r\n a=\"1\"\r\n b=\"2\"/>\r\n";
        assert_eq!(
            set(crlf, &[("a", Some("3"))]),
            "\u{feff}<?xml version=\"1.0\"?>\r\n<Preferences\r\n a=\"3\"\r\n b=\"2\"/>\r\n"
        );
    }

    #[test]
    fn set_attrs_refuses_a_malformed_file_and_odd_names() {
        let edit = vec![("a".to_string(), Some("1".to_string()))];
        assert!(set_attrs("<Preferences a=\"1\"", &edit).is_err());
        let bad = vec![("a b".to_string(), Some("1".to_string()))];
        assert!(set_attrs("<Preferences/>", &bad).is_err());
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

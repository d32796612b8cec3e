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
    /// The next attribute follows the closing quote with no white space in between.
    joined: bool,
}

/// `xml` with the root element's attributes changed as `edits` say (`Some(v)`: set to `v`,
/// added after the last attribute when absent; `None`: removed), and every other byte as it was:
/// the declaration, the other attributes (the server's token among them), their order, quoting
/// and spacing. Nothing else is rewritten, so Plex reads back exactly what it wrote, plus these.
pub fn set_attrs(xml: &str, edits: &[(String, Option<String>)]) -> anyhow::Result<String> {
    let (tag, _) = root(xml)?;
    let (name_end, spans) = attr_spans(xml, tag)?;
    // After the last attribute, or after the element name when there is none.
    let append_at = spans.last().map(|s| s.value.end + 1).unwrap_or(name_end);
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
            // The parser takes attributes with no space between them: keep the next one apart.
            (Some(s), None) => {
                let gap = if s.joined { " " } else { "" };
                patches.push((s.lead..s.value.end + 1, gap.to_string()))
            }
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

/// XML's white space, as the parser counts it (no form feed, unlike `is_ascii_whitespace`).
fn xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Where the element name of the root start tag at `tag` (already checked well-formed by the
/// parser) ends, and its attributes with the byte ranges `set_attrs` edits. Names are cut where
/// the parser cuts them: an element name at white space only, so a `/` or `=` inside a
/// (malformed) one is part of the name; an attribute name after its first byte, at `=` or white
/// space.
fn attr_spans(xml: &str, tag: std::ops::Range<usize>) -> anyhow::Result<(usize, Vec<Span>)> {
    let b = xml.as_bytes();
    // The tag's inside: after `<`, before `>` or the `/>` of an empty element.
    let end = if xml[..tag.end].ends_with("/>") {
        tag.end - 2
    } else {
        tag.end - 1
    };
    let mut i = tag.start + 1;
    while i < end && !xml_space(b[i]) {
        i += 1;
    }
    let name_end = i;
    let mut spans = Vec::new();
    loop {
        let lead = i;
        while i < end && xml_space(b[i]) {
            i += 1;
        }
        if i >= end {
            return Ok((name_end, spans));
        }
        // The parser takes the first byte as part of the name whatever it is (even `=`).
        let name_start = i;
        i += 1;
        while i < end && !(xml_space(b[i]) || b[i] == b'=') {
            i += 1;
        }
        let name = xml[name_start..i].to_string();
        while i < end && (xml_space(b[i]) || b[i] == b'=') {
            i += 1;
        }
        let quote = *b
            .get(i)
            .filter(|q| **q == b'"' || **q == b'\'')
            .with_context(|| format!("Preferences.xml: attribute {name} is not quoted"))?;
        let value_start = i + 1;
        let len = xml[value_start..end]
            .bytes()
            .position(|c| c == quote)
            .with_context(|| format!("Preferences.xml: attribute {name} is not closed"))?;
        i = value_start + len + 1;
        spans.push(Span {
            name,
            lead,
            value: value_start..value_start + len,
            joined: i < end && !xml_space(b[i]),
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

    /// Found by the `plex_xml` fuzz target: the editor cut names where the parser does not (an
    /// element name at `/` or a form feed, an attribute name starting with `=`), so an edit
    /// landed inside a name and the file it wrote no longer parsed, or no edit was possible.
    #[test]
    fn set_attrs_cuts_the_element_name_where_the_parser_does() {
        for xml in [
            r#"<PrefereanDirectory="/transcode"/>"#,
            "<Preferences\x0cA=\"1\"/>",
            r#"<?xml version="1.0"?><P/a="x"></P/a="x">"#,
        ] {
            assert!(attrs(xml).unwrap().is_empty(), "{xml:?} has attributes");
            let out = set_attrs(xml, &[("A".into(), Some("2".into()))]).unwrap();
            let got = attrs(&out).unwrap_or_else(|e| panic!("{xml:?} -> {out:?}: {e:#}"));
            assert_eq!(
                got,
                Attrs::from([("A".to_string(), "2".to_string())]),
                "{out:?}"
            );
        }
        // An attribute name may start with `=` as far as the parser is concerned.
        let xml = r#"<Preferences =Y="1"/>"#;
        assert_eq!(attrs(xml).unwrap()["=Y"], "1");
        assert_eq!(set_attrs(xml, &[]).unwrap(), xml);
        let out = set_attrs(xml, &[("A".into(), Some("2".into()))]).unwrap();
        assert_eq!(out, r#"<Preferences =Y="1" A="2"/>"#);
        // Attributes with no space between them: removing one keeps the next apart from the name.
        let xml = r#"<Preferences A="1"B="2"/>"#;
        let out = set_attrs(xml, &[("A".into(), None)]).unwrap();
        assert_eq!(out, r#"<Preferences B="2"/>"#);
    }
}

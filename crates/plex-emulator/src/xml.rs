//! Escaping text for XML attribute values, shared by the HTTP responses, `Preferences.xml` and the
//! Metadata bundles' `Info.xml`. It imports nothing from the crate so every layer may use it.

/// Escape `s` for a double-quoted XML attribute value. Newlines become `&#10;` so a value
/// survives an XML parser's attribute-value normalisation unchanged.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_newlines() {
        assert_eq!(
            xml_escape("a&b <c> \"d\" 'e'\nf"),
            "a&amp;b &lt;c&gt; &quot;d&quot; &apos;e&apos;&#10;f"
        );
    }
}

//! `Preferences.xml`: reading the root's attributes never panics, a document the reader refuses
//! is refused by the editor too, an edit with no changes gives back every byte, and after
//! `set_attrs` the reader sees exactly the old attributes with the edits applied.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexburst::plex::xml;

/// The names `set_attrs` accepts (plexburst only writes such names).
fn writable(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = xml::online_token(text);
    let Ok(before) = xml::attrs(text) else {
        assert!(
            xml::set_attrs(text, &[]).is_err(),
            "edited what it cannot read"
        );
        return;
    };
    assert_eq!(xml::set_attrs(text, &[]).expect("no edits"), text);

    // Change the first writable attribute, remove the last one, add two (one needing escapes).
    let names: Vec<&String> = before.keys().filter(|n| writable(n)).collect();
    let mut edits: Vec<(String, Option<String>)> = Vec::new();
    if let Some(first) = names.first() {
        edits.push(((*first).clone(), Some("edited".into())));
    }
    if names.len() > 1 {
        edits.push((names[names.len() - 1].clone(), None));
    }
    for (name, value) in [("PlexburstFuzzA", "tok&en\"<x>'"), ("PlexburstFuzzB", "1")] {
        if !before.contains_key(name) {
            edits.push((name.into(), Some(value.into())));
        }
    }
    let out = xml::set_attrs(text, &edits).expect("valid edits of a readable document");
    let after = xml::attrs(&out).unwrap_or_else(|e| panic!("{e:#}: {out}"));
    let mut expected = before.clone();
    for (name, value) in &edits {
        match value {
            Some(v) => expected.insert(name.clone(), v.clone()),
            None => expected.remove(name),
        };
    }
    assert_eq!(after, expected, "{out}");
});

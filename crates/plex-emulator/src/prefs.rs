//! Server settings: the 155 real prefs (ids, types, defaults from a real `GET /:/prefs` dump,
//! plex.md §3) plus the three pufky-only behaviour prefs, persisted in `Preferences.xml` (§6).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The PMS version the emulator reports (a real 1.41 build string, plex.md §4 `/identity`). It
/// lives here because the first run records it in Preferences.xml as `OldestPreviousVersion`, as
/// pms-docker's first run does.
pub const VERSION: &str = "1.41.6.9685-d301f511a";

/// The real dump (plex-api.rs `tests/mocks/server/prefs.json`, copied from the shared fixtures).
const REAL_PREFS: &str = include_str!("../data/real-pms-prefs.json");

const BEHAVIOR_ENUM: &str =
    "never:never|scheduled:as a scheduled task|asap:as a scheduled task and when media is added";

/// Behaviour prefs that current PMS has but the 2022 dump lacks (pufky `config.md`, plex.md §3.2).
const ADDED_PREFS: &[(&str, &str, &str)] = &[
    (
        "GenerateCreditsMarkerBehavior",
        "Generate credits video markers",
        "asap",
    ),
    (
        "GenerateAdMarkerBehavior",
        "Generate ad video markers",
        "scheduled",
    ),
    (
        "GenerateVADBehavior",
        "Generate voice activity data",
        "scheduled",
    ),
];

/// One setting's definition as served by `GET /:/prefs`.
#[derive(Debug, Clone)]
pub struct PrefDef {
    pub id: String,
    pub label: String,
    pub summary: String,
    /// `text`, `bool`, `int` or `double`.
    pub kind: String,
    /// Canonical text form (bools as `1`/`0`, as Preferences.xml stores them).
    pub default: String,
    pub hidden: bool,
    pub advanced: bool,
    pub group: String,
    pub enum_values: Option<String>,
}

/// Parse the embedded dump plus the added behaviour prefs.
pub fn definitions() -> Vec<PrefDef> {
    let v: serde_json::Value = serde_json::from_str(REAL_PREFS).expect("embedded prefs JSON");
    let mut defs: Vec<PrefDef> = v["MediaContainer"]["Setting"]
        .as_array()
        .expect("Setting array")
        .iter()
        .map(|s| PrefDef {
            id: s["id"].as_str().unwrap_or_default().to_string(),
            label: s["label"].as_str().unwrap_or_default().to_string(),
            summary: s["summary"].as_str().unwrap_or_default().to_string(),
            kind: s["type"].as_str().unwrap_or("text").to_string(),
            default: canonical_json(&s["default"]),
            hidden: s["hidden"].as_bool().unwrap_or(false),
            advanced: s["advanced"].as_bool().unwrap_or(false),
            group: s["group"].as_str().unwrap_or_default().to_string(),
            enum_values: s["enumValues"].as_str().map(str::to_string),
        })
        .collect();
    for (id, label, default) in ADDED_PREFS {
        if !defs.iter().any(|d| d.id == *id) {
            defs.push(PrefDef {
                id: id.to_string(),
                label: label.to_string(),
                summary: String::new(),
                kind: "text".into(),
                default: default.to_string(),
                hidden: false,
                advanced: true,
                group: "library".into(),
                enum_values: Some(BEHAVIOR_ENUM.into()),
            });
        }
    }
    defs
}

fn canonical_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl PrefDef {
    /// Enum keys, when this pref is restricted to them. Only behaviour prefs and int enums are
    /// enforced: text enums such as `PreferredNetworkInterface` list machine-specific choices.
    fn allowed(&self) -> Option<Vec<&str>> {
        let e = self.enum_values.as_deref()?;
        if !(self.kind == "int" || self.id.ends_with("Behavior")) {
            return None;
        }
        let keys: Vec<&str> = e
            .split('|')
            .map(|kv| kv.split(':').next().unwrap_or(kv))
            .collect();
        keys.contains(&self.default.as_str()).then_some(keys)
    }

    /// Check a raw value from `PUT /:/prefs` and return its canonical form.
    pub fn validate(&self, raw: &str) -> Result<String, String> {
        let bad = || format!("invalid value {raw:?} for {} (type {})", self.id, self.kind);
        let canon = match self.kind.as_str() {
            "bool" => match raw.to_ascii_lowercase().as_str() {
                "1" | "true" => "1".to_string(),
                "0" | "false" => "0".to_string(),
                _ => return Err(bad()),
            },
            "int" => raw.trim().parse::<i64>().map_err(|_| bad())?.to_string(),
            "double" => {
                raw.trim().parse::<f64>().map_err(|_| bad())?;
                raw.trim().to_string()
            }
            _ => raw.to_string(),
        };
        if let Some(keys) = self.allowed()
            && !keys.contains(&canon.as_str())
        {
            return Err(format!("{} (allowed: {})", bad(), keys.join(", ")));
        }
        Ok(canon)
    }

    /// The canonical value as JSON, typed as Plex serves it.
    pub fn json_value(&self, canon: &str) -> serde_json::Value {
        match self.kind.as_str() {
            "bool" => serde_json::Value::Bool(canon == "1"),
            "int" => canon
                .parse::<i64>()
                .map(Into::into)
                .unwrap_or(serde_json::Value::Null),
            "double" => canon
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::String(canon.to_string()),
        }
    }
}

/// Settings plus the identity attributes, mirrored to Preferences.xml on every change.
pub struct Prefs {
    pub defs: Vec<PrefDef>,
    index: HashMap<String, usize>,
    /// Every attribute of Preferences.xml (pref values that differ from default, identity, token).
    attrs: BTreeMap<String, String>,
    path: PathBuf,
}

impl Prefs {
    /// Load Preferences.xml (creating identity on first run like pms-docker `40-plex-first-run`).
    pub fn load(path: &Path) -> anyhow::Result<Prefs> {
        let defs = definitions();
        let index = defs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        let attrs = if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_xml_attrs(&text).with_context(|| format!("parsing {}", path.display()))?
        } else {
            BTreeMap::new()
        };
        let mut p = Prefs {
            defs,
            index,
            attrs,
            path: path.to_path_buf(),
        };
        if !p.attrs.contains_key("MachineIdentifier") {
            let mid = uuid::Uuid::new_v4().to_string();
            let processed = sha1_hex(format!("{mid}- Plex Media Server").as_bytes());
            p.attrs.insert("MachineIdentifier".into(), mid);
            p.attrs
                .insert("ProcessedMachineIdentifier".into(), processed);
            p.attrs.insert(
                "AnonymousMachineIdentifier".into(),
                uuid::Uuid::new_v4().to_string(),
            );
            p.attrs
                .insert("TranscoderTempDirectory".into(), "/transcode".into());
            p.attrs
                .insert("OldestPreviousVersion".into(), VERSION.into());
            p.attrs.insert("AcceptedEULA".into(), "1".into());
            p.save()?;
        }
        Ok(p)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    pub fn set_attr(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        self.attrs.insert(name.into(), value.into());
        self.save()
    }

    pub fn def(&self, id: &str) -> Option<&PrefDef> {
        self.index.get(id).map(|i| &self.defs[*i])
    }

    /// Canonical current value of a pref (its default when not stored).
    pub fn get(&self, id: &str) -> Option<String> {
        let d = self.def(id)?;
        Some(
            self.attrs
                .get(id)
                .cloned()
                .unwrap_or_else(|| d.default.clone()),
        )
    }

    pub fn get_bool(&self, id: &str) -> bool {
        self.get(id).as_deref() == Some("1")
    }

    /// Apply a `PUT /:/prefs`: all or nothing (an unknown id or a bad value rejects every change).
    pub fn apply(&mut self, changes: &[(String, String)]) -> Result<(), String> {
        let mut checked = Vec::new();
        for (id, raw) in changes {
            let d = self
                .def(id)
                .ok_or_else(|| format!("Attempt to set a preference that doesn't exist: {id}"))?;
            checked.push((id.clone(), d.validate(raw)?, d.default.clone()));
        }
        for (id, canon, default) in checked {
            if canon == default {
                self.attrs.remove(&id);
            } else {
                self.attrs.insert(id, canon);
            }
        }
        self.save().map_err(|e| format!("{e:#}"))
    }

    fn save(&self) -> anyhow::Result<()> {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences");
        for (k, v) in &self.attrs {
            out.push_str(&format!(" {k}=\"{}\"", crate::xml::xml_escape(v)));
        }
        out.push_str("/>\n");
        let tmp = self.path.with_extension("xml.tmp");
        std::fs::write(&tmp, out).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))
    }
}

/// The attributes of the root element of a Preferences.xml document.
pub fn parse_xml_attrs(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut reader = quick_xml::Reader::from_str(text);
    loop {
        match reader.read_event()? {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let mut out = BTreeMap::new();
                for a in e.attributes() {
                    let a = a?;
                    let key = a.key.into_inner().to_string();
                    let val = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)?
                        .into_owned();
                    out.insert(key, val);
                }
                return Ok(out);
            }
            quick_xml::events::Event::Eof => anyhow::bail!("no root element"),
            _ => {}
        }
    }
}

/// SHA-1 is what pms-docker uses for ProcessedMachineIdentifier; sha2 has no SHA-1, so this is a
/// small textbook implementation (identity only, not security).
pub fn sha1_hex(data: &[u8]) -> String {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                chunk[4 * i],
                chunk[4 * i + 1],
                chunk[4 * i + 2],
                chunk[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let (mut a, mut b, mut c, mut d, mut e) = (h[0], h[1], h[2], h[3], h[4]);
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
        h[4] = h[4].wrapping_add(e);
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_matches_known_vector() {
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn behaviour_prefs_reject_unknown_values() {
        let defs = definitions();
        let d = defs
            .iter()
            .find(|d| d.id == "MusicAnalysisBehavior")
            .unwrap();
        assert_eq!(d.validate("asap").unwrap(), "asap");
        assert!(d.validate("sometimes").is_err());
        let b = defs.iter().find(|d| d.id == "autoEmptyTrash").unwrap();
        assert_eq!(b.validate("false").unwrap(), "0");
        assert!(b.validate("maybe").is_err());
        assert!(defs.iter().any(|d| d.id == "GenerateVADBehavior"));
    }
}

//! Scaleway credentials and defaults, read exactly as the `scw` CLI reads them (scaleway.md §1):
//! the config file (`SCW_CONFIG_PATH`, else `$XDG_CONFIG_HOME/scw/config.yaml`, else
//! `~/.config/scw/config.yaml`, with `config.yml` as a fallback for the default paths), the
//! profile (`SCW_PROFILE` > `active_profile` > the root keys), a named profile merged over the
//! root, then the `SCW_*` environment (legacy aliases included) over the file, and the CLI's final
//! fallbacks (`fr-par`, `fr-par-1`, `https://api.scaleway.com`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The secret key, masked in Debug output; sent only in `X-Auth-Token`.
#[derive(Clone)]
pub struct SecretKey(pub(super) String);

impl SecretKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// What the run talks to Scaleway with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key: Option<String>,
    pub secret_key: SecretKey,
    pub organization_id: Option<String>,
    pub project_id: Option<String>,
    pub region: String,
    pub zone: String,
    pub api_url: String,
    /// Where each part came from, in words (`profile "work" of /home/me/.config/scw/config.yaml,
    /// SCW_SECRET_KEY from the environment`): for messages, never a value.
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the Scaleway config {path}: {detail}")]
    Unreadable { path: String, detail: String },
    #[error(
        "the Scaleway profile {name:?} (from {from}) is not in {path}; profiles there: {known}"
    )]
    UnknownProfile {
        name: String,
        from: String,
        path: String,
        known: String,
    },
    #[error(
        "no Scaleway secret key: set SCW_SECRET_KEY (and SCW_DEFAULT_PROJECT_ID), or create {path} with `scw init`"
    )]
    NoSecret { path: String },
}

#[derive(Debug, Default, Clone, Deserialize)]
struct RawProfile {
    access_key: Option<String>,
    secret_key: Option<String>,
    default_organization_id: Option<String>,
    default_project_id: Option<String>,
    default_region: Option<String>,
    default_zone: Option<String>,
    api_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawFile {
    #[serde(flatten)]
    root: RawProfile,
    active_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
}

fn merge(base: RawProfile, over: RawProfile) -> RawProfile {
    RawProfile {
        access_key: over.access_key.or(base.access_key),
        secret_key: over.secret_key.or(base.secret_key),
        default_organization_id: over
            .default_organization_id
            .or(base.default_organization_id),
        default_project_id: over.default_project_id.or(base.default_project_id),
        default_region: over.default_region.or(base.default_region),
        default_zone: over.default_zone.or(base.default_zone),
        api_url: over.api_url.or(base.api_url),
    }
}

/// The config file's path, and whether the user named it (no `config.yml` fallback then).
fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<(PathBuf, bool)> {
    if let Some(p) = env("SCW_CONFIG_PATH").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let base = env("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some((base.join("scw").join("config.yaml"), false))
}

fn first(env: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| {
        env(n)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (n.to_string(), v.trim().to_string()))
    })
}

/// The region of the CLI's legacy names (`par1` -> `fr-par`).
fn region_alias(r: &str) -> String {
    match r {
        "par1" => "fr-par".into(),
        "ams1" => "nl-ams".into(),
        other => other.into(),
    }
}

/// Load the credentials. `env` reads the environment (a map in tests).
pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, CredentialsError> {
    let path = config_path(env);
    let mut origin = Vec::new();
    let mut file_profile = RawProfile::default();
    let mut shown_path = path
        .as_ref()
        .map(|(p, _)| p.display().to_string())
        .unwrap_or_else(|| "~/.config/scw/config.yaml".into());
    if let Some((p, named)) = &path {
        let candidates: Vec<PathBuf> = if *named {
            vec![p.clone()]
        } else {
            vec![p.clone(), p.with_extension("yml")]
        };
        let found = candidates.into_iter().find(|c| c.exists());
        if let Some(found) = found {
            shown_path = found.display().to_string();
            let text =
                std::fs::read_to_string(&found).map_err(|e| CredentialsError::Unreadable {
                    path: shown_path.clone(),
                    detail: e.to_string(),
                })?;
            let raw: RawFile = if text.trim().is_empty() {
                RawFile::default()
            } else {
                serde_yaml::from_str(&text).map_err(|e| CredentialsError::Unreadable {
                    path: shown_path.clone(),
                    detail: e.to_string(),
                })?
            };
            let (name, from) = match (
                env("SCW_PROFILE").filter(|p| !p.is_empty()),
                &raw.active_profile,
            ) {
                (Some(p), _) => (p, "SCW_PROFILE".to_string()),
                (None, Some(a)) if !a.is_empty() => (a.clone(), "active_profile".to_string()),
                _ => ("default".to_string(), String::new()),
            };
            file_profile = if name == "default" {
                raw.root.clone()
            } else {
                match raw.profiles.get(&name) {
                    Some(p) => merge(raw.root.clone(), p.clone()),
                    None => {
                        return Err(CredentialsError::UnknownProfile {
                            name,
                            from,
                            path: shown_path,
                            known: raw.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
                        });
                    }
                }
            };
            origin.push(format!("profile {name:?} of {shown_path}"));
        }
    }
    let mut p = file_profile;
    let mut from_env = Vec::new();
    let mut take = |slot: &mut Option<String>, names: &[&str]| {
        if let Some((n, v)) = first(env, names) {
            *slot = Some(v);
            from_env.push(n);
        }
    };
    take(&mut p.access_key, &["SCW_ACCESS_KEY"]);
    take(
        &mut p.secret_key,
        &[
            "SCW_SECRET_KEY",
            "SCW_TOKEN",
            "SCALEWAY_TOKEN",
            "SCALEWAY_ACCESS_KEY",
        ],
    );
    take(
        &mut p.default_organization_id,
        &[
            "SCW_DEFAULT_ORGANIZATION_ID",
            "SCW_ORGANIZATION",
            "SCALEWAY_ORGANIZATION",
        ],
    );
    take(&mut p.default_project_id, &["SCW_DEFAULT_PROJECT_ID"]);
    take(
        &mut p.default_region,
        &["SCW_DEFAULT_REGION", "SCW_REGION", "SCALEWAY_REGION"],
    );
    take(&mut p.default_zone, &["SCW_DEFAULT_ZONE"]);
    take(&mut p.api_url, &["SCW_API_URL"]);
    if !from_env.is_empty() {
        origin.push(format!("{} from the environment", from_env.join(", ")));
    }
    let Some(secret) = p.secret_key.filter(|s| !s.is_empty()) else {
        return Err(CredentialsError::NoSecret { path: shown_path });
    };
    let zone = p.default_zone.unwrap_or_else(|| "fr-par-1".into());
    let region = p
        .default_region
        .map(|r| region_alias(&r))
        .unwrap_or_else(|| {
            // The CLI derives the region from the zone (`fr-par-1` -> `fr-par`).
            zone.rsplit_once('-')
                .map(|(r, _)| r.to_string())
                .unwrap_or_else(|| "fr-par".into())
        });
    Ok(Credentials {
        access_key: p.access_key,
        secret_key: SecretKey(secret),
        organization_id: p.default_organization_id,
        project_id: p.default_project_id,
        region,
        zone,
        api_url: p
            .api_url
            .unwrap_or_else(|| "https://api.scaleway.com".into())
            .trim_end_matches('/')
            .to_string(),
        origin: origin.join("; "),
    })
}

/// `load` with the process environment.
pub fn load_from_env() -> Result<Credentials, CredentialsError> {
    load(&|k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "access_key: SCWROOT\nsecret_key: root-secret\ndefault_project_id: proj-root\ndefault_zone: fr-par-2\nactive_profile: work\nprofiles:\n  work:\n    secret_key: work-secret\n    default_zone: nl-ams-1\n  other:\n    api_url: http://127.0.0.1:9/\n";

    fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    fn dir_with(file: &str, text: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("scw")).unwrap();
        std::fs::write(d.path().join("scw").join(file), text).unwrap();
        d
    }

    #[test]
    fn the_active_profile_is_merged_over_the_root_and_the_env_wins() {
        let d = dir_with("config.yaml", FILE);
        let xdg = d.path().display().to_string();
        let c = load(&env_of(vec![("XDG_CONFIG_HOME", xdg.clone())])).unwrap();
        assert_eq!(c.secret_key.expose(), "work-secret");
        assert_eq!(
            c.access_key.as_deref(),
            Some("SCWROOT"),
            "inherited from the root"
        );
        assert_eq!(c.project_id.as_deref(), Some("proj-root"));
        assert_eq!((c.zone.as_str(), c.region.as_str()), ("nl-ams-1", "nl-ams"));
        assert_eq!(c.api_url, "https://api.scaleway.com");
        assert!(c.origin.contains("profile \"work\""), "{}", c.origin);
        // SCW_PROFILE beats active_profile; SCW_* beats the file; legacy names still count.
        let c = load(&env_of(vec![
            ("XDG_CONFIG_HOME", xdg.clone()),
            ("SCW_PROFILE", "other".into()),
            ("SCW_TOKEN", "legacy-secret".into()),
            ("SCW_REGION", "par1".into()),
        ]))
        .unwrap();
        assert_eq!(c.secret_key.expose(), "legacy-secret");
        assert_eq!(c.api_url, "http://127.0.0.1:9");
        assert_eq!((c.zone.as_str(), c.region.as_str()), ("fr-par-2", "fr-par"));
        assert!(
            c.origin
                .contains("SCW_TOKEN, SCW_REGION from the environment"),
            "{}",
            c.origin
        );
        assert!(
            !format!("{c:?}").contains("legacy-secret"),
            "masked in Debug"
        );
    }

    #[test]
    fn paths_fallbacks_and_errors() {
        // config.yml is read when config.yaml is missing, under the default path only.
        let d = dir_with("config.yml", "secret_key: yml-secret\n");
        let xdg = d.path().display().to_string();
        let c = load(&env_of(vec![("XDG_CONFIG_HOME", xdg.clone())])).unwrap();
        assert_eq!(c.secret_key.expose(), "yml-secret");
        assert_eq!((c.zone.as_str(), c.region.as_str()), ("fr-par-1", "fr-par"));
        let named = d.path().join("scw").join("config.yaml");
        let e = load(&env_of(vec![(
            "SCW_CONFIG_PATH",
            named.display().to_string(),
        )]))
        .unwrap_err();
        assert!(matches!(e, CredentialsError::NoSecret { .. }), "{e}");
        assert!(e.to_string().contains("SCW_SECRET_KEY"), "{e}");
        let d = dir_with("config.yaml", FILE);
        let e = load(&env_of(vec![
            ("XDG_CONFIG_HOME", d.path().display().to_string()),
            ("SCW_PROFILE", "nope".into()),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("profiles there: other, work"), "{e}");
        let d = dir_with("config.yaml", "secret_key: [unclosed\n");
        let e = load(&env_of(vec![(
            "XDG_CONFIG_HOME",
            d.path().display().to_string(),
        )]))
        .unwrap_err();
        assert!(matches!(e, CredentialsError::Unreadable { .. }), "{e}");
    }
}

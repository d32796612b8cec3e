//! IAM (scaleway.md §2.12): applications, policies with their rules, API keys, and turning an
//! `X-Auth-Token` into a [`Caller`] carrying the grants of its key's policies. The rest of the
//! world only asks [`World::authorize`] whether a caller may act.

use serde::Deserialize;
use serde_json::Value;

use crate::apierror::ApiError;
use crate::clock::parse;
use crate::model::{ApiKey, Application, Policy, Rule};
use crate::world::{Caller, Grant, Product, World, new_id, string_list};

/// What one permission set grants: a product, and write or only read.
fn permission_set(name: &str) -> Option<(Vec<Product>, bool)> {
    use Product::*;
    Some(match name {
        "AllProductsFullAccess" => (vec![Instance, Block, Iam], true),
        "InstancesFullAccess" => (vec![Instance], true),
        "InstancesReadOnly" => (vec![Instance], false),
        "BlockStorageFullAccess" => (vec![Block], true),
        "BlockStorageReadOnly" => (vec![Block], false),
        "IAMManager" => (vec![Iam], true),
        "IAMReadOnly" => (vec![Iam], false),
        // Known names whose products the emulator does not serve: accepted, grant nothing here.
        "SSHKeysFullAccess" | "ObjectStorageFullAccess" | "ObjectStorageReadOnly" => {
            (vec![], false)
        }
        _ => return None,
    })
}

/// Sets scoped to the organization rather than projects (§2.12).
fn organization_scoped(name: &str) -> bool {
    matches!(name, "IAMManager" | "IAMReadOnly")
}

/// `SCW` and 17 characters of [A-Z0-9], the shape SDKs check (scaleway-core `is_access_key`).
fn new_access_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let tail: String = (0..17)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("SCW{tail}")
}

#[derive(Debug, Default, Deserialize)]
pub struct RuleSpec {
    pub permission_set_names: Option<Vec<String>>,
    pub project_ids: Option<Vec<String>>,
    pub organization_id: Option<String>,
    pub condition: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CreatePolicy {
    pub name: Option<String>,
    pub description: Option<String>,
    pub organization_id: Option<String>,
    pub rules: Option<Vec<RuleSpec>>,
    pub tags: Option<Vec<String>>,
    pub application_id: Option<String>,
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    pub no_principal: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CreateApiKey {
    pub application_id: Option<String>,
    pub user_id: Option<String>,
    pub expires_at: Option<String>,
    pub default_project_id: Option<String>,
    pub description: Option<String>,
}

impl World {
    /// Who the `X-Auth-Token` belongs to (scaleway.md §1.1), or 401 `denied_authentication`.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(ApiError::DeniedAuthentication {
                method: "unknown_method",
                reason: "invalid_argument",
            });
        };
        if let Some(key) = self.api_keys.values().find(|k| k.secret_key == token) {
            if key.expires_at.is_some_and(|e| e <= self.now()) {
                return Err(ApiError::DeniedAuthentication {
                    method: "api_key",
                    reason: "expired",
                });
            }
            return Ok(Caller::Key {
                access_key: key.access_key.clone(),
                grants: self.grants_of(&key.application_id),
            });
        }
        if self.opts.secret_keys.is_empty() || self.opts.secret_keys.iter().any(|k| k == token) {
            return Ok(Caller::Admin);
        }
        let reason = if uuid::Uuid::parse_str(token).is_ok() {
            "not_found"
        } else {
            "invalid_argument"
        };
        Err(ApiError::DeniedAuthentication {
            method: "api_key",
            reason,
        })
    }

    fn grants_of(&self, application_id: &str) -> Vec<Grant> {
        let mut out = Vec::new();
        for p in self.policies.values() {
            if p.application_id.as_deref() != Some(application_id) {
                continue;
            }
            for r in &p.rules {
                for name in &r.permission_set_names {
                    let Some((products, write)) = permission_set(name) else {
                        continue;
                    };
                    for product in products {
                        out.push(Grant {
                            product,
                            write,
                            projects: r.project_ids.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    fn check_organization(&self, org: Option<&str>) -> Result<String, ApiError> {
        match org {
            None => Ok(self.opts.organization_id.clone()),
            Some(o) if o == self.opts.organization_id => Ok(o.to_string()),
            Some(o) => Err(ApiError::invalid_argument(
                "organization_id",
                "constraint",
                format!("unknown organization {o}"),
            )),
        }
    }

    pub fn create_application(&mut self, body: &Value) -> Result<String, ApiError> {
        let organization_id = self.check_organization(body["organization_id"].as_str())?;
        let now = self.now();
        let id = new_id();
        self.applications.insert(
            id.clone(),
            Application {
                id: id.clone(),
                name: body["name"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("app-{}", &id[..8])),
                description: body["description"].as_str().unwrap_or_default().to_string(),
                organization_id,
                tags: string_list(&body["tags"]),
                created_at: now,
                updated_at: now,
            },
        );
        Ok(id)
    }

    pub fn application(&self, id: &str) -> Result<&Application, ApiError> {
        self.applications
            .get(id)
            .ok_or_else(|| ApiError::not_found("application", id))
    }

    pub fn application_json(&self, a: &Application) -> Value {
        let keys = self
            .api_keys
            .values()
            .filter(|k| k.application_id == a.id)
            .count();
        a.to_json(keys)
    }

    /// Deleting an application deletes its API keys; its policies stay (chosen, README).
    pub fn delete_application(&mut self, id: &str) -> Result<(), ApiError> {
        self.application(id)?;
        self.applications.remove(id);
        self.api_keys.retain(|_, k| k.application_id != id);
        Ok(())
    }

    pub fn create_policy(&mut self, req: CreatePolicy) -> Result<String, ApiError> {
        let organization_id = self.check_organization(req.organization_id.as_deref())?;
        let principals = [
            req.application_id.is_some(),
            req.user_id.is_some(),
            req.group_id.is_some(),
            req.no_principal == Some(true),
        ];
        if principals.iter().filter(|p| **p).count() > 1 {
            return Err(ApiError::invalid_argument(
                "application_id",
                "constraint",
                "give exactly one of application_id, user_id, group_id, no_principal",
            ));
        }
        if req.user_id.is_some() || req.group_id.is_some() {
            return Err(ApiError::invalid_argument(
                if req.user_id.is_some() {
                    "user_id"
                } else {
                    "group_id"
                },
                "constraint",
                "users and groups are not emulated; attach the policy to an application",
            ));
        }
        if let Some(a) = &req.application_id {
            self.application(a)?;
        }
        let mut rules = Vec::new();
        for (i, r) in req.rules.unwrap_or_default().into_iter().enumerate() {
            let names = r.permission_set_names.unwrap_or_default();
            let arg = format!("rules.{i}.permission_set_names");
            if names.is_empty() {
                return Err(ApiError::invalid_argument(
                    &arg,
                    "required",
                    "a rule needs permission sets",
                ));
            }
            for n in &names {
                if permission_set(n).is_none() {
                    return Err(ApiError::invalid_argument(
                        &arg,
                        "constraint",
                        format!("unknown permission set {n:?}"),
                    ));
                }
            }
            let org_scoped = names.iter().any(|n| organization_scoped(n));
            match (&r.project_ids, &r.organization_id) {
                (Some(p), None) if !p.is_empty() => {
                    if org_scoped {
                        return Err(ApiError::invalid_argument(
                            &format!("rules.{i}.project_ids"),
                            "constraint",
                            "IAM permission sets are scoped to the organization, not projects",
                        ));
                    }
                    for pid in p {
                        if !self.projects().contains(pid) {
                            return Err(ApiError::invalid_argument(
                                &format!("rules.{i}.project_ids"),
                                "constraint",
                                format!("unknown project {pid}"),
                            ));
                        }
                    }
                }
                (None, Some(o)) => {
                    self.check_organization(Some(o))?;
                    let project_only = names
                        .iter()
                        .any(|n| !organization_scoped(n) && n != "AllProductsFullAccess");
                    if project_only {
                        return Err(ApiError::invalid_argument(
                            &format!("rules.{i}.organization_id"),
                            "constraint",
                            "these permission sets are scoped to projects; give project_ids",
                        ));
                    }
                }
                _ => {
                    return Err(ApiError::invalid_argument(
                        &format!("rules.{i}"),
                        "constraint",
                        "give exactly one of project_ids or organization_id",
                    ));
                }
            }
            rules.push(Rule {
                id: new_id(),
                permission_set_names: names,
                project_ids: r.project_ids,
                organization_id: r.organization_id,
                condition: r.condition.unwrap_or_default(),
            });
        }
        let now = self.now();
        let id = new_id();
        self.policies.insert(
            id.clone(),
            Policy {
                id: id.clone(),
                name: req.name.unwrap_or_else(|| format!("policy-{}", &id[..8])),
                description: req.description.unwrap_or_default(),
                organization_id,
                tags: req.tags.unwrap_or_default(),
                no_principal: req.application_id.is_none(),
                application_id: req.application_id,
                user_id: None,
                group_id: None,
                rules,
                created_at: now,
                updated_at: now,
            },
        );
        Ok(id)
    }

    pub fn policy(&self, id: &str) -> Result<&Policy, ApiError> {
        self.policies
            .get(id)
            .ok_or_else(|| ApiError::not_found("policy", id))
    }

    pub fn delete_policy(&mut self, id: &str) -> Result<(), ApiError> {
        self.policy(id)?;
        self.policies.remove(id);
        Ok(())
    }

    pub fn create_api_key(&mut self, req: CreateApiKey) -> Result<String, ApiError> {
        if req.user_id.is_some() {
            return Err(ApiError::invalid_argument(
                "user_id",
                "constraint",
                "users are not emulated; create the key for an application",
            ));
        }
        let Some(app) = req.application_id else {
            return Err(ApiError::invalid_argument(
                "application_id",
                "required",
                "give application_id",
            ));
        };
        self.application(&app)?;
        let now = self.now();
        let expires_at = match req.expires_at.as_deref() {
            Some(s) => {
                let t =
                    parse(s).map_err(|e| ApiError::invalid_argument("expires_at", "format", e))?;
                if t <= now {
                    return Err(ApiError::invalid_argument(
                        "expires_at",
                        "constraint",
                        "expires_at must be in the future",
                    ));
                }
                Some(t)
            }
            None => None,
        };
        let default_project_id = req
            .default_project_id
            .unwrap_or_else(|| self.opts.default_project().to_string());
        if !self.projects().contains(&default_project_id) {
            return Err(ApiError::invalid_argument(
                "default_project_id",
                "constraint",
                format!("unknown project {default_project_id}"),
            ));
        }
        let access_key = new_access_key();
        self.api_keys.insert(
            access_key.clone(),
            ApiKey {
                access_key: access_key.clone(),
                secret_key: new_id(),
                application_id: app,
                description: req.description.unwrap_or_default(),
                default_project_id,
                expires_at,
                created_at: now,
                updated_at: now,
            },
        );
        Ok(access_key)
    }

    pub fn api_key(&self, access_key: &str) -> Result<&ApiKey, ApiError> {
        self.api_keys
            .get(access_key)
            .ok_or_else(|| ApiError::not_found("api_key", access_key))
    }

    pub fn delete_api_key(&mut self, access_key: &str) -> Result<(), ApiError> {
        self.api_key(access_key)?;
        self.api_keys.remove(access_key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::options::Options;

    #[test]
    fn policies_scope_keys_to_projects() {
        let mut w = World::new(Options::default());
        let app = w.create_application(&json!({"name": "run"})).unwrap();
        let project = w.opts.default_project().to_string();
        w.create_policy(CreatePolicy {
            application_id: Some(app.clone()),
            rules: Some(vec![RuleSpec {
                permission_set_names: Some(vec!["InstancesFullAccess".into()]),
                project_ids: Some(vec![project.clone()]),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .unwrap();
        let ak = w
            .create_api_key(CreateApiKey {
                application_id: Some(app),
                ..Default::default()
            })
            .unwrap();
        let secret = w.api_keys[&ak].secret_key.clone();
        let caller = w.authenticate(Some(&secret)).unwrap();
        assert!(
            w.authorize(&caller, Product::Instance, true, Some(&project), "x")
                .is_ok()
        );
        assert!(
            w.authorize(&caller, Product::Instance, true, Some("other"), "x")
                .is_err()
        );
        assert!(
            w.authorize(&caller, Product::Iam, false, None, "x")
                .is_err()
        );
    }
}

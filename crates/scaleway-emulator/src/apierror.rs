//! Scaleway's error answers: status code plus the JSON body whose `type` decides the other
//! fields (scaleway.md §3.1). Every refusal the emulator makes is one of these.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 404 `not_found` with `resource` and `resource_id` (§2.2, §2.7, §2.9).
    NotFound { resource: String, id: String },
    /// 404 with an empty body: a missing user-data key (§2.6).
    NotFoundEmpty,
    /// 400 `invalid_arguments` with `details[{argument_name, reason, help_message}]` (§2.1).
    InvalidArguments(Vec<(String, String, String)>),
    /// 400 legacy Instance `invalid_request_error`, `"message":"Validation Error"` with
    /// `fields{name:[msgs]}` (§3.1; the Python SDK raises `ValidationError` on exactly this).
    Validation(Vec<(String, String)>),
    /// 400 legacy Instance `invalid_request_error` with a message only.
    InvalidRequest(String),
    /// 403 `quotas_exceeded` with `details[{resource, quota, current, project_id}]`.
    QuotasExceeded {
        resource: String,
        quota: u64,
        current: u64,
        project_id: String,
    },
    /// 409 `transient_state` with `resource, resource_id, current_state`.
    TransientState {
        resource: String,
        id: String,
        current_state: String,
    },
    /// 403 `permissions_denied` with `details[{resource, action}]`.
    PermissionsDenied { resource: String, action: String },
    /// 401 `denied_authentication` with `method` and `reason`.
    DeniedAuthentication {
        method: &'static str,
        reason: &'static str,
    },
    /// 412 `out_of_stock` with `resource` (the commercial type); see README for the 412.
    OutOfStock { resource: String },
    /// 412 `precondition_failed` with `precondition` and `help_message`.
    PreconditionFailed {
        precondition: &'static str,
        help_message: String,
    },
    /// 429 `too_many_requests` with `help_message`, `limit{quota, window_seconds}`, `reset_seconds`.
    TooManyRequests,
    /// 500: an injected server error.
    Internal,
}

impl ApiError {
    pub fn not_found(resource: &str, id: &str) -> Self {
        ApiError::NotFound {
            resource: resource.to_string(),
            id: id.to_string(),
        }
    }

    pub fn invalid_argument(name: &str, reason: &str, help: impl Into<String>) -> Self {
        ApiError::InvalidArguments(vec![(name.to_string(), reason.to_string(), help.into())])
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![(field.to_string(), message.into())])
    }

    pub fn denied(resource: &str, action: &str) -> Self {
        ApiError::PermissionsDenied {
            resource: resource.to_string(),
            action: action.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NotFoundEmpty => StatusCode::NOT_FOUND,
            ApiError::InvalidArguments(_)
            | ApiError::Validation(_)
            | ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::QuotasExceeded { .. } | ApiError::PermissionsDenied { .. } => {
                StatusCode::FORBIDDEN
            }
            ApiError::TransientState { .. } => StatusCode::CONFLICT,
            ApiError::DeniedAuthentication { .. } => StatusCode::UNAUTHORIZED,
            ApiError::OutOfStock { .. } | ApiError::PreconditionFailed { .. } => {
                StatusCode::PRECONDITION_FAILED
            }
            ApiError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body; `None` for the empty-bodied 404.
    pub fn body(&self) -> Option<Value> {
        Some(match self {
            ApiError::NotFound { resource, id } => json!({
                "type": "not_found", "message": "resource is not found",
                "resource": resource, "resource_id": id,
            }),
            ApiError::NotFoundEmpty => return None,
            ApiError::InvalidArguments(details) => json!({
                "type": "invalid_arguments", "message": "invalid argument(s)",
                "details": details.iter().map(|(name, reason, help)| json!({
                    "argument_name": name, "reason": reason, "help_message": help,
                })).collect::<Vec<_>>(),
            }),
            ApiError::Validation(fields) => {
                let mut map = serde_json::Map::new();
                for (field, msg) in fields {
                    map.insert(field.clone(), json!([msg]));
                }
                json!({"type": "invalid_request_error", "message": "Validation Error", "fields": map})
            }
            ApiError::InvalidRequest(message) => {
                json!({"type": "invalid_request_error", "message": message})
            }
            ApiError::QuotasExceeded {
                resource,
                quota,
                current,
                project_id,
            } => json!({
                "type": "quotas_exceeded", "message": "quota(s) exceeded for this resource",
                "details": [{"resource": resource, "quota": quota, "current": current,
                             "project_id": project_id}],
            }),
            ApiError::TransientState {
                resource,
                id,
                current_state,
            } => json!({
                "type": "transient_state", "message": "resource is in a transient state",
                "resource": resource, "resource_id": id, "current_state": current_state,
            }),
            ApiError::PermissionsDenied { resource, action } => json!({
                "type": "permissions_denied", "message": "insufficient permissions",
                "details": [{"resource": resource, "action": action}],
            }),
            ApiError::DeniedAuthentication { method, reason } => json!({
                "type": "denied_authentication", "message": "authentication is denied",
                "method": method, "reason": reason,
            }),
            ApiError::OutOfStock { resource } => json!({
                "type": "out_of_stock", "message": "out of stock", "resource": resource,
            }),
            ApiError::PreconditionFailed {
                precondition,
                help_message,
            } => json!({
                "type": "precondition_failed", "message": "precondition is not respected",
                "precondition": precondition, "help_message": help_message,
            }),
            ApiError::TooManyRequests => json!({
                "type": "too_many_requests", "message": "too many requests",
                "help_message": "the emulator's rate-limit fault refused this call; retry later",
                "limit": {"quota": 0, "window_seconds": 1},
                "reset_seconds": 1,
            }),
            ApiError::Internal => json!({
                "type": "internal_error", "message": "internal error (injected server-error fault)",
            }),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self.body() {
            Some(body) => (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response(),
            None => (
                status,
                [(axum::http::header::CONTENT_TYPE, "text/plain")],
                String::new(),
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_the_recorded_body() {
        let e = ApiError::not_found("instance_server", "abc");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            e.body().unwrap(),
            json!({"type":"not_found","message":"resource is not found",
                   "resource":"instance_server","resource_id":"abc"})
        );
    }

    #[test]
    fn validation_errors_carry_fields() {
        let e = ApiError::validation("commercial_type", "unknown type");
        let b = e.body().unwrap();
        assert_eq!(b["message"], "Validation Error");
        assert_eq!(b["fields"]["commercial_type"][0], "unknown type");
    }
}

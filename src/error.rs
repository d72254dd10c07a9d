//! Errors and the one place they meet the wire.
//!
//! `AppError` deliberately does not implement `Display`: async-graphql turns any `Display`
//! type into an error carrying just its message, which would skip the code mapping below and
//! could leak an internal cause. Without `Display`, the compiler sends every `?` in a
//! resolver through `From<AppError>` here.
//!
//! Policy: services return [`AppError`]. Its variants are what a client may learn; the
//! `Internal` variant carries the real cause (SQL, I/O, …), which is logged here with
//! `tracing` and replaced by a bare "internal error" before it leaves the process.
//! Every GraphQL error carries `extensions.code`; errors that async-graphql raises itself
//! (parse, validation, input coercion) get theirs in [`with_error_codes`]. Transports never
//! write an error body by hand: request errors (a malformed body, a rate limit, a
//! persisted-query miss) are `AppError`s too and reach the wire through
//! [`AppError::into_server_error`] and [`errors_json`].

use async_graphql::{ErrorExtensions, PathSegment, ServerError};

/// The error codes clients switch on (`extensions.code`).
pub mod code {
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    pub const CONFLICT: &str = "CONFLICT";
    pub const CURSOR_EXPIRED: &str = "CURSOR_EXPIRED";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const INTERNAL: &str = "INTERNAL";
    /// An automatic persisted query's hash is not known (yet): send the full query.
    pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
}

/// An error from the service layer.
#[derive(Debug)]
pub enum AppError {
    /// No valid token.
    Unauthenticated(&'static str),
    /// A member without the role the action needs.
    Forbidden(&'static str),
    /// Absent, or present but not visible to the viewer: the two are indistinguishable.
    NotFound(&'static str),
    /// Invalid input; `field` is the argument path, e.g. `input.title`.
    BadInput { field: String, message: String },
    /// The request clashes with the current state.
    Conflict(String),
    /// An `after` cursor older than what the event log keeps.
    CursorExpired(i64),
    /// Too many writes; try again after `retry_after_ms`.
    RateLimited { retry_after_ms: u64 },
    /// Over a fixed limit that waiting does not lift (operations on one connection).
    TooMany(&'static str),
    /// A request that cannot run at all (malformed body, wrong media type, too large).
    BadRequest(String),
    /// An automatic persisted query's hash is not known: the client must send the query.
    PersistedQueryNotFound,
    /// Something broke on our side; the cause is logged, never sent.
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

impl AppError {
    /// A `BAD_USER_INPUT` error about one argument.
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The message a client may see.
    pub fn client_message(&self) -> String {
        match self {
            Self::Unauthenticated(m) | Self::Forbidden(m) => (*m).to_owned(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::BadInput { message, .. } => message.clone(),
            Self::Conflict(m) => m.clone(),
            Self::CursorExpired(after) => {
                format!("the event log no longer holds events after seq {after}; refetch the state")
            }
            Self::RateLimited { retry_after_ms } => {
                format!("too many requests: retry in {retry_after_ms} ms")
            }
            Self::TooMany(m) => (*m).to_owned(),
            Self::BadRequest(m) => m.clone(),
            Self::PersistedQueryNotFound => "PersistedQueryNotFound".to_owned(),
            Self::Internal(_) => "internal error".to_owned(),
        }
    }

    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => code::UNAUTHENTICATED,
            Self::Forbidden(_) => code::FORBIDDEN,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::BadInput { .. } => code::BAD_USER_INPUT,
            Self::Conflict(_) => code::CONFLICT,
            Self::CursorExpired(_) => code::CURSOR_EXPIRED,
            Self::RateLimited { .. } | Self::TooMany(_) => code::RATE_LIMITED,
            Self::BadRequest(_) => code::BAD_USER_INPUT,
            Self::PersistedQueryNotFound => code::PERSISTED_QUERY_NOT_FOUND,
            Self::Internal(_) => code::INTERNAL,
        }
    }
}

impl AppError {
    /// This error as a GraphQL error with `path` (empty for a request error), through the
    /// same mapping as a resolver's error.
    pub fn into_server_error(self, path: &[&str]) -> ServerError {
        let error = async_graphql::Error::from(self);
        let mut server = ServerError::new(error.message, None);
        server.extensions = error.extensions;
        server.path = path
            .iter()
            .map(|field| PathSegment::Field((*field).to_owned()))
            .collect();
        server
    }
}

/// An errors array as JSON (`[{"message": …, "extensions": {"code": …}}]`).
pub fn errors_json(errors: &[ServerError]) -> String {
    serde_json::to_string(errors).unwrap_or_else(|err| {
        // Not expected (errors hold strings and JSON values only); still a valid answer.
        tracing::error!(error = %err, "cannot serialize GraphQL errors");
        format!(
            r#"[{{"message":"internal error","extensions":{{"code":"{}"}}}}]"#,
            code::INTERNAL
        )
    })
}

/// A response body holding only `errors` (no `data`: the request never executed).
pub fn errors_body(errors: &[ServerError]) -> String {
    format!(r#"{{"errors":{}}}"#, errors_json(errors))
}

impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Internal(err.into())
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(err: sea_orm::TransactionError<AppError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(app) => app,
        }
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        let code = err.code();
        match err {
            AppError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                async_graphql::Error::new("internal error").extend_with(|_, e| e.set("code", code))
            }
            AppError::RateLimited { retry_after_ms } => {
                async_graphql::Error::new(AppError::RateLimited { retry_after_ms }.client_message())
                    .extend_with(|_, e| {
                        e.set("code", code);
                        e.set("retryAfterMs", retry_after_ms);
                    })
            }
            AppError::BadInput { field, message } => async_graphql::Error::new(message)
                .extend_with(|_, e| {
                    e.set("code", code);
                    e.set("field", field.clone());
                }),
            other => async_graphql::Error::new(other.client_message())
                .extend_with(|_, e| e.set("code", code)),
        }
    }
}

/// Gives a code to every error that does not have one yet. Those come from async-graphql
/// itself: parse and validation errors and input coercion (a wrong type, an unknown enum
/// value). The offending argument's path goes into `extensions.field` when we can tell it.
pub fn with_error_codes(errors: &mut [ServerError]) {
    for error in errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|ext| ext.get("code").is_some());
        if has_code {
            continue;
        }
        let field = argument_path(&error.message);
        let ext = error.extensions.get_or_insert_with(Default::default);
        ext.set("code", code::BAD_USER_INPUT);
        if let Some(field) = field {
            ext.set("field", field);
        }
    }
}

/// `Invalid value for argument "input.title", expected type "String"` → `input.title`.
/// Variable errors read `Invalid value for variable "$input.title"` or
/// `Failed to parse "TaskStatus": ... ` with the path in `extensions`; we keep what we can.
fn argument_path(message: &str) -> Option<String> {
    for marker in ["argument \"", "variable \""] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            let end = rest.find('"')?;
            let path = rest[..end].trim_start_matches('$');
            return Some(path.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_paths_are_read_from_coercion_messages() {
        assert_eq!(
            argument_path(r#"Invalid value for argument "input.status", enumeration type "TaskStatus" does not contain the value "NOPE""#).as_deref(),
            Some("input.status")
        );
        assert_eq!(argument_path("Unknown field \"x\""), None);
    }
}

//! Turning an HTTP request (a JSON body or a query string) into a GraphQL request, as the
//! GraphQL-over-HTTP specification lays it out, with automatic persisted queries resolved.

use async_graphql::{Request, Variables};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use super::persisted::PersistedError;
use crate::error::code;

/// Why a request cannot run at all.
#[derive(Debug)]
pub(super) enum Rejection {
    /// Malformed: a 400 with this message.
    Malformed(&'static str),
    /// A persisted-query problem (a miss is an ordinary GraphQL answer).
    Persisted(PersistedError),
}

impl Rejection {
    /// The status to answer with.
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Self::Persisted(PersistedError::NotFound) => StatusCode::OK,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The coded error in GraphQL's response shape.
    pub(super) fn body(&self) -> Value {
        let (message, code) = match self {
            Self::Malformed(message) => (*message, code::BAD_USER_INPUT),
            Self::Persisted(PersistedError::NotFound) => (
                PersistedError::NotFound.message(),
                code::PERSISTED_QUERY_NOT_FOUND,
            ),
            Self::Persisted(err) => (err.message(), code::BAD_USER_INPUT),
        };
        json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostBody {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    extensions: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    operation_name: Option<String>,
    extensions: Option<String>,
}

/// One POSTed operation (a whole body, or one element of a batch).
pub(super) async fn post_body(state: &HttpState, body: Value) -> Result<Request, Rejection> {
    let body: PostBody = serde_json::from_value(body)
        .map_err(|_| Rejection::Malformed("the body must be an object with a string `query`"))?;
    let query = state
        .persisted
        .resolve(body.query, body.extensions.as_ref())
        .await
        .map_err(Rejection::Persisted)?
        .ok_or(Rejection::Malformed("the body needs a string `query`"))?;
    let mut request = Request::new(query);
    if let Some(variables) = body.variables.filter(|v| !v.is_null()) {
        if !variables.is_object() {
            return Err(Rejection::Malformed("`variables` must be an object"));
        }
        request = request.variables(Variables::from_json(variables));
    }
    if let Some(name) = body.operation_name {
        request = request.operation_name(name);
    }
    Ok(request)
}

/// An operation in a GET query string.
pub(super) async fn query_string(state: &HttpState, query: &str) -> Result<Request, Rejection> {
    let params: GetParams = serde_urlencoded::from_str(query)
        .map_err(|_| Rejection::Malformed("malformed query string"))?;
    let extensions = params
        .extensions
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        .map_err(|_| Rejection::Malformed("`extensions` must be JSON"))?;
    let query = state
        .persisted
        .resolve(params.query, extensions.as_ref())
        .await
        .map_err(Rejection::Persisted)?
        .ok_or(Rejection::Malformed("missing `query` parameter"))?;
    let mut request = Request::new(query);
    if let Some(variables) = params.variables {
        match serde_json::from_str::<Value>(&variables) {
            Ok(v) if v.is_object() || v.is_null() => {
                request = request.variables(Variables::from_json(v));
            }
            _ => return Err(Rejection::Malformed("`variables` must be a JSON object")),
        }
    }
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    Ok(request)
}

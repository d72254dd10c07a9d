//! Turning an HTTP request (a JSON body or a query string) into a GraphQL request, as the
//! GraphQL-over-HTTP specification lays it out, with automatic persisted queries resolved.

use async_graphql::{Request, Variables};
use serde::Deserialize;
use serde_json::Value;

use super::HttpState;
use crate::error::AppError;

fn malformed(message: &str) -> AppError {
    AppError::BadRequest(message.to_owned())
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
pub(super) async fn post_body(state: &HttpState, body: Value) -> Result<Request, AppError> {
    let body: PostBody = serde_json::from_value(body)
        .map_err(|_| malformed("the body must be an object with a string `query`"))?;
    let extensions = body.extensions.filter(|e| !e.is_null());
    if extensions.as_ref().is_some_and(|e| !e.is_object()) {
        return Err(malformed("`extensions` must be an object"));
    }
    let query = state
        .persisted
        .resolve(body.query, extensions.as_ref())
        .await?
        .ok_or_else(|| malformed("the body needs a string `query`"))?;
    let mut request = state.documents.request(query);
    if let Some(variables) = body.variables.filter(|v| !v.is_null()) {
        if !variables.is_object() {
            return Err(malformed("`variables` must be an object"));
        }
        request = request.variables(Variables::from_json(variables));
    }
    if let Some(name) = body.operation_name {
        request = request.operation_name(name);
    }
    // graphql-sse's single connection mode names each operation here.
    if let Some(id) = extensions
        .as_ref()
        .and_then(|e| e.get("operationId"))
        .and_then(Value::as_str)
    {
        request.extensions.insert(
            "operationId".to_owned(),
            async_graphql::Value::String(id.to_owned()),
        );
    }
    Ok(request)
}

/// An operation in a GET query string.
pub(super) async fn query_string(state: &HttpState, query: &str) -> Result<Request, AppError> {
    let params: GetParams =
        serde_urlencoded::from_str(query).map_err(|_| malformed("malformed query string"))?;
    let extensions = params
        .extensions
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        .map_err(|_| malformed("`extensions` must be a JSON object"))?
        .filter(|e| !e.is_null());
    if extensions.as_ref().is_some_and(|e| !e.is_object()) {
        return Err(malformed("`extensions` must be a JSON object"));
    }
    let query = state
        .persisted
        .resolve(params.query, extensions.as_ref())
        .await?
        .ok_or_else(|| malformed("missing `query` parameter"))?;
    let mut request = state.documents.request(query);
    if let Some(variables) = params.variables {
        match serde_json::from_str::<Value>(&variables) {
            Ok(v) if v.is_object() || v.is_null() => {
                request = request.variables(Variables::from_json(v));
            }
            _ => return Err(malformed("`variables` must be a JSON object")),
        }
    }
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    Ok(request)
}

//! A GraphQL result serialized once, to be framed by any transport (a graphql-ws `next` or
//! `error` message, an HTTP body) as many times as it has subscribers. Built only from a
//! response or an [`AppError`], so a frame can never carry an empty or invalid payload.

use std::sync::Arc;

use async_graphql::Response;

use crate::error::{AppError, errors_json, with_error_codes};

/// A serialized result.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A result with data (`{"data": …, "errors"?: […]}`).
    Result(Arc<str>),
    /// A failure without data: the errors array (`[…]`).
    Errors(Arc<str>),
}

impl Payload {
    /// Serializes one response of an execution, coding its errors first.
    pub fn of(mut response: Response) -> Self {
        with_error_codes(&mut response.errors);
        if response.data == async_graphql::Value::Null && !response.errors.is_empty() {
            return Self::Errors(errors_json(&response.errors).into());
        }
        match serde_json::to_string(&response) {
            Ok(json) => Self::Result(json.into()),
            Err(err) => Self::error(
                AppError::Internal(anyhow::anyhow!("cannot serialize a response: {err}")),
                &[],
            ),
        }
    }

    /// An error at `path` (empty for one about the whole operation).
    pub fn error(error: AppError, path: &[&str]) -> Self {
        Self::Errors(errors_json(&[error.into_server_error(path)]).into())
    }

    /// The payload as a GraphQL result object (`{"data": null, "errors": […]}` for errors),
    /// as the HTTP transports send every result.
    pub fn result_json(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Result(json) => std::borrow::Cow::Borrowed(json),
            Self::Errors(errors) => format!(r#"{{"data":null,"errors":{errors}}}"#).into(),
        }
    }

    /// Whether this ends the operation with an error.
    pub fn is_error(&self) -> bool {
        matches!(self, Self::Errors(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> serde_json::Value {
        serde_json::from_str(json).expect("a payload is valid JSON")
    }

    #[test]
    fn a_response_without_data_becomes_coded_errors_and_one_with_data_a_result() {
        let failed = Response::from_errors(vec![async_graphql::ServerError::new("boom", None)]);
        let Payload::Errors(errors) = Payload::of(failed) else {
            panic!("errors");
        };
        assert_eq!(parsed(&errors)[0]["extensions"]["code"], "BAD_USER_INPUT");

        let ok = Response::new(
            async_graphql::Value::from_json(serde_json::json!({ "a": 1 })).expect("value"),
        );
        let Payload::Result(result) = Payload::of(ok) else {
            panic!("result");
        };
        assert_eq!(parsed(&result)["data"]["a"], 1);
    }

    #[test]
    fn an_app_error_is_framed_through_the_one_mapping() {
        let Payload::Errors(errors) =
            Payload::error(AppError::Internal(anyhow::anyhow!("secret cause")), &["x"])
        else {
            panic!("errors");
        };
        let errors = parsed(&errors);
        assert_eq!(errors[0]["message"], "internal error");
        assert_eq!(errors[0]["extensions"]["code"], "INTERNAL");
        assert_eq!(errors[0]["path"][0], "x");
        assert!(!errors.to_string().contains("secret"));
    }
}

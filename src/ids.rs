//! Parsing of GraphQL `ID` arguments into typed ids, with the argument path on failure.

use async_graphql::ID;
use uuid::Uuid;

use crate::error::AppError;

/// Parses a project or task id; `field` is the argument path for the error (`input.projectId`).
pub fn parse_uuid(field: &str, id: &ID) -> Result<Uuid, AppError> {
    Uuid::parse_str(id.as_str())
        .map_err(|_| AppError::bad_input(field, format!("{field} is not a valid id")))
}

/// Checks a user id (a token `sub`): 1–255 characters, no control characters.
pub fn parse_user_id(field: &str, id: &ID) -> Result<String, AppError> {
    let value = id.as_str();
    if value.is_empty() || value.chars().count() > 255 || value.chars().any(char::is_control) {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be 1 to 255 printable characters"),
        ));
    }
    Ok(value.to_owned())
}

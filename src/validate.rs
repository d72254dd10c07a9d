//! Input rules shared by the slices. Each check names the argument path it is about.

use crate::error::AppError;

/// Longest title or project name, in Unicode characters after trimming.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description, in Unicode characters.
pub const MAX_DESCRIPTION_CHARS: usize = 20_000;
/// Longest client mutation id, in bytes.
pub const MAX_CLIENT_MUTATION_ID: usize = 255;

/// A title or name: trimmed, 1 to 200 characters.
pub fn title(field: &str, raw: &str) -> Result<String, AppError> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(AppError::bad_input(
            field,
            format!("{field} must not be blank"),
        ));
    }
    if chars > MAX_TITLE_CHARS {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// A description: up to 20,000 characters, kept as given.
pub fn description(field: &str, raw: String) -> Result<String, AppError> {
    if raw.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(raw)
}

/// A priority: 0 (none) to 4 (urgent); null means 0.
pub fn priority(field: &str, raw: Option<i32>) -> Result<i32, AppError> {
    match raw {
        None => Ok(0),
        Some(p @ 0..=4) => Ok(p),
        Some(_) => Err(AppError::bad_input(
            field,
            format!("{field} must be between 0 and 4"),
        )),
    }
}

/// A position: any finite number.
pub fn position(field: &str, raw: f64) -> Result<f64, AppError> {
    if raw.is_finite() {
        Ok(raw)
    } else {
        Err(AppError::bad_input(
            field,
            format!("{field} must be a finite number"),
        ))
    }
}

/// A client mutation id: 1 to 255 bytes.
pub fn client_mutation_id(field: &str, raw: Option<String>) -> Result<Option<String>, AppError> {
    match raw {
        Some(id) if id.is_empty() || id.len() > MAX_CLIENT_MUTATION_ID => Err(AppError::bad_input(
            field,
            format!("{field} must be 1 to 255 bytes"),
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_counted_in_characters() {
        assert_eq!(title("t", "  a  ").unwrap(), "a");
        assert!(title("t", &"é".repeat(200)).is_ok());
        assert!(title("t", &"é".repeat(201)).is_err());
        assert!(title("t", "   ").is_err());
    }

    #[test]
    fn priority_null_is_zero_and_five_is_refused() {
        assert_eq!(priority("p", None).unwrap(), 0);
        assert!(priority("p", Some(5)).is_err());
        assert!(priority("p", Some(-1)).is_err());
    }
}

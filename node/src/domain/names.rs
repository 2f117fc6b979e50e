//! What a user or room name may be.

use stoa_proto::{limits::NAME_CHARS_MAX, ApiError, ErrorCode};

/// A name is 1..=256 characters, not surrounding blanks, no control characters.
pub fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!("{kind} name is empty"),
        ));
    }
    if chars > NAME_CHARS_MAX {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("{kind} name has {chars} characters, at most {NAME_CHARS_MAX} are allowed"),
        ));
    }
    if name.trim() != name {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!("{kind} name {name:?} starts or ends with a blank"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!("{kind} name {name:?} contains a control character"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("room", "lobby").is_ok());
        assert!(check_name("room", "Team chat ✓").is_ok());
        assert_eq!(check_name("room", "").unwrap_err().code, ErrorCode::Invalid);
        assert_eq!(
            check_name("room", " x").unwrap_err().code,
            ErrorCode::Invalid
        );
        assert_eq!(
            check_name("room", "a\nb").unwrap_err().code,
            ErrorCode::Invalid
        );
        assert_eq!(
            check_name("room", &"é".repeat(257)).unwrap_err().code,
            ErrorCode::TooLarge
        );
        assert!(check_name("room", &"é".repeat(256)).is_ok());
    }
}

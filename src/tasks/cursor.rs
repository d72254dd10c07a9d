//! Opaque, stable cursors for `Project.tasks`: the (position, id) of the last task seen.
//! A cursor stays valid when tasks are added or moved elsewhere on the board.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

/// Encodes the sort key of a task.
pub fn encode(position: f64, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("t1:{:016x}:{id}", position.to_bits()))
}

/// Decodes a cursor made by [`encode`].
pub fn decode(cursor: &str) -> Option<(f64, Uuid)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut parts = text.splitn(3, ':');
    if parts.next()? != "t1" {
        return None;
    }
    let bits = u64::from_str_radix(parts.next()?, 16).ok()?;
    let position = f64::from_bits(bits);
    let id = Uuid::parse_str(parts.next()?).ok()?;
    position.is_finite().then_some((position, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let id = Uuid::new_v4();
        assert_eq!(decode(&encode(-2.5, id)), Some((-2.5, id)));
        assert_eq!(decode("garbage"), None);
    }
}

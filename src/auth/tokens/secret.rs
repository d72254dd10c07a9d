//! The API token secret format: `tn_`, 30 random base62 characters (about 178 bits), and
//! 6 base62 characters of the CRC32 of those 30. The prefix lets secret scanners find a
//! leaked token; the checksum lets them (and us) tell a real one from a look-alike without
//! a lookup. Only the SHA-256 of a secret is stored: the secret's own entropy makes a slow
//! hash unnecessary.

use rand::Rng;
use sha2::{Digest, Sha256};

/// Every secret starts with this.
pub const PREFIX: &str = "tn_";
const RANDOM_CHARS: usize = 30;
const CHECKSUM_CHARS: usize = 6;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A fresh secret.
pub fn generate() -> String {
    let mut rng = rand::rng();
    let random: String = (0..RANDOM_CHARS)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    let checksum = checksum(&random);
    format!("{PREFIX}{random}{checksum}")
}

/// Whether `token` is meant as an API token (rather than a JWT).
pub fn looks_like(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// Whether `token` has the format and a matching checksum.
pub fn well_formed(token: &str) -> bool {
    let Some(body) = token.strip_prefix(PREFIX) else {
        return false;
    };
    if body.len() != RANDOM_CHARS + CHECKSUM_CHARS || !body.bytes().all(|b| ALPHABET.contains(&b)) {
        return false;
    }
    let (random, check) = body.split_at(RANDOM_CHARS);
    checksum(random) == check
}

/// The stored form of a secret: hex SHA-256.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// CRC32 of `random` as 6 base62 digits, most significant first.
fn checksum(random: &str) -> String {
    let mut value = u64::from(crc32fast::hash(random.as_bytes()));
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_prefixed_checksummed_and_unique() {
        let one = generate();
        let two = generate();
        assert!(one.starts_with("tn_") && one.len() == 3 + 36, "{one}");
        assert!(well_formed(&one) && well_formed(&two));
        assert_ne!(one, two);
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let secret = generate();
        let mut bytes = secret.clone().into_bytes();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        let altered = String::from_utf8(bytes).expect("ascii");
        assert!(!well_formed(&altered));
        assert!(!well_formed(&secret[..secret.len() - 1]));
        assert!(!well_formed("tn_"));
        assert!(!well_formed(&secret.replacen("tn_", "tx_", 1)));
    }

    #[test]
    fn the_stored_form_is_a_sha256_hex_digest() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

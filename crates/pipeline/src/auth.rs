//! Bearer tokens for HTTP ingest: the `[[server.tokens]]` config (hashes only), making new
//! tokens, and matching a presented token against every configured hash in constant time.

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom as _, SystemRandom};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use subtle::{Choice, ConditionallySelectable as _, ConstantTimeEq as _};
use teleguard_core::profile::ProfileRegistry;

/// What every token `teleguard token new` makes starts with, so that a token is recognisable
/// (by secret scanners, and by config validation when one is pasted where its hash belongs).
pub const TOKEN_PREFIX: &str = "tg_";
/// Random bytes in a new token, from the operating system's generator.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// The longest token name: it is a metric label and appears in logs and dead letters.
pub const MAX_TOKEN_NAME: usize = 64;

/// One `[[server.tokens]]` entry as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// Profiles the token may send to; every profile when left out.
    pub profiles: Option<Vec<String>>,
    /// Only entities whose id starts with this.
    pub entity_prefix: Option<String>,
}

/// A validated token entry: its name, the hash of its secret, and its grant.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub name: Arc<str>,
    sha256: [u8; 32],
    /// `None`: every profile.
    profiles: Option<BTreeSet<String>>,
    pub entity_prefix: Option<Arc<str>>,
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGrant")
            .field("name", &self.name)
            .field("profiles", &self.profiles)
            .field("entity_prefix", &self.entity_prefix)
            .finish_non_exhaustive()
    }
}

impl TokenGrant {
    /// Whether the token may send to `profile`.
    pub fn allows_profile(&self, profile: &str) -> bool {
        self.profiles.as_ref().is_none_or(|profiles| profiles.contains(profile))
    }

    /// The profiles the token may send to, for error messages.
    pub fn profiles_text(&self) -> String {
        match &self.profiles {
            None => "every profile".into(),
            Some(profiles) => profiles.iter().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

/// The configured tokens; none means HTTP ingest needs no authentication.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    grants: Vec<TokenGrant>,
}

impl Tokens {
    /// Whether ingest requires a token (at least one is configured).
    pub fn required(&self) -> bool {
        !self.grants.is_empty()
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The grant of the configured token `presented` is, if any. The presented token's hash is
    /// compared with every configured hash, each comparison in constant time and with no early
    /// exit, so the time taken says nothing about which entry (or how much of one) matched.
    pub fn authenticate(&self, presented: &str) -> Option<&TokenGrant> {
        let hash = sha256(presented.as_bytes());
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (candidate, grant) in self.grants.iter().enumerate() {
            let equal = hash.ct_eq(&grant.sha256);
            index = u64::conditional_select(&index, &(candidate as u64), equal);
            found |= equal;
        }
        bool::from(found).then(|| &self.grants[index as usize])
    }

    /// Validates `[[server.tokens]]`, adding every problem to `errors`. `profiles` is `None`
    /// when the profiles themselves are invalid (then profile names are not checked).
    pub fn validate(raw: Vec<RawToken>, profiles: Option<&ProfileRegistry>, errors: &mut Vec<String>) -> Tokens {
        let mut grants: Vec<TokenGrant> = Vec::with_capacity(raw.len());
        for (index, raw) in raw.into_iter().enumerate() {
            let entry = format!("[[server.tokens]] #{} ({:?})", index + 1, raw.name);
            let before = errors.len();
            check_name(&raw.name, &entry, errors);
            let sha256 = parse_sha256(&raw.sha256, &entry, errors);
            let profile_set = raw.profiles.map(|names| check_profiles(names, profiles, &entry, errors));
            if raw.entity_prefix.as_deref() == Some("") {
                errors.push(format!("{entry}: entity_prefix is empty; leave it out to allow every entity"));
            }
            if let Some(other) = grants.iter().find(|g| *g.name == raw.name) {
                errors.push(format!(
                    "{entry}: another entry is also named {:?}; give each token its own name",
                    other.name
                ));
            }
            if let Some(other) = sha256.and_then(|hash| grants.iter().find(|g| g.sha256 == hash)) {
                errors.push(format!(
                    "{entry}: has the same sha256 as {:?}; one token cannot have two grants, make another with `teleguard token new`",
                    other.name
                ));
            }
            if let (Some(sha256), true) = (sha256, errors.len() == before) {
                grants.push(TokenGrant {
                    name: raw.name.into(),
                    sha256,
                    profiles: profile_set,
                    entity_prefix: raw.entity_prefix.map(Arc::from),
                });
            }
        }
        Tokens { grants }
    }
}

fn check_name(name: &str, entry: &str, errors: &mut Vec<String>) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_TOKEN_NAME || !name.chars().all(allowed) {
        errors.push(format!(
            "{entry}: name must be 1 to {MAX_TOKEN_NAME} letters, digits, '-', '_' or '.' (it is shown in logs, metrics and dead letters)"
        ));
    }
}

fn parse_sha256(text: &str, entry: &str, errors: &mut Vec<String>) -> Option<[u8; 32]> {
    if text.starts_with(TOKEN_PREFIX) {
        errors.push(format!(
            "{entry}: sha256 holds a token, not its hash; never store the token itself: put `teleguard token hash` of it there, and since it was written down, consider replacing it"
        ));
        return None;
    }
    let parsed = decode_hex(text);
    if parsed.is_none() {
        errors.push(format!(
            "{entry}: sha256 must be 64 hex digits (the SHA-256 of the token, as `teleguard token hash` prints it), found {:?}",
            text.chars().take(80).collect::<String>()
        ));
    }
    parsed
}

fn check_profiles(
    names: Vec<String>,
    profiles: Option<&ProfileRegistry>,
    entry: &str,
    errors: &mut Vec<String>,
) -> BTreeSet<String> {
    if names.is_empty() {
        errors.push(format!(
            "{entry}: profiles is empty, so the token could send nothing; leave it out to allow every profile"
        ));
    }
    if let Some(registry) = profiles {
        for name in names.iter().filter(|name| registry.by_name(name).is_none()) {
            errors.push(format!(
                "{entry}: unknown profile {name:?} in profiles; known profiles: {}",
                registry.names().join(", ")
            ));
        }
    }
    names.into_iter().collect()
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest(&SHA256, bytes).as_ref());
    hash
}

/// The hex SHA-256 of a token, as `sha256` in the config holds it.
pub fn token_hash_hex(token: &str) -> String {
    encode_hex(&sha256(token.as_bytes()))
}

/// A new token: [`TOKEN_PREFIX`] and [`TOKEN_RANDOM_BYTES`] from the operating system's
/// generator, in hex.
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", encode_hex(&bytes)))
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from 64 hex digits (either case), or `None`.
fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, token: &str) -> RawToken {
        RawToken { name: name.into(), sha256: token_hash_hex(token), profiles: None, entity_prefix: None }
    }

    fn registry() -> ProfileRegistry {
        ProfileRegistry::with_builtins(Default::default()).unwrap()
    }

    fn valid(raw: Vec<RawToken>) -> Tokens {
        let mut errors = Vec::new();
        let tokens = Tokens::validate(raw, Some(&registry()), &mut errors);
        assert!(errors.is_empty(), "{errors:#?}");
        tokens
    }

    #[test]
    fn sha256_is_the_standard_digest() {
        // FIPS 180-2's example: SHA-256("abc").
        assert_eq!(token_hash_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn every_token_finds_its_own_grant_and_nothing_else_matches() {
        let tokens = valid(vec![raw("first", "alpha"), raw("second", "beta"), raw("third", "gamma")]);
        assert!(tokens.required());
        for (token, name) in [("alpha", "first"), ("beta", "second"), ("gamma", "third")] {
            assert_eq!(tokens.authenticate(token).map(|g| &*g.name), Some(name), "{token}");
        }
        for stranger in ["", "alph", "alphaa", "ALPHA", "beta ", &token_hash_hex("alpha")] {
            assert!(tokens.authenticate(stranger).is_none(), "{stranger:?}");
        }
        assert!(Tokens::default().authenticate("alpha").is_none());
        assert!(!Tokens::default().required());
    }

    #[test]
    fn the_hash_may_be_written_in_either_case() {
        let mut upper = raw("loud", "secret");
        upper.sha256 = upper.sha256.to_uppercase();
        assert_eq!(valid(vec![upper]).authenticate("secret").map(|g| &*g.name), Some("loud"));
    }

    #[test]
    fn grants_limit_profiles_and_say_so() {
        let mut limited = raw("fleet-north", "t");
        limited.profiles = Some(vec!["vehicle".into(), "drone".into()]);
        limited.entity_prefix = Some("veh-".into());
        let tokens = valid(vec![limited, raw("everything", "u")]);
        let grant = tokens.authenticate("t").unwrap();
        assert!(grant.allows_profile("vehicle") && grant.allows_profile("drone") && !grant.allows_profile("pump"));
        assert_eq!(grant.profiles_text(), "drone, vehicle");
        assert_eq!(grant.entity_prefix.as_deref(), Some("veh-"));
        let open = tokens.authenticate("u").unwrap();
        assert!(open.allows_profile("pump") && open.entity_prefix.is_none());
        assert_eq!(open.profiles_text(), "every profile");
        assert!(!format!("{grant:?}").contains(&token_hash_hex("t")), "Debug shows no hash");
    }

    #[test]
    fn new_tokens_are_random_and_hash_to_their_entry() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 2 * TOKEN_RANDOM_BYTES, "{a}");
        assert_eq!(valid(vec![raw("new", &a)]).authenticate(&a).map(|g| &*g.name), Some("new"));
    }

    #[test]
    fn each_bad_entry_is_named_with_what_to_do() {
        let mut short = raw("short", "a");
        short.sha256 = "9f86d0".into();
        let mut pasted = raw("pasted", "a");
        pasted.sha256 = new_token().unwrap();
        let mut unknown = raw("unknown", "b");
        unknown.profiles = Some(vec!["vehicle".into(), "submarine".into()]);
        let mut empty = raw("empty", "c");
        empty.profiles = Some(vec![]);
        empty.entity_prefix = Some(String::new());
        let cases = vec![
            short,
            pasted,
            unknown,
            empty,
            raw("twin", "d"),
            raw("twin", "e"),
            raw("copy", "d"),
            raw("bad name!", "f"),
        ];
        let mut errors = Vec::new();
        let tokens = Tokens::validate(cases, Some(&registry()), &mut errors);
        let expected = [
            "#1 (\"short\"): sha256 must be 64 hex digits",
            "#2 (\"pasted\"): sha256 holds a token, not its hash",
            "#3 (\"unknown\"): unknown profile \"submarine\" in profiles; known profiles: vehicle",
            "#4 (\"empty\"): profiles is empty",
            "#4 (\"empty\"): entity_prefix is empty",
            "#6 (\"twin\"): another entry is also named \"twin\"",
            "#7 (\"copy\"): has the same sha256 as \"twin\"",
            "#8 (\"bad name!\"): name must be 1 to 64 letters",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.starts_with("[[server.tokens]] ") && error.contains(expected), "{error:?} vs {expected:?}");
        }
        assert_eq!(tokens.len(), 1, "only the first `twin` is valid");
    }
}

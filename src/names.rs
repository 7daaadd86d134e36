//! What user names and roles may be made of: the rules the config, the
//! CLI, the API and token claims are all checked against.

/// The provider of store users who log in with a password or a one-time
/// key (the store's `provider IS NULL`); no `[[oidc]]` or `[[jwt.jwks]]`
/// provider may take the name.
pub const LOCAL_PROVIDER: &str = "local";

/// Usernames: 1 to 64 of `A-Z a-z 0-9 . _ @ -` (no `:`, which HA1 uses as
/// separator, and nothing that needs escaping in a header).
pub fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// Roles: 1 to 64 of `A-Z a-z 0-9 . _ : -` (no comma: roles are forwarded
/// comma-separated).
pub fn valid_role(role: &str) -> bool {
    (1..=64).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A name (user, provider) as an `X-Auth-*` header value, made once where
/// the name is cached and shared by every request that forwards it.
/// `None` when it cannot be one: names are held to header-safe characters
/// when they are made, and a value that still fails is left out.
pub fn header_value(name: &str) -> Option<http::HeaderValue> {
    http::HeaderValue::from_str(name).ok()
}

/// Roles as one `X-Auth-Roles` value, comma-separated (see
/// [`header_value`]).
pub fn roles_header_value(roles: &[String]) -> Option<http::HeaderValue> {
    header_value(&roles.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["alice", "a.b-c_d@example.com", "X1"] {
            assert!(valid_username(good), "{good}");
        }
        for bad in ["", "a:b", "a b", "a,b", "é", &"a".repeat(65)] {
            assert!(!valid_username(bad), "{bad}");
        }
        assert!(valid_role("team:ops"));
        assert!(!valid_role("a,b"));
        assert!(!valid_role(""));
    }
}

//! Unknown keys: every key of the file that no table knows is one problem,
//! with the closest known key as a suggestion.

use super::ratelimit;
use super::raw::*;
use super::validate::Problems;

/// The keys a table of the config may hold, by its dotted path (array
/// elements share their array's path), read from the serde field list of
/// its raw struct. `None` for a path not listed here: its keys are then
/// checked by serde when the config is deserialized.
pub(super) fn known_keys(path: &str) -> Option<Vec<String>> {
    match path {
        "" => Some(fields_of::<RawConfig>()),
        "server" => Some(fields_of::<RawServer>()),
        "server.tls" => Some(fields_of::<RawTls>()),
        "server.tls.acme" => Some(fields_of::<RawAcme>()),
        "server.tls.certificates" => Some(fields_of::<RawTlsCertificate>()),
        "store" => Some(fields_of::<RawStore>()),
        "jwt" => Some(fields_of::<RawJwt>()),
        "jwt.keys" => Some(fields_of::<RawJwtKey>()),
        "jwt.jwks" => Some(fields_of::<RawJwks>()),
        "onetimekey" => Some(fields_of::<RawOneTimeKey>()),
        "accesskeys" => Some(fields_of::<RawAccessKeys>()),
        "limits" => Some(fields_of::<RawLimits>()),
        "upstream" => Some(fields_of::<RawUpstream>()),
        "login" => Some(fields_of::<RawLogin>()),
        "cache" => Some(fields_of::<RawCache>()),
        "route" => Some(fields_of::<RawRoute>()),
        "route.cors" => Some(fields_of::<RawCors>()),
        "route.health_check" => Some(fields_of::<RawHealthCheck>()),
        "oidc" => Some(fields_of::<RawOidc>()),
        "assertion" => Some(fields_of::<RawAssertion>()),
        "audit" => Some(fields_of::<RawAudit>()),
        "telemetry" => Some(fields_of::<RawTelemetry>()),
        "ratelimit" => Some(fields_of::<ratelimit::RawRateLimit>()),
        "ratelimit.rule" => Some(fields_of::<ratelimit::RawRule>()),
        _ => None,
    }
}

/// The field names of a `deny_unknown_fields` struct, from the error serde
/// gives for a key that cannot be one of them.
pub(super) fn fields_of<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let mut probe = toml::Table::new();
    probe.insert("\u{0}probe".into(), toml::Value::Boolean(true));
    let Err(err) = toml::Value::Table(probe).try_into::<T>() else {
        return Vec::new();
    };
    let text = err.to_string();
    let Some(expected) = text.split_once("expected").map(|(_, rest)| rest) else {
        return Vec::new();
    };
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Reports and removes every key of `table` (and of the tables below it)
/// that the config does not know, one problem per key with its full dotted
/// path (array elements by 0-based index, as other problems name them) and,
/// when a known key at that level is close, a suggestion.
pub(super) fn unknown_keys(table: &mut toml::Table, path: &str, shown: &str, p: &mut Problems) {
    let Some(known) = known_keys(path) else {
        return;
    };
    let join = |base: &str, key: &str| {
        if base.is_empty() {
            key.to_owned()
        } else {
            format!("{base}.{key}")
        }
    };
    let mut unknown = Vec::new();
    for (key, value) in table.iter_mut() {
        if !known.iter().any(|k| k == key) {
            unknown.push(key.clone());
            continue;
        }
        let child_path = join(path, key);
        let child_shown = join(shown, key);
        match value {
            toml::Value::Table(child) => unknown_keys(child, &child_path, &child_shown, p),
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(child) = item {
                        let shown = format!("{child_shown}[{i}]");
                        unknown_keys(child, &child_path, &shown, p);
                    }
                }
            }
            _ => {}
        }
    }
    for key in unknown {
        table.remove(&key);
        let full = join(shown, &key);
        match closest(&key, &known) {
            Some(near) => p.add(
                &full,
                format_args!("unknown key (did you mean {}?)", join(shown, near)),
            ),
            None => p.add(&full, "unknown key"),
        }
    }
}

/// The known key nearest to `key` by edit distance (case-insensitive),
/// when it is close enough to be a typo: at most a third of the longer
/// name's characters (at least one) differ.
pub(super) fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let key_lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key_lower, k), k))
        .filter(|(d, k)| *d <= (key.chars().count().max(k.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance over characters.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

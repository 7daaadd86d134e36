//! `${VAR}` and `${VAR:-default}` in config string values, from the
//! environment, so Kubernetes Secrets and ConfigMaps can feed a config
//! without templating. Values are expanded after the TOML is parsed: what a
//! variable holds is never read as TOML. `$${` is a literal `${`.

/// Expands every string value in `table` (keys are left alone), reading
/// variables through `lookup`. Each problem names the key it is under.
pub(super) fn expand_table(
    table: &mut toml::Table,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    for (key, value) in table.iter_mut() {
        expand_value(value, key, lookup, problems);
    }
}

fn expand_value(
    value: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    match value {
        toml::Value::String(text) if text.contains('$') => match expand(text, lookup) {
            Ok(expanded) => *text = expanded,
            Err(problem) => problems.push(format!("{path}: {problem}")),
        },
        toml::Value::Array(items) => {
            for item in items {
                expand_value(item, path, lookup, problems);
            }
        }
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                expand_value(value, &format!("{path}.{key}"), lookup, problems);
            }
        }
        _ => {}
    }
}

/// `text` with `${NAME}` and `${NAME:-default}` replaced: a variable that
/// is unset (or, with `:-`, empty) takes the default; one unset without a
/// default is an error naming it. Names are `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
            continue;
        }
        let Some(body) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err("an unclosed ${ (write $${ for a literal one)".into());
        };
        let (name, default) = match body[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&body[..end], None),
        };
        if !valid_name(name) {
            return Err(format!(
                "${{{}}} is not a variable reference (names are letters, digits and _)",
                &body[..end]
            ));
        }
        match (lookup(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b = c".into()),
            _ => None,
        }
    }

    #[test]
    fn references_defaults_and_literals() {
        let cases = [
            ("plain", "plain"),
            (
                "postgres://u@${HOST}:5432/db",
                "postgres://u@db.internal:5432/db",
            ),
            ("${MISSING:-fallback}", "fallback"),
            ("${EMPTY:-fallback}", "fallback"),
            ("${EMPTY}", ""),
            ("${HOST:-x}", "db.internal"),
            (
                "cost: $5 and $$ and $${HOST}",
                "cost: $5 and $$ and ${HOST}",
            ),
            ("${QUOTE}", "a\"b = c"),
            ("${MISSING:-a:-b}", "a:-b"),
        ];
        for (text, want) in cases {
            assert_eq!(expand(text, &env).as_deref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn missing_and_malformed_references_are_errors_naming_them() {
        assert_eq!(
            expand("${NOPE}", &env),
            Err("environment variable NOPE is not set".into())
        );
        for bad in ["${", "${HOST", "${}", "${1X}", "${A-B}", "${ HOST}"] {
            assert!(expand(bad, &env).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_expand_values_not_keys_and_name_the_key_at_fault() {
        let mut table: toml::Table = toml::from_str(
            "[store]\nurl = \"postgres://${HOST}/x\"\n[[route]]\nupstream = \"${NOPE}\"\n\
             ['${HOST}']\nlist = [\"${HOST}\", 3]\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        expand_table(&mut table, &env, &mut problems);
        assert_eq!(
            table["store"]["url"].as_str(),
            Some("postgres://db.internal/x")
        );
        assert!(table.contains_key("${HOST}"), "keys stay as written");
        assert_eq!(table["${HOST}"]["list"][0].as_str(), Some("db.internal"));
        assert_eq!(
            problems,
            vec!["route.upstream: environment variable NOPE is not set".to_string()]
        );
    }
}

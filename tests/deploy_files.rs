//! The deployment files stay valid: every YAML and TOML file under `deploy/`
//! and `config/` parses, and every authgate config in them passes the real
//! `authgate check-config`.
//!
//! Authgate configs are the `.toml` files there and the `authgate.toml`
//! entries of ConfigMaps and Secrets (`data` or `stringData`) in the YAML
//! files. The paths a config names (`/etc/authgate/...`) do not exist here, so
//! each config is checked on a copy in a temporary folder whose file paths
//! point at files made for it: a 48-byte JWT secret, TLS certificates from
//! `certs/gen-dev-certs.sh`, JWT key pairs from `openssl genpkey`, and an
//! SQLite store in the folder. Everything else, including a PostgreSQL store
//! URL (check-config does not connect), is kept as written, so unknown keys
//! and bad values are still caught.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use serde::Deserialize;
use serde_norway::Value as Yaml;
use toml::{Table, Value as Toml};

/// The ConfigMap/Secret entry that holds an authgate config.
const CONFIG_ENTRY: &str = "authgate.toml";

/// Configs that must be found, so the test cannot pass by finding none.
const EXPECTED_CONFIGS: &[&str] = &[
    "config/authgate.toml",
    "deploy/kubernetes/deployment.yaml#ConfigMap/authgate/data/authgate.toml",
    "deploy/kubernetes/sidecar.yaml#ConfigMap/hello-authgate/data/authgate.toml",
];

/// One authgate config and where it was found.
struct FoundConfig {
    label: String,
    text: String,
    /// From a ConfigMap: readable by anyone who may read the namespace's
    /// config, so it must not carry secrets.
    in_configmap: bool,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Every document of a YAML stream.
fn yaml_documents(text: &str) -> Result<Vec<Yaml>, serde_norway::Error> {
    serde_norway::Deserializer::from_str(text)
        .map(Yaml::deserialize)
        .collect()
}

/// The authgate configs in one YAML document, as `(label, text, from a
/// ConfigMap)`; `label` is `Kind/name/field/authgate.toml`.
fn configs_in_document(doc: &Yaml) -> Result<Vec<(String, String, bool)>, String> {
    let kind = match doc.get("kind").and_then(Yaml::as_str) {
        Some(kind @ ("ConfigMap" | "Secret")) => kind,
        _ => return Ok(Vec::new()),
    };
    let name = doc
        .get("metadata")
        .and_then(|metadata| metadata.get("name"))
        .and_then(Yaml::as_str)
        .unwrap_or("<unnamed>");
    let mut found = Vec::new();
    for field in ["data", "stringData"] {
        let Some(entry) = doc.get(field).and_then(|data| data.get(CONFIG_ENTRY)) else {
            continue;
        };
        let label = format!("{kind}/{name}/{field}/{CONFIG_ENTRY}");
        let value = entry
            .as_str()
            .ok_or_else(|| format!("{label}: not a string"))?;
        let text = if kind == "Secret" && field == "data" {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.split_whitespace().collect::<String>())
                .map_err(|err| format!("{label}: not base64: {err}"))?;
            String::from_utf8(bytes).map_err(|_| format!("{label}: not UTF-8"))?
        } else {
            value.to_owned()
        };
        found.push((label, text, kind == "ConfigMap"));
    }
    Ok(found)
}

/// Files made for the configs under test, in one temporary folder.
struct Fixtures {
    dir: tempfile::TempDir,
    made: usize,
    tls: Option<Tls>,
}

/// Development certificates: a server chain, its key and the CA.
#[derive(Clone)]
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Fixtures {
    fn new() -> Self {
        Fixtures {
            dir: tempfile::tempdir().expect("temporary folder"),
            made: 0,
            tls: None,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh path in the folder.
    fn fresh(&mut self, name: &str) -> PathBuf {
        self.made += 1;
        self.path().join(format!("{}-{name}", self.made))
    }

    /// A 48-byte HS256 secret (plus the newline authgate strips).
    fn secret_file(&mut self) -> PathBuf {
        let path = self.fresh("jwt.secret");
        std::fs::write(&path, "test-only-secret-0123456789abcdefghijklmnopqrstu\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 49);
        path
    }

    /// Certificates made by `certs/gen-dev-certs.sh`, once.
    fn tls(&mut self) -> Tls {
        if let Some(tls) = &self.tls {
            return tls.clone();
        }
        let certs = self.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let script = certs.join("gen-dev-certs.sh");
        std::fs::copy(repo_root().join("certs/gen-dev-certs.sh"), &script)
            .expect("copy certs/gen-dev-certs.sh");
        run_ok(Command::new("bash").arg(&script), "certs/gen-dev-certs.sh");
        let tls = Tls {
            cert: certs.join("dev-cert.pem"),
            key: certs.join("dev-key.pem"),
            ca: certs.join("dev-ca.pem"),
        };
        for file in [&tls.cert, &tls.key, &tls.ca] {
            assert!(
                file.is_file(),
                "gen-dev-certs.sh made no {}",
                file.display()
            );
        }
        self.tls = Some(tls.clone());
        tls
    }

    /// A PKCS#8 private key and its public key for a JWT algorithm, or
    /// `None` for an algorithm authgate does not know (check-config reports it).
    fn jwt_key_pair(&mut self, algorithm: &str) -> Option<(PathBuf, PathBuf)> {
        let options: &[&str] = match algorithm {
            "RS256" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "ES256" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "EdDSA" => &["-algorithm", "ED25519"],
            _ => return None,
        };
        let private = self.fresh(&format!("{algorithm}.pem"));
        let public = self.fresh(&format!("{algorithm}.pub.pem"));
        run_ok(
            Command::new("openssl")
                .arg("genpkey")
                .args(options)
                .arg("-out")
                .arg(&private),
            "openssl genpkey",
        );
        run_ok(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(&public),
            "openssl pkey -pubout",
        );
        Some((private, public))
    }
}

fn run_ok(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {what} (is openssl installed?): {err}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path_value(path: &Path) -> Toml {
    Toml::String(path.to_str().expect("UTF-8 temporary path").to_owned())
}

/// What a file-path key of the config must point at.
#[derive(Clone, Copy)]
enum Made {
    /// The HS256 secret.
    Secret,
    /// A PEM certificate chain.
    Certificate,
    /// The PEM private key of that chain.
    PrivateKey,
    /// PEM CA certificates.
    CaCertificates,
}

/// Every file-path key of the config (besides `store.url` and
/// `[[jwt.keys]]`): the table it sits in, its name, what it names.
/// A new path key in src/config.rs belongs here too.
const PATH_KEYS: &[(&[&str], &str, Made)] = &[
    (&["jwt"], "secret_file", Made::Secret),
    (&["server", "tls"], "cert", Made::Certificate),
    (&["server", "tls"], "key", Made::PrivateKey),
    (&["server", "tls"], "client_ca", Made::CaCertificates),
    (&["upstream"], "ca_file", Made::CaCertificates),
    (&["upstream"], "client_cert", Made::Certificate),
    (&["upstream"], "client_key", Made::PrivateKey),
];

fn table_at<'a>(config: &'a mut Table, path: &[&str]) -> Option<&'a mut Table> {
    path.iter().try_fold(config, |table, name| {
        table.get_mut(*name).and_then(Toml::as_table_mut)
    })
}

/// Points every file path in `config` at a file made in `fx`; keeps the rest.
fn rewrite_paths(config: &mut Table, fx: &mut Fixtures) {
    for (path, key, made) in PATH_KEYS {
        let Some(table) = table_at(config, path) else {
            continue;
        };
        if !table.contains_key(*key) {
            continue;
        }
        let file = match made {
            Made::Secret => fx.secret_file(),
            Made::Certificate => fx.tls().cert,
            Made::PrivateKey => fx.tls().key,
            Made::CaCertificates => fx.tls().ca,
        };
        table.insert((*key).into(), path_value(&file));
    }

    if let Some(store) = table_at(config, &["store"]) {
        let sqlite = store
            .get("url")
            .and_then(Toml::as_str)
            .is_some_and(|url| url.starts_with("sqlite:"));
        if sqlite {
            let file = fx.fresh("store.db");
            store.insert(
                "url".into(),
                Toml::String(format!("sqlite://{}", file.display())),
            );
        }
    }

    if let Some(keys) = table_at(config, &["jwt"])
        .and_then(|jwt| jwt.get_mut("keys"))
        .and_then(Toml::as_array_mut)
    {
        for key in keys.iter_mut().filter_map(Toml::as_table_mut) {
            let algorithm = key.get("algorithm").and_then(Toml::as_str).unwrap_or("");
            let Some((private, public)) = fx.jwt_key_pair(algorithm) else {
                continue;
            };
            if key.contains_key("private_key") {
                key.insert("private_key".into(), path_value(&private));
            }
            key.insert("public_key".into(), path_value(&public));
        }
    }
}

/// Runs `authgate check-config` on a rewritten copy of `text`.
fn check_config(text: &str, fx: &mut Fixtures) -> Result<Output, String> {
    let mut config: Table = text.parse().map_err(|err| format!("not TOML: {err}"))?;
    rewrite_paths(&mut config, fx);
    let file = fx.fresh("authgate.toml");
    std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .current_dir(fx.path())
        .env_remove("AUTHGATE_CONFIG")
        .output()
        .map_err(|err| format!("cannot run authgate: {err}"))?;
    Ok(output)
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A password inside a `postgres://user:password@host/db` URL.
fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

#[test]
fn deploy_and_config_files_parse_and_their_authgate_configs_pass_check_config() {
    let root = repo_root();
    let mut files = Vec::new();
    files_under(&root.join("deploy"), &mut files);
    files_under(&root.join("config"), &mut files);

    let mut problems = Vec::new();
    let mut configs = Vec::new();
    let (mut yaml_files, mut toml_files) = (0, 0);
    for path in &files {
        let name = relative(path);
        let extension = path.extension().and_then(|ext| ext.to_str()).unwrap_or("");
        if !matches!(extension, "yaml" | "yml" | "toml") {
            continue;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                problems.push(format!("{name}: cannot read: {err}"));
                continue;
            }
        };
        if extension == "toml" {
            toml_files += 1;
            match text.parse::<Table>() {
                Ok(_) => configs.push(FoundConfig {
                    label: name,
                    text,
                    in_configmap: false,
                }),
                Err(err) => problems.push(format!("{name}: TOML parse error: {err}")),
            }
            continue;
        }
        yaml_files += 1;
        let documents = match yaml_documents(&text) {
            Ok(documents) => documents,
            Err(err) => {
                problems.push(format!("{name}: YAML parse error: {err}"));
                continue;
            }
        };
        for document in &documents {
            match configs_in_document(document) {
                Ok(found) => {
                    configs.extend(found.into_iter().map(|(label, text, in_configmap)| {
                        FoundConfig {
                            label: format!("{name}#{label}"),
                            text,
                            in_configmap,
                        }
                    }))
                }
                Err(problem) => problems.push(format!("{name}: {problem}")),
            }
        }
    }

    let mut fx = Fixtures::new();
    for config in &configs {
        match check_config(&config.text, &mut fx) {
            Ok(output) if output.status.success() => {}
            Ok(output) => problems.push(format!(
                "{}: rejected by check-config: {}",
                config.label,
                describe(&output)
            )),
            Err(problem) => problems.push(format!("{}: {problem}", config.label)),
        }
        if config.in_configmap {
            let url = config
                .text
                .parse::<Table>()
                .ok()
                .and_then(|table| table.get("store")?.get("url")?.as_str().map(str::to_owned));
            if url.as_deref().is_some_and(url_has_password) {
                problems.push(format!(
                    "{}: store.url carries a password in a ConfigMap; use PGPASSWORD from a Secret",
                    config.label
                ));
            }
        }
    }

    let labels: BTreeSet<&str> = configs.iter().map(|config| config.label.as_str()).collect();
    for expected in EXPECTED_CONFIGS {
        if !labels.contains(expected) {
            problems.push(format!(
                "expected authgate config {expected} not found; found: {labels:?}"
            ));
        }
    }
    assert!(
        yaml_files >= 2 && toml_files >= 1,
        "too few files: {yaml_files} YAML, {toml_files} TOML"
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n\n")
    );
    eprintln!(
        "checked {yaml_files} YAML and {toml_files} TOML file(s); {} authgate config(s) pass check-config: {labels:?}",
        configs.len()
    );
}

/// The rewriting covers every file-path key, including those of TLS, mTLS,
/// https upstreams and asymmetric JWT keys, which the shipped configs do not
/// use yet.
#[test]
fn tls_and_jwt_key_paths_are_provided_for_check_config() {
    let text = r#"
[server]
listen = "127.0.0.1:8080"
[server.tls]
listen = "0.0.0.0:8443"
cert = "/etc/authgate/tls/tls.crt"
key = "/etc/authgate/tls/tls.key"
client_ca = "/etc/authgate/tls/clients-ca.crt"
client_auth = "optional"

[store]
url = "sqlite://data/authgate.db"

[upstream]
ca_file = "/etc/authgate/upstream/ca.crt"
client_cert = "/etc/authgate/upstream/client.crt"
client_key = "/etc/authgate/upstream/client.key"

[[jwt.keys]]
kid = "es"
algorithm = "ES256"
private_key = "/etc/authgate/jwt/es256.pem"
public_key = "/etc/authgate/jwt/es256.pub.pem"

[[jwt.keys]]
kid = "ed"
algorithm = "EdDSA"
public_key = "/etc/authgate/jwt/ed25519.pub.pem"

[[jwt.keys]]
kid = "rs"
algorithm = "RS256"
public_key = "/etc/authgate/jwt/rs256.pub.pem"

[[route]]
path_prefix = "/"
upstream = "https://api.internal:9443"
"#;
    let mut fx = Fixtures::new();
    let output = check_config(text, &mut fx).unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("config OK"),
        "{}",
        describe(&output)
    );
}

/// check-config really validates the rewritten copy: an unknown key and a
/// missing secret file are still rejected.
#[test]
fn check_config_still_rejects_bad_configs() {
    let mut fx = Fixtures::new();
    let unknown_key = "[server]\nlisten = \"0.0.0.0:8080\"\nlisten_port = 1\n\
                       [jwt]\nsecret_file = \"/etc/authgate/secret/jwt.secret\"\n";
    let output = check_config(unknown_key, &mut fx).unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        describe(&output).contains("listen_port"),
        "{}",
        describe(&output)
    );

    let no_key = "[server]\nlisten = \"0.0.0.0:8080\"\n[jwt]\nissuer = \"authgate\"\n";
    let output = check_config(no_key, &mut fx).unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
}

#[test]
fn configs_are_found_in_configmaps_and_secrets() {
    let encoded = base64::engine::general_purpose::STANDARD.encode("[server]\nlisten = \"b\"\n");
    let stream = format!(
        r#"# a comment before the first document
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: plain}}
data:
  authgate.toml: |
    [server]
    listen = "a"
  other.toml: "ignored"
---
apiVersion: v1
kind: Secret
metadata: {{name: encoded}}
data:
  authgate.toml: {encoded}
---
apiVersion: v1
kind: Secret
metadata: {{name: string}}
stringData:
  authgate.toml: "[server]\nlisten = \"c\"\n"
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ignored}}
data:
  authgate.toml: "not a ConfigMap"
---
"#
    );
    let documents = yaml_documents(&stream).unwrap();
    let found: Vec<(String, String, bool)> = documents
        .iter()
        .flat_map(|document| configs_in_document(document).unwrap())
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "ConfigMap/plain/data/authgate.toml".to_owned(),
                "[server]\nlisten = \"a\"\n".to_owned(),
                true
            ),
            (
                "Secret/encoded/data/authgate.toml".to_owned(),
                "[server]\nlisten = \"b\"\n".to_owned(),
                false
            ),
            (
                "Secret/string/stringData/authgate.toml".to_owned(),
                "[server]\nlisten = \"c\"\n".to_owned(),
                false
            ),
        ]
    );
    assert!(yaml_documents("a: [unclosed").is_err());
    assert!(url_has_password(
        "postgres://authgate:hunter2@postgres/authgate"
    ));
    assert!(!url_has_password(
        "postgres://authgate@postgres:5432/authgate"
    ));
}

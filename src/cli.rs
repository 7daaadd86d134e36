//! The command line: `serve`, `check-config`, and the operator commands on
//! users, keys and tokens. Every command exits non-zero with one line on
//! bad input.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::auth::{accesskey, digest, password, throttle};
use crate::clock::rfc3339;
use crate::clock::unix_now;
use crate::config::{Config, StoreUrl};
use crate::names::{valid_role, valid_username};
use crate::store::{Store, StoreError};
use crate::text::escape_for_terminal as escape;

/// Default config path.
pub const DEFAULT_CONFIG: &str = "config/authgate.toml";
/// Default access key validity for `key create`: one year.
const DEFAULT_KEY_EXPIRE_SECS: u64 = 365 * 86_400;
/// Longest password accepted on stdin.
const MAX_PASSWORD_BYTES: usize = 1024;

/// authgate: an authenticating reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "authgate", version, about)]
pub struct Cli {
    /// Config file.
    #[arg(long, global = true, env = "AUTHGATE_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Tokio worker threads (default: one per core).
        #[arg(long, env = "AUTHGATE_WORKERS")]
        workers: Option<usize>,
    },
    /// Validate the config and every file it names.
    CheckConfig,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Mint tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the login throttle.
    #[command(subcommand)]
    Login(LoginCommand),
    /// Print the one-time-key answer a backend holding HA1 would compute.
    OtkToken {
        /// The one-time key from POST /auth/onetimekey.
        #[arg(long)]
        key: String,
        /// Username.
        #[arg(long)]
        user: String,
        /// Read the password from stdin.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Realm (default: onetimekey.realm of the config, or voximplant.com).
        #[arg(long)]
        realm: Option<String>,
    },
}

/// `authgate user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Add {
        /// Username.
        name: String,
        /// Read the password from stdin.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// A role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Change a password; older tokens and the user's access keys stop working.
    Passwd {
        /// Username.
        name: String,
        /// Read the password from stdin.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Remove a user; their tokens and access keys stop working.
    Remove {
        /// Username.
        name: String,
    },
}

/// `authgate key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an access key; the key is shown only here.
    Create {
        /// Owner.
        #[arg(long)]
        user: String,
        /// Name.
        #[arg(long, default_value = "")]
        name: String,
        /// Detail.
        #[arg(long, default_value = "")]
        detail: String,
        /// Validity in seconds (default: one year).
        #[arg(long, default_value_t = DEFAULT_KEY_EXPIRE_SECS)]
        expire: u64,
        /// Narrow the key to this role of its owner (repeatable; default:
        /// the key follows its owner's roles).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Allow only this method (repeatable; default: all).
        #[arg(long = "method")]
        methods: Vec<String>,
        /// Allow only paths under this prefix (repeatable; default: all).
        #[arg(long = "path")]
        paths: Vec<String>,
        /// The key's own rate limit: sustained requests per second
        /// (0.0001 to 1000000; with --burst; default: none).
        #[arg(long)]
        rate: Option<f64>,
        /// The key's own rate limit: requests at once (1 to 1000000; with
        /// --rate).
        #[arg(long)]
        burst: Option<u64>,
    },
    /// List live access keys.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an access key by id.
    Revoke {
        /// Key id (UUID).
        id: String,
    },
    /// Disable an access key: refused like a deleted one until enabled.
    Disable {
        /// Key id (UUID).
        id: String,
    },
    /// Enable a disabled access key again.
    Enable {
        /// Key id (UUID).
        id: String,
    },
    /// Give an access key a new secret, shown only here; the old one keeps
    /// working for --grace seconds (0 to 604800, default 0).
    Reroll {
        /// Key id (UUID).
        id: String,
        /// Seconds the old secret keeps working.
        #[arg(long, default_value_t = 0)]
        grace: u64,
    },
}

/// `authgate token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a JWT for a user.
    Issue {
        /// Username.
        #[arg(long)]
        user: String,
        /// Lifetime in seconds (default: jwt.ttl).
        #[arg(long)]
        ttl: Option<u64>,
    },
}

/// `authgate login ...`
#[derive(Debug, Subcommand)]
pub enum LoginCommand {
    /// Clear the failed-login count and lockout of a user and/or a client
    /// address (all of them with neither); running gateways on the store
    /// see it at the next attempt.
    Unlock {
        /// Username.
        #[arg(long)]
        user: Option<String>,
        /// Client address (an IPv6 address clears its /64).
        #[arg(long)]
        address: Option<String>,
    },
}

/// A command that failed, with a one-line reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(String);

impl From<StoreError> for CliError {
    fn from(err: StoreError) -> Self {
        CliError(match err {
            StoreError::NotFound => "not found".into(),
            StoreError::AlreadyExists => "already exists".into(),
            StoreError::Unavailable(detail) => format!("store unavailable: {detail}"),
            StoreError::RoleNotHeld(role) => {
                format!("the key's owner does not hold role {}", escape(&role))
            }
            StoreError::KeyLimitReached => {
                "KEY_LIMIT_REACHED: the user holds accesskeys.max_per_user unexpired keys; delete one first".into()
            }
        })
    }
}

fn fail(message: impl Into<String>) -> CliError {
    CliError(message.into())
}

/// Sets up logging to stderr: `AUTHGATE_LOG` (default `info`) for `serve`,
/// warnings only for the other commands so their output stays clean.
/// `AUTHGATE_LOG_FORMAT=json` writes one JSON object per line. `serve` logs
/// through the batched sink ([`crate::logging`]); keep the guard until the
/// process ends, so that what is queued gets written.
pub fn init_tracing(cli: &Cli) -> crate::logging::LogGuard {
    match cli.command {
        Command::Serve { .. } => crate::logging::init("info", true),
        _ => crate::logging::init("warn", false),
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    // Default: one worker per core this process may run on (the affinity
    // mask and cgroup quota count, so `taskset -c 1` means one).
    let workers = match &cli.command {
        Command::Serve { workers } => workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        _ => 1,
    };
    // Thread-per-core: this thread's current-thread runtime is worker 0
    // and runs the background tasks; `server::serve` starts the others,
    // each with its own runtime, listener and upstream pool.
    crate::workers::set_count(workers);
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.enable_all();
    let runtime = runtime
        .build()
        .map_err(|err| fail(format!("cannot start the runtime: {err}")))?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::CheckConfig => check_config(&cli.config).await,
        Command::OtkToken {
            key,
            user,
            password_stdin: _,
            realm,
        } => {
            let password = read_password()?;
            let realm = realm.unwrap_or_else(|| realm_of(&cli.config));
            let ha1 = digest::ha1(&user, &realm, &password);
            println!("{}", digest::onetime_answer(&key, &ha1));
            Ok(())
        }
        command => {
            let config = load(&cli.config)?;
            if let Command::Serve { .. } = command {
                // Moved, not cloned: a copy held here for the server's life
                // would keep the first config's upstream pools (and their
                // health probers) alive after every reload.
                return serve(config, cli.config.clone()).await;
            }
            let mut store = LazyStore::new(&config);
            let result = match command {
                Command::Serve { .. } => unreachable!("handled above"),
                Command::User(command) => user(command, &config, &mut store).await,
                Command::Key(command) => key(command, &config, &mut store).await,
                Command::Token(TokenCommand::Issue { user, ttl }) => {
                    token(&user, ttl, &config, &mut store).await
                }
                Command::Login(LoginCommand::Unlock { user, address }) => {
                    unlock(user, address, &mut store).await
                }
                Command::CheckConfig | Command::OtkToken { .. } => unreachable!("handled above"),
            };
            store.close().await;
            result
        }
    }
}

fn load(path: &Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|err| {
        fail(format!(
            "invalid config {}: {}",
            path.display(),
            err.problems.join("; ")
        ))
    })
}

async fn check_config(path: &Path) -> Result<(), CliError> {
    match Config::load(path) {
        Ok(config) => {
            // Pairs that are readable but do not go together (or hold no
            // certificate) are found only by loading them.
            if let Some(tls) = &config.server.tls
                && let Err(err) = crate::tls::CertResolver::try_new(tls, crate::tls::provider())
            {
                println!("server.tls: {err}");
                return Err(fail(format!("1 problem(s) in {}", path.display())));
            }
            // What only the network and the disk can tell: ACME's CA and cache.
            if let Some(acme) = config.server.tls.as_ref().and_then(|t| t.acme.as_ref()) {
                let problems = crate::tls::acme::preflight(acme).await;
                if !problems.is_empty() {
                    for problem in &problems {
                        println!("{problem}");
                    }
                    return Err(fail(format!(
                        "{} problem(s) in {}",
                        problems.len(),
                        path.display()
                    )));
                }
            }
            for warning in config.warnings() {
                println!("{warning}");
            }
            println!(
                "config OK: {} route(s), store {}",
                config.routes.iter().count(),
                match &config.store.url {
                    StoreUrl::Sqlite(path) => format!("sqlite {}", path.display()),
                    StoreUrl::Postgres(_) => "postgres".into(),
                }
            );
            Ok(())
        }
        Err(err) => {
            for problem in &err.problems {
                println!("{problem}");
            }
            Err(fail(format!(
                "{} problem(s) in {}",
                err.problems.len(),
                path.display()
            )))
        }
    }
}

/// The realm of the config at `path`, or the default when there is none.
fn realm_of(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| {
            table
                .get("onetimekey")?
                .get("realm")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "voximplant.com".into())
}

async fn serve(config: Config, path: PathBuf) -> Result<(), CliError> {
    crate::run(config, Some(path), crate::signals::shutdown_signal())
        .await
        .map_err(|err| fail(err.to_string()))
}

/// Reads a password from stdin, one trailing newline stripped.
fn read_password() -> Result<String, CliError> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_PASSWORD_BYTES as u64 + 2)
        .read_to_end(&mut bytes)
        .map_err(|err| fail(format!("cannot read the password from stdin: {err}")))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(fail("the password on stdin is empty"));
    }
    if bytes.len() > MAX_PASSWORD_BYTES {
        return Err(fail(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| fail("the password is not UTF-8"))
}

fn hash_password(password: &str) -> Result<String, CliError> {
    password::hash_password(password)
        .map_err(|err| fail(format!("cannot hash the password: {err}")))
}

/// The store of a command, opened when first needed (bad input is refused
/// before any file is created) and closed when the command ends, so that
/// SQLite folds its write-ahead log back into the database file instead of
/// leaving it beside it.
struct LazyStore<'a> {
    config: &'a Config,
    opened: Option<Store>,
}

impl<'a> LazyStore<'a> {
    fn new(config: &'a Config) -> Self {
        LazyStore {
            config,
            opened: None,
        }
    }

    async fn open(&mut self) -> Result<Store, CliError> {
        if let Some(store) = &self.opened {
            return Ok(store.clone());
        }
        let store = Store::open(&self.config.store.url)
            .await
            .map_err(|err| fail(format!("cannot open the store: {}", err.detail())))?;
        self.opened = Some(store.clone());
        Ok(store)
    }

    async fn close(self) {
        if let Some(store) = self.opened {
            store.close().await;
        }
    }
}

async fn user(
    command: UserCommand,
    config: &Config,
    store: &mut LazyStore<'_>,
) -> Result<(), CliError> {
    let realm = &config.onetimekey.realm;
    match command {
        UserCommand::Add {
            name,
            password_stdin: _,
            roles,
        } => {
            if !valid_username(&name) {
                return Err(fail(format!(
                    "invalid username {name:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
                )));
            }
            if let Some(role) = roles.iter().find(|role| !valid_role(role)) {
                return Err(fail(format!(
                    "invalid role {role:?}: use 1 to 64 letters, digits, '.', '_', ':' or '-'"
                )));
            }
            let password = read_password()?;
            let store = store.open().await?;
            let phc = hash_password(&password)?;
            let ha1 = digest::ha1(&name, realm, &password);
            match store
                .create_user(&name, &phc, &ha1, realm, &roles, unix_now())
                .await
            {
                Err(StoreError::AlreadyExists) => Err(fail(format!("user {name} already exists"))),
                other => other.map_err(CliError::from),
            }?;
            println!("created user {name}");
        }
        UserCommand::Passwd {
            name,
            password_stdin: _,
        } => {
            let password = read_password()?;
            let store = store.open().await?;
            // A provider's users sign in there; a password here would be
            // a second way in that the provider does not control.
            if let Some(provider) = store.user(&name).await?.and_then(|user| user.provider) {
                return Err(fail(format!(
                    "{} signs in through the identity provider {}; it has no password here",
                    escape(&name),
                    escape(&provider)
                )));
            }
            let phc = hash_password(&password)?;
            let ha1 = digest::ha1(&name, realm, &password);
            match store
                .set_password(&name, &phc, &ha1, realm, unix_now())
                .await
            {
                Err(StoreError::NotFound) => Err(fail(format!("no user named {}", escape(&name)))),
                other => other.map_err(CliError::from),
            }?;
            println!("password changed for {name}");
        }
        UserCommand::List => {
            let store = store.open().await?;
            println!("NAME\tROLES\tCREATED");
            for user in store.users().await? {
                println!(
                    "{}\t{}\t{}",
                    escape(&user.username),
                    escape(&user.roles.join(",")),
                    rfc3339(user.created_at)
                );
            }
        }
        UserCommand::Remove { name } => {
            let store = store.open().await?;
            match store.remove_user(&name, unix_now()).await {
                Err(StoreError::NotFound) => Err(fail(format!("no user named {}", escape(&name)))),
                other => other.map_err(CliError::from),
            }?;
            println!("removed user {name}");
        }
    }
    Ok(())
}

/// A key field refused by the rules the API applies too, as one line
/// naming the flag.
fn refused(problem: accesskey::FieldProblem) -> CliError {
    fail(format!("{}: {}", problem.field.cli_flag(), problem.message))
}

async fn key(
    command: KeyCommand,
    config: &Config,
    store: &mut LazyStore<'_>,
) -> Result<(), CliError> {
    let store = store.open().await?;
    match command {
        KeyCommand::Create {
            user,
            name,
            detail,
            expire,
            roles,
            methods,
            paths,
            rate,
            burst,
        } => {
            let expire = accesskey::check_expire(i64::try_from(expire).ok()).map_err(refused)?;
            accesskey::check_labels(&name, &detail).map_err(refused)?;
            let rate_limit = match (rate, burst) {
                (None, None) => None,
                (Some(rate), Some(burst)) => {
                    Some(accesskey::check_rate_limit(Some(rate), Some(burst)).map_err(refused)?)
                }
                _ => return Err(fail("--rate and --burst are given together")),
            };
            let scope = crate::scope::KeyScope {
                roles: (!roles.is_empty()).then_some(roles),
                methods,
                path_prefixes: paths,
            };
            accesskey::check_scope(&scope).map_err(refused)?;
            let owner = match store.user(&user).await? {
                Some(found) => crate::auth::StoreUser::from_record(&found),
                None => return Err(fail(format!("no user named {}", escape(&user)))),
            };
            let request = accesskey::KeyRequest {
                owner: &owner,
                name: &name,
                detail: &detail,
                expires_in: expire,
                scope: &scope,
                rate_limit,
                max_per_user: config.accesskeys.max_per_user,
            };
            let created = accesskey::issue(&store, request, unix_now()).await;
            let created = match created {
                Err(StoreError::NotFound) => {
                    return Err(fail(format!("no user named {}", escape(&user))));
                }
                other => other?,
            };
            println!("id: {}", created.stored.id);
            println!("key: {}", created.key);
        }
        KeyCommand::List { user } => {
            println!(
                "ID\tUSER\tNAME\tTOKEN_PREFIX\tEXPIRES\tLAST_USED\tROLES\tMETHODS\tPATHS\tENABLED\tUSES\tREROLLED\tRATE_LIMIT"
            );
            let mut before: Option<String> = None;
            loop {
                let page = store.keys(user.as_deref(), before.as_deref(), 500).await?;
                for key in &page {
                    let list = |items: &[String]| match items {
                        [] => "*".to_owned(),
                        items => items.join(","),
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        key.id,
                        escape(&key.username),
                        escape(&key.name),
                        escape(&key.token_prefix),
                        rfc3339(key.tm_expire),
                        key.tm_last_used.map(rfc3339).unwrap_or_else(|| "-".into()),
                        key.scope
                            .roles
                            .as_deref()
                            .map_or_else(|| "(owner's)".to_owned(), |roles| roles.join(",")),
                        list(&key.scope.methods),
                        list(&key.scope.path_prefixes),
                        if key.enabled { "yes" } else { "no" },
                        key.uses,
                        key.tm_rerolled.map(rfc3339).unwrap_or_else(|| "-".into()),
                        key.rate_limit.map_or_else(
                            || "-".to_owned(),
                            |limit| format!("{}/s burst {}", limit.rate, limit.burst)
                        ),
                    );
                }
                match page.last() {
                    Some(last) if page.len() == 500 => before = Some(last.id.clone()),
                    _ => break,
                }
            }
        }
        KeyCommand::Revoke { id } => {
            if uuid::Uuid::parse_str(&id).is_err() {
                return Err(fail(format!("{id:?} is not a key id (UUID)")));
            }
            match store.delete_key(&id, None, unix_now()).await {
                Err(StoreError::NotFound) => return Err(fail(format!("no live key with id {id}"))),
                other => other?,
            };
            println!("revoked key {id}");
        }
        KeyCommand::Disable { id } => set_key_enabled(&store, &id, false).await?,
        KeyCommand::Enable { id } => set_key_enabled(&store, &id, true).await?,
        KeyCommand::Reroll { id, grace } => {
            if uuid::Uuid::parse_str(&id).is_err() {
                return Err(fail(format!("{id:?} is not a key id (UUID)")));
            }
            let grace = accesskey::check_grace(i64::try_from(grace).ok()).map_err(refused)?;
            let (key, hash_hex, prefix) = accesskey::fresh_secret();
            // The change log carries the replaced secret's new end to every
            // running gateway.
            match store
                .reroll_key(&id, None, &hash_hex, &prefix, grace, unix_now())
                .await
            {
                Err(StoreError::NotFound) => return Err(fail(format!("no live key with id {id}"))),
                other => other?,
            };
            println!("id: {id}");
            println!("key: {key}");
        }
    }
    Ok(())
}

/// `key disable` / `key enable`: the change log carries it to every
/// running gateway, which forgets what it cached about the key.
async fn set_key_enabled(store: &Store, id: &str, enabled: bool) -> Result<(), CliError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(fail(format!("{id:?} is not a key id (UUID)")));
    }
    let current = match store.key(id, None).await {
        Err(StoreError::NotFound) => return Err(fail(format!("no live key with id {id}"))),
        other => other?,
    };
    let update = crate::store::KeyUpdate {
        name: &current.name,
        detail: &current.detail,
        enabled: Some(enabled),
    };
    store.update_key(id, None, update, unix_now()).await?;
    println!("{} key {id}", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

async fn token(
    user: &str,
    ttl: Option<u64>,
    config: &Config,
    store: &mut LazyStore<'_>,
) -> Result<(), CliError> {
    let store = store.open().await?;
    let found = store
        .user(user)
        .await?
        .ok_or_else(|| fail(format!("no user named {}", escape(user))))?;
    if ttl == Some(0) {
        return Err(fail("--ttl must be at least 1 second"));
    }
    let (token, _) = config
        .jwt
        .keys
        .issue(
            &found.username,
            &found.roles,
            found.generation,
            ttl.map(Duration::from_secs),
            unix_now(),
        )
        .map_err(|err| fail(format!("cannot sign the token: {err}")))?;
    println!("{token}");
    Ok(())
}

async fn unlock(
    user: Option<String>,
    address: Option<String>,
    store: &mut LazyStore<'_>,
) -> Result<(), CliError> {
    let mut subjects = Vec::new();
    let mut what = Vec::new();
    if let Some(user) = &user {
        if !valid_username(user) {
            return Err(fail(format!(
                "invalid username {user:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
            )));
        }
        subjects.push(throttle::user_subject(user));
        what.push(format!("user {user}"));
    }
    if let Some(address) = &address {
        let ip: std::net::IpAddr = address
            .trim()
            .parse()
            .map_err(|_| fail(format!("--address {address:?} is not an IP address")))?;
        subjects.push(throttle::address_subject(ip));
        what.push(format!("address {ip}"));
    }
    let store = store.open().await?;
    store.throttle_unlock(&subjects).await?;
    if what.is_empty() {
        println!("cleared the login throttle of every user and address");
    } else {
        println!("cleared the login throttle of {}", what.join(" and "));
    }
    Ok(())
}

//! Users: their password hashes, HA1 digests, roles and credential
//! generations.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::accesskeys::revoke_user_keys;
use super::changes::Change;
use super::{Store, StoreError, join_roles, split_roles};

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// UUID.
    pub id: String,
    /// Login name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// md5hex(user:realm:password).
    pub ha1: String,
    /// The realm HA1 was computed with.
    pub ha1_realm: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Credential generation; changes on password change.
    pub generation: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// The `[[oidc]]` provider the user signs in through; `None` for local
    /// users. Provider users have no password and no HA1.
    pub provider: Option<String>,
    /// The provider's `sub` this user is bound to (first sign-in); `None`
    /// for local users and for provider users not signed in since the
    /// column was added.
    pub provider_subject: Option<String>,
}

/// Why a sign-in through a provider was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConflict {
    /// The name belongs to a local user (`None`) or another provider's.
    OtherHolder(Option<String>),
    /// The name belongs to another account (`sub`) of the same provider.
    OtherSubject,
}

pub use crate::names::LOCAL_PROVIDER;

impl User {
    /// `local` or the `[[oidc]]` provider's name.
    pub fn provider_name(&self) -> &str {
        self.provider.as_deref().unwrap_or(LOCAL_PROVIDER)
    }
}

fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        ha1: row.try_get("ha1")?,
        ha1_realm: row.try_get("ha1_realm")?,
        roles: split_roles(&row.try_get::<String, _>("roles")?),
        generation: row.try_get("generation")?,
        created_at: row.try_get("created_at")?,
        provider: row.try_get("provider")?,
        provider_subject: row.try_get("provider_subject")?,
    })
}

/// Whether going from roles `before` to `after` removes any: then the
/// tokens issued before carry a role the user no longer has.
pub(super) fn takes_roles_away(before: &[String], after: &[String]) -> bool {
    before.iter().any(|role| !after.contains(role))
}

/// A generation strictly newer than `previous` (microseconds since the epoch,
/// so a removed and re-created user never gets an old generation back).
pub(super) fn next_generation(previous: i64) -> i64 {
    let micros = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000)
        .unwrap_or(i64::MAX);
    micros.max(previous.saturating_add(1))
}

impl Store {
    /// Creates a user; `AlreadyExists` when the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        ha1: &str,
        realm: &str,
        roles: &[String],
        now: i64,
    ) -> Result<User, StoreError> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            ha1: ha1.to_owned(),
            ha1_realm: realm.to_owned(),
            roles: roles.to_vec(),
            generation: next_generation(0),
            created_at: now,
            provider: None,
            provider_subject: None,
        };
        self.insert_user(&user, now).await?;
        Ok(user)
    }

    /// Records a sign-in through `provider` by its account `subject`
    /// (`sub`): creates the user on first sign-in, bound to `subject`, and
    /// sets the roles the provider gave this time. A name that belongs to a
    /// local user, another provider or another `sub` is never taken over.
    /// A sign-in that takes a role away starts a new credential generation,
    /// which ends the user's earlier tokens (as a password change does).
    pub async fn record_provider_user(
        &self,
        username: &str,
        provider: &str,
        subject: &str,
        roles: &[String],
        now: i64,
    ) -> Result<Result<User, ProviderConflict>, StoreError> {
        // Two sign-ins at once: the loser of the insert or of the update
        // reads the row the winner left.
        for _ in 0..3 {
            match self.user(username).await? {
                Some(user) if user.provider.as_deref() != Some(provider) => {
                    return Ok(Err(ProviderConflict::OtherHolder(user.provider)));
                }
                Some(user)
                    if user
                        .provider_subject
                        .as_deref()
                        .is_some_and(|bound| bound != subject) =>
                {
                    return Ok(Err(ProviderConflict::OtherSubject));
                }
                Some(user) => {
                    if let Some(user) = self.update_provider_user(user, subject, roles, now).await?
                    {
                        return Ok(Ok(user));
                    }
                }
                None => {
                    let user = User {
                        id: uuid::Uuid::new_v4().to_string(),
                        username: username.to_owned(),
                        // No password: the empty hash and HA1 match nothing,
                        // and logins refuse provider users before looking.
                        password_hash: String::new(),
                        ha1: String::new(),
                        ha1_realm: String::new(),
                        roles: roles.to_vec(),
                        generation: next_generation(0),
                        created_at: now,
                        provider: Some(provider.to_owned()),
                        provider_subject: Some(subject.to_owned()),
                    };
                    match self.insert_user(&user, now).await {
                        Ok(()) => return Ok(Ok(user)),
                        Err(StoreError::AlreadyExists) => continue,
                        Err(err) => return Err(err),
                    }
                }
            }
        }
        Err(StoreError::AlreadyExists)
    }

    /// Binds `user` to `subject` when not bound yet and sets `roles`, with
    /// a new generation when a role goes away; `None` when the row changed
    /// since it was read (another sign-in, a password change, a removal).
    async fn update_provider_user(
        &self,
        mut user: User,
        subject: &str,
        roles: &[String],
        now: i64,
    ) -> Result<Option<User>, StoreError> {
        let takes_away = takes_roles_away(&user.roles, roles);
        if user.roles == roles && user.provider_subject.is_some() {
            return Ok(Some(user));
        }
        let generation = if takes_away {
            next_generation(user.generation)
        } else {
            user.generation
        };
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE users SET roles = $1, generation = $2, provider_subject = $3, updated_at = $4 \
             WHERE username = $5 AND provider = $6 AND generation = $7 \
             AND (provider_subject IS NULL OR provider_subject = $3)",
        )
        .bind(join_roles(roles))
        .bind(generation)
        .bind(subject)
        .bind(now)
        .bind(&user.username)
        .bind(user.provider.as_deref())
        .bind(user.generation)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        // Caches here and on other replicas drop the user's tokens and
        // keys: a new generation, or keys whose owner's roles changed.
        self.log_change(&mut tx, &Change::User(user.username.clone()), now)
            .await?;
        tx.commit().await?;
        user.roles = roles.to_vec();
        user.generation = generation;
        user.provider_subject = Some(subject.to_owned());
        Ok(Some(user))
    }

    /// Inserts `user` (`AlreadyExists` when the name is taken) and logs
    /// the change: a new user of a removed user's name must not revive
    /// cached state.
    async fn insert_user(&self, user: &User, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, ha1, ha1_realm, roles, generation, created_at, updated_at, provider, provider_subject) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(&user.ha1)
        .bind(&user.ha1_realm)
        .bind(join_roles(&user.roles))
        .bind(user.generation)
        .bind(now)
        .bind(user.provider.as_deref())
        .bind(user.provider_subject.as_deref())
        .execute(&mut *tx)
        .await?;
        self.log_change(&mut tx, &Change::User(user.username.clone()), now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user named `username`, if any.
    pub async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// Sets a new password: a new generation (older tokens stop working) and
    /// every access key of the user revoked.
    pub async fn set_password(
        &self,
        username: &str,
        password_hash: &str,
        ha1: &str,
        realm: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let previous: i64 = sqlx::query("SELECT generation FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?
            .try_get("generation")?;
        sqlx::query(
            "UPDATE users SET password_hash = $1, ha1 = $2, ha1_realm = $3, generation = $4, updated_at = $5 \
             WHERE username = $6",
        )
        .bind(password_hash)
        .bind(ha1)
        .bind(realm)
        .bind(next_generation(previous))
        .bind(now)
        .bind(username)
        .execute(&mut *tx)
        .await?;
        revoke_user_keys(&mut tx, username, now).await?;
        self.log_change(&mut tx, &Change::User(username.to_owned()), now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a user and revokes their keys.
    pub async fn remove_user(&self, username: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let removed = sqlx::query("DELETE FROM users WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            return Err(StoreError::NotFound);
        }
        revoke_user_keys(&mut tx, username, now).await?;
        sqlx::query("DELETE FROM onetime_keys WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        self.log_change(&mut tx, &Change::User(username.to_owned()), now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many users have an HA1 made with a realm other than `realm`.
    pub async fn users_with_other_realm(&self, realm: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users WHERE ha1_realm <> $1 AND provider IS NULL",
        )
        .bind(realm)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip() {
        assert_eq!(split_roles(""), Vec::<String>::new());
        let roles = vec!["admin".to_owned(), "ops".to_owned()];
        assert_eq!(split_roles(&join_roles(&roles)), roles);
    }

    #[test]
    fn only_a_removed_role_takes_roles_away() {
        let roles = |list: &[&str]| list.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        assert!(takes_roles_away(
            &roles(&["admin", "dev"]),
            &roles(&["dev"])
        ));
        assert!(takes_roles_away(&roles(&["admin"]), &roles(&[])));
        assert!(takes_roles_away(&roles(&["admin"]), &roles(&["ops"])));
        assert!(!takes_roles_away(&roles(&["dev"]), &roles(&["dev", "ops"])));
        assert!(!takes_roles_away(&roles(&["a", "b"]), &roles(&["b", "a"])));
        assert!(!takes_roles_away(&roles(&[]), &roles(&[])));
    }

    #[test]
    fn generations_only_grow() {
        let first = next_generation(0);
        assert!(next_generation(first) > first);
        assert_eq!(next_generation(i64::MAX - 1), i64::MAX);
    }
}

//! Throttling of failed logins, per username and per client address, and
//! the bound on concurrent password hashes.
//!
//! A fixed window per subject: `max_failures` failures of a user (or
//! `address_max_failures` of a client address) within `window` lock the
//! subject out for `lockout`, during which even the right password is
//! refused; it lifts by itself, or by `authgate login unlock`.
//!
//! Admission is one statement in the store that counts the attempt as
//! pending and answers whether it may proceed: a subject admits at most
//! `max - failures - pending` attempts, however many arrive at once and on
//! however many replicas, so no more than `max` passwords are ever checked
//! per window. The attempt's outcome then settles it (a failure counts, a
//! success clears the user's failures). The counters live in the store, so
//! every replica on a shared PostgreSQL counts the same attempts, nothing
//! is cached (an unlock is seen at the next attempt), and memory use does
//! not grow with the number of usernames or addresses tried.

use std::net::IpAddr;

use ipnet::Ipv6Net;
use std::sync::Arc;

use crate::auth::password::HashLimiter;
use crate::clock::unix_now;
use crate::config::LoginConfig;
use crate::names::valid_username;
use crate::store::{Settle, Store, StoreError};

/// The throttle row of every name that cannot be a user, so long or random
/// names cannot grow the table.
const INVALID_USER_SUBJECT: &str = "user:*invalid*";
/// `Retry-After` when a subject's budget is taken by attempts still being
/// checked (they finish within a hash's time).
const PENDING_RETRY_AFTER_SECS: u64 = 1;

/// The throttle row of a username.
pub fn user_subject(username: &str) -> String {
    if valid_username(username) {
        format!("user:{username}")
    } else {
        INVALID_USER_SUBJECT.to_owned()
    }
}

/// The throttle row of a client address: IPv4 (also when IPv4-mapped) as
/// is, IPv6 by its /64, which one host usually has whole.
pub fn address_subject(ip: IpAddr) -> String {
    match address_block(ip) {
        IpAddr::V6(block) if ip.to_canonical().is_ipv6() => format!("addr:{block}/64"),
        block => format!("addr:{block}"),
    }
}

/// The address that stands for a client: IPv4 (also when IPv4-mapped) as
/// is, IPv6 as its /64 with the host bits cleared. Shared by the login
/// throttle and the rate limits.
pub fn address_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            // A /64 always exists; `trunc` clears the host bits.
            None => match Ipv6Net::new(v6, 64) {
                Ok(net) => IpAddr::V6(net.trunc().addr()),
                Err(_) => IpAddr::V6(v6),
            },
        },
    }
}

/// Login throttle, backed by the store; cheap to clone.
#[derive(Clone)]
pub struct LoginThrottle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: LoginConfig,
    hashes: HashLimiter,
}

/// An attempt the throttle admitted. Settle it with [`Attempt::succeeded`]
/// or [`Attempt::failed`]; one dropped unsettled (the client went away
/// mid-check) is counted as a failure, so hanging up cannot dodge the count.
pub struct Attempt {
    throttle: LoginThrottle,
    user: String,
    address: String,
    settled: bool,
}

impl LoginThrottle {
    /// A throttle over `store`, bounding password hashes with `hashes`
    /// (shared by config snapshots while the bound stays the same).
    pub fn new(store: Store, config: &LoginConfig, hashes: HashLimiter) -> Self {
        LoginThrottle {
            inner: Arc::new(Inner {
                store,
                config: config.clone(),
                hashes,
            }),
        }
    }

    /// The bound on password hashes computed at once.
    pub fn hashes(&self) -> &HashLimiter {
        &self.inner.hashes
    }

    /// Counts an attempt for `user` from `address` and admits it, or
    /// `Ok(Err(seconds))` when either subject is locked out or its budget is
    /// taken by attempts still in flight.
    pub async fn admit(
        &self,
        user: String,
        address: String,
    ) -> Result<Result<Attempt, u64>, StoreError> {
        let now = unix_now();
        let config = &self.inner.config;
        let answers = self
            .inner
            .store
            .throttle_admit(
                [
                    (&user, i64::from(config.max_failures)),
                    (&address, i64::from(config.address_max_failures)),
                ],
                now,
                secs(config.window),
            )
            .await?;
        let refused = answers.iter().filter(|a| !a.admitted).map(|a| {
            if a.locked_until > now {
                u64::try_from(a.locked_until - now).unwrap_or(1).max(1)
            } else {
                PENDING_RETRY_AFTER_SECS
            }
        });
        let Some(retry_after) = refused.max() else {
            return Ok(Ok(Attempt {
                throttle: self.clone(),
                user,
                address,
                settled: false,
            }));
        };
        // One subject may have counted the attempt before the other refused
        // it: take it back, since no password will be checked.
        for answer in answers.iter().filter(|a| a.admitted) {
            self.inner
                .store
                .throttle_settle(&answer.subject, Settle::Withdraw, now)
                .await?;
        }
        Ok(Err(retry_after))
    }
}

impl Attempt {
    /// The right credential: the user's failures are forgotten (the
    /// address's stay: one success does not vouch for its neighbours).
    pub async fn succeeded(mut self) -> Result<(), StoreError> {
        self.settled = true;
        let store = &self.throttle.inner.store;
        let now = unix_now();
        store
            .throttle_settle(&self.user, Settle::Cleared, now)
            .await?;
        store
            .throttle_settle(&self.address, Settle::Withdraw, now)
            .await?;
        Ok(())
    }

    /// A wrong credential: counted against the user and the address.
    /// Returns the subjects this failure locked out (for the audit log):
    /// the username, or `addr:` and the address.
    pub async fn failed(mut self) -> Result<Vec<String>, StoreError> {
        self.settled = true;
        self.throttle
            .record_failure(&self.user, &self.address)
            .await
    }
}

impl LoginThrottle {
    async fn record_failure(&self, user: &str, address: &str) -> Result<Vec<String>, StoreError> {
        let config = &self.inner.config;
        let lockout = secs(config.lockout);
        let now = unix_now();
        let mut locked = Vec::new();
        for (subject, max) in [
            (user, config.max_failures),
            (address, config.address_max_failures),
        ] {
            let settle = Settle::Failed {
                max: i64::from(max),
                lockout,
            };
            if self
                .inner
                .store
                .throttle_settle(subject, settle, now)
                .await?
            {
                locked.push(subject.strip_prefix("user:").unwrap_or(subject).to_owned());
            }
        }
        Ok(locked)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let throttle = self.throttle.clone();
        let (user, address) = (
            std::mem::take(&mut self.user),
            std::mem::take(&mut self.address),
        );
        runtime.spawn(async move {
            if let Err(err) = throttle.record_failure(&user, &address).await {
                tracing::warn!(error = %err.detail(), "cannot record an abandoned login attempt");
            }
        });
    }
}

fn secs(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_bounded() {
        assert_eq!(user_subject("alice"), "user:alice");
        let long = "x".repeat(60_000);
        for name in [long.as_str(), "", "a b", "a:b"] {
            assert_eq!(user_subject(name), INVALID_USER_SUBJECT);
        }
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(address_subject(v4), "addr:203.0.113.7");
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_subject(a), "addr:2001:db8:1:2::/64");
        assert_eq!(address_subject(a), address_subject(b));
        let mapped: IpAddr = "::ffff:198.51.100.4".parse().unwrap();
        assert_eq!(address_subject(mapped), "addr:198.51.100.4");
    }
}

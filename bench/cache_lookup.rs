//! Memory and lookup time of the access-key cache with many keys cached.
//!
//! `cargo run --release --example cache_lookup -- [KEYS]` (default 1,000,000):
//! fills the gateway's `CredentialCache` with KEYS positive entries the way
//! authentication does (SHA-256 of a key → key facts), then times lookups of
//! present and absent keys and prints the process's resident memory.

use std::time::{Duration, Instant};

use authgate::auth::accesskey;
use authgate::config::CacheConfig;
use authgate::store::cache::{CredentialCache, KeyFacts, Lookup};
use uuid::Uuid;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let keys: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let cache = CredentialCache::new(&CacheConfig {
        max_entries: keys + 1,
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(5),
    });
    let before = rss_kib();
    let now = Instant::now();
    let hashes: Vec<accesskey::KeyHash> = (0..keys)
        .map(|i| accesskey::hash(&format!("ag_benchmark-key-{i:012}")))
        .collect();
    let hashes_kib = rss_kib().saturating_sub(before);
    let started = Instant::now();
    for (i, hash) in hashes.iter().enumerate() {
        // As authentication builds them: owners shared through the cache.
        let owner = cache.key_owner(
            &format!("user{}", i % 1000),
            "local",
            vec!["reader".to_owned()],
        );
        let facts = KeyFacts {
            key_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | i as u128),
            roles: owner.roles.clone(),
            roles_value: owner.roles_value.clone(),
            owner,
            expires_at: i64::MAX,
            scope: None,
            rate_limit: None,
        };
        cache.put_key(*hash, Some(facts), now);
    }
    let fill = started.elapsed();
    let cache_kib = rss_kib().saturating_sub(before).saturating_sub(hashes_kib);

    let lookups = 2_000_000usize;
    let started = Instant::now();
    let mut found = 0usize;
    for i in 0..lookups {
        // A pseudo-random walk so lookups do not follow insertion order.
        let index = (i.wrapping_mul(2_654_435_761)) % keys;
        if matches!(cache.key(&hashes[index], now), Lookup::Fresh(Some(_))) {
            found += 1;
        }
    }
    let hit = started.elapsed();
    assert_eq!(found, lookups);

    // A full authentication of a key also hashes it; time that too.
    let started = Instant::now();
    for i in 0..lookups / 10 {
        let hash = accesskey::hash(&format!("ag_benchmark-key-{:012}", i % keys));
        std::hint::black_box(cache.key(&hash, now));
    }
    let hash_and_hit = started.elapsed() / (lookups as u32 / 10);

    println!("keys cached:            {keys}");
    println!("fill time:              {:.2} s", fill.as_secs_f64());
    println!(
        "cache memory (RSS):     {:.1} MiB ({:.0} bytes per key)",
        cache_kib as f64 / 1024.0,
        cache_kib as f64 * 1024.0 / keys as f64
    );
    println!(
        "process RSS:            {:.1} MiB",
        rss_kib() as f64 / 1024.0
    );
    println!(
        "lookup (hit):           {:.0} ns",
        hit.as_nanos() as f64 / lookups as f64
    );
    println!(
        "sha-256 + lookup (hit): {:.0} ns",
        hash_and_hit.as_nanos() as f64
    );
}

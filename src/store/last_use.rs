//! When access keys were last used and how often: noted in memory on the
//! request path (a map lookup and an atomic add; nothing waits on the
//! store) and written to the store in batches by a background task, the
//! last use at most once a minute per key, the count of uses every flush.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use uuid::Uuid;

/// A key's use is written at most once in this many seconds.
pub const RESOLUTION_SECS: i64 = 60;
/// How often noted uses are written: a first use shows within this.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Uses noted and not yet written.
#[derive(Debug, Default)]
pub struct LastUse {
    /// When each recently used key's use was last queued, unix seconds.
    /// Key ids come from the store, not from clients, so a fast hash is safe.
    queued: DashMap<Uuid, i64, foldhash::fast::RandomState>,
    /// Uses to write at the next flush.
    pending: Mutex<HashMap<Uuid, i64>>,
    /// Requests each key authenticated since the last flush.
    counts: DashMap<Uuid, AtomicU64, foldhash::fast::RandomState>,
    /// Batches written.
    pub flushes: AtomicU64,
    /// Rows changed by them.
    pub rows_written: AtomicU64,
}

impl LastUse {
    /// Notes a use of `key` at `now` (unix seconds), unless one was queued
    /// less than [`RESOLUTION_SECS`] ago.
    pub fn note(&self, key: Uuid, now: i64) {
        // Under the shard's read lock when the key is already counted.
        match self.counts.get(&key) {
            Some(count) => {
                count.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.counts
                    .entry(key)
                    .or_default()
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(queued) = self.queued.get(&key)
            && now - *queued < RESOLUTION_SECS
        {
            return;
        }
        self.queued.insert(key, now);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, now);
    }

    /// The uses to write now; forgets keys queued long enough ago that
    /// their next use is due anyway.
    pub fn take(&self, now: i64) -> Vec<(Uuid, i64)> {
        self.queued
            .retain(|_, queued| now - *queued < RESOLUTION_SECS);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.drain().collect()
    }

    /// The counts of uses since the last call, for keys used at all. A
    /// use counted while this runs is kept for the next call, never lost.
    pub fn take_counts(&self) -> Vec<(Uuid, u64)> {
        let mut taken = Vec::new();
        for entry in self.counts.iter() {
            let count = entry.value().swap(0, Ordering::Relaxed);
            if count > 0 {
                taken.push((*entry.key(), count));
            }
        }
        // Only counters still at zero: one that moved since is kept.
        self.counts
            .retain(|_, count| count.load(Ordering::Relaxed) > 0);
        taken
    }

    /// Adds counts back after a failed write.
    pub fn put_back_counts(&self, counts: Vec<(Uuid, u64)>) {
        for (key, count) in counts {
            self.counts
                .entry(key)
                .or_default()
                .fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Puts uses back after a failed write, unless newer ones were noted.
    pub fn put_back(&self, uses: Vec<(Uuid, i64)>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, at) in uses {
            pending.entry(key).or_insert(at);
        }
    }

    /// Counts a written batch.
    pub fn written(&self, rows: u64) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.rows_written.fetch_add(rows, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_queued_at_most_once_a_minute() {
        let uses = LastUse::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        for second in 0..100 {
            uses.note(a, 1000 + second / 10);
        }
        uses.note(b, 1005);
        let mut batch = uses.take(1010);
        batch.sort();
        assert_eq!(batch, vec![(a, 1000), (b, 1005)]);
        uses.note(a, 1059);
        assert!(uses.take(1059).is_empty(), "within the minute");
        uses.note(a, 1060);
        assert_eq!(uses.take(1060), vec![(a, 1060)]);
        uses.put_back(vec![(b, 1070)]);
        assert_eq!(uses.take(1071), vec![(b, 1070)]);
    }

    #[test]
    fn every_use_is_counted_once() {
        let uses = LastUse::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        for second in 0..100 {
            uses.note(a, 1000 + second);
        }
        uses.note(b, 1000);
        let mut counts = uses.take_counts();
        counts.sort();
        let mut expected = vec![(a, 100), (b, 1)];
        expected.sort();
        assert_eq!(counts, expected);
        assert!(uses.take_counts().is_empty());
        uses.note(a, 2000);
        uses.put_back_counts(vec![(a, 5)]);
        assert_eq!(uses.take_counts(), vec![(a, 6)]);
    }
}

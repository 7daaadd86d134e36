//! Thread-per-core: how many worker threads serve requests, and which one
//! the current thread is. Each worker runs its own current-thread runtime
//! with its own `SO_REUSEPORT` listener ([`crate::connection`]) and its own
//! upstream connection pool ([`crate::proxy`]), so a request never crosses
//! threads and the hot path shares only read-mostly state.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Sets the number of workers (`serve --workers`), once at start, before
/// the gateway is built; 0 counts as 1.
pub fn set_count(workers: usize) {
    COUNT.store(workers.max(1), Ordering::Relaxed);
}

/// The number of workers (1 unless [`set_count`] said otherwise).
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Marks the current thread as worker `index` (the main thread is 0).
pub fn enter(index: usize) {
    INDEX.with(|cell| cell.set(index));
}

/// The worker the current thread is: 0 on the main thread and on threads
/// that are not workers (blocking pools, the log thread).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_know_their_worker() {
        assert_eq!(current(), 0);
        let seen = std::thread::spawn(|| {
            enter(3);
            current()
        })
        .join()
        .unwrap();
        assert_eq!(seen, 3);
        assert_eq!(current(), 0, "another thread's index does not leak here");
    }
}

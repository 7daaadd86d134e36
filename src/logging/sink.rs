//! The batched stderr sink: log output is queued in memory and written by
//! one writer thread in large writes, so no request pays a system call for
//! its log line. Access records are formatted there too, off the request
//! path. Other lines (startup, warnings, errors) are written promptly; access
//! lines wait at most [`ACCESS_FLUSH_EVERY`] or until [`ACCESS_BATCH`] of
//! them are queued. Dropping the [`SinkGuard`] writes what is queued and
//! stops the thread.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::access::{AccessRecord, Format};

/// Longest an access line waits in memory before it is written.
pub const ACCESS_FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Queued access records that wake the writer before [`ACCESS_FLUSH_EVERY`].
pub const ACCESS_BATCH: usize = 512;
/// Queued entries at which writers wait for the writer thread (stderr is
/// not being read fast enough): the log slows the gateway down, as an
/// unbuffered stderr would, rather than losing lines or growing without end.
const MAX_QUEUED: usize = 64 * 1024;
/// Formatted bytes written in one `write` at most.
const WRITE_CHUNK: usize = 64 * 1024;

/// One queued piece of output, in arrival order.
// Access records are nearly every entry: boxing them would cost an
// allocation per request to save space on the rare lines.
#[allow(clippy::large_enum_variant)]
enum Entry {
    /// A line the tracing subscriber already formatted.
    Line(Vec<u8>),
    /// An access record, formatted by the writer thread.
    Access(AccessRecord),
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    /// A line that should not wait for the next batch was queued.
    urgent: bool,
    /// The guard was dropped: write what is left and stop.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Wakes writers waiting for room (see [`MAX_QUEUED`]).
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a valid queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, entry: Entry, urgent: bool) {
        let mut queue = self.lock();
        while queue.entries.len() >= MAX_QUEUED && !queue.closed {
            queue = self
                .room
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let was_empty = queue.entries.is_empty();
        queue.entries.push(entry);
        let batch_full = queue.entries.len() == ACCESS_BATCH;
        let wake = was_empty || batch_full || (urgent && !queue.urgent);
        queue.urgent |= urgent;
        drop(queue);
        // One wakeup per batch, not per line.
        if wake {
            self.wake.notify_one();
        }
    }
}

/// Where log output goes: cheap to clone, shared by every thread.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it wrote everything queued.
pub struct SinkGuard {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts the writer thread writing to `out` in `format`.
    pub fn start(
        out: impl Write + Send + 'static,
        format: Format,
    ) -> io::Result<(Sink, SinkGuard)> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
        });
        let writer = std::thread::Builder::new()
            .name("authgate-log".into())
            .spawn({
                let shared = shared.clone();
                move || write_loop(&shared, out, format)
            })?;
        let guard = SinkGuard {
            shared: shared.clone(),
            writer: Some(writer),
        };
        Ok((Sink { shared }, guard))
    }

    /// Queues a line formatted elsewhere; it is written promptly.
    pub fn line(&self, bytes: &[u8]) {
        self.shared.push(Entry::Line(bytes.to_vec()), true);
    }

    /// Queues an access record; it is formatted and written with the next
    /// batch.
    pub fn access(&self, record: AccessRecord) {
        self.shared.push(Entry::Access(record), false);
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: waits for entries, lets access lines gather for up
/// to [`ACCESS_FLUSH_EVERY`], then formats and writes them in large writes.
fn write_loop(shared: &Shared, mut out: impl Write, format: Format) {
    let mut taken = Vec::new();
    let mut text = Vec::with_capacity(WRITE_CHUNK + 4096);
    loop {
        let mut queue = shared.lock();
        while queue.entries.is_empty() && !queue.closed {
            queue = shared
                .wake
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let due = Instant::now() + ACCESS_FLUSH_EVERY;
        while !queue.urgent && !queue.closed && queue.entries.len() < ACCESS_BATCH {
            let Some(left) = due.checked_duration_since(Instant::now()) else {
                break;
            };
            queue = shared
                .wake
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let closed = queue.closed;
        queue.urgent = false;
        std::mem::swap(&mut queue.entries, &mut taken);
        drop(queue);
        shared.room.notify_all();

        for entry in taken.drain(..) {
            match entry {
                Entry::Line(line) => text.extend_from_slice(&line),
                Entry::Access(record) => record.write(format, &mut text),
            }
            if text.len() >= WRITE_CHUNK {
                let _ = out.write_all(&text);
                text.clear();
            }
        }
        if !text.is_empty() {
            let _ = out.write_all(&text);
            text.clear();
        }
        let _ = out.flush();
        if closed && shared.lock().entries.is_empty() {
            return;
        }
    }
}

/// A [`tracing_subscriber::fmt::MakeWriter`] that queues each formatted
/// event in the sink.
#[derive(Clone)]
pub struct SinkWriter(pub Sink);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer hands over one whole event per call.
        self.0.line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SinkWriter {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that records every `write` call.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn record(n: usize) -> AccessRecord {
        AccessRecord::sample(&format!("req-{n}"))
    }

    #[test]
    fn access_lines_are_written_in_batches_and_in_order() {
        let recorder = Recorder::default();
        let (sink, guard) = Sink::start(recorder.clone(), Format::Text).unwrap();
        // Spread over ~40 ms, well inside one batch interval: a writer that
        // wrote each line as it came would make dozens of writes.
        for n in 0..300 {
            sink.access(record(n));
            if n % 10 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(guard);
        let writes = recorder.0.lock().unwrap();
        assert!(writes.len() <= 3, "{} writes for 300 lines", writes.len());
        let text = String::from_utf8(writes.concat()).unwrap();
        let ids: Vec<usize> = text
            .lines()
            .map(|line| {
                let at = line.find("request.id=\"req-").unwrap() + "request.id=\"req-".len();
                line[at..].split('"').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(ids, (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn other_lines_are_written_promptly_and_access_lines_within_the_interval() {
        let recorder = Recorder::default();
        let (sink, _guard) = Sink::start(recorder.clone(), Format::Text).unwrap();
        sink.line(b"listening on http://127.0.0.1:1\n");
        let written = |needle: &str| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if String::from_utf8_lossy(&recorder.0.lock().unwrap().concat()).contains(needle) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        };
        assert!(written("listening on"));
        sink.access(record(1));
        assert!(written("request.id=\"req-1\""));
    }
}

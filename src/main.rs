//! The `authgate` command: parses the command line and dispatches.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc with background threads: memory freed after a burst (argon2id
/// takes 19 MiB a hash) goes back to the system within seconds, where
/// glibc's per-thread arenas keep it (bench/login_burst.sh: 641 MiB kept
/// after five bursts with glibc, 16 MiB with jemalloc, 29 MiB with mimalloc).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = authgate::cli::Cli::parse();
    let logging = authgate::cli::init_tracing(&cli);
    let result = authgate::cli::run(cli);
    // Queued log lines first, then the error line.
    drop(logging);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, whatever the cause's text holds.
            let message = err.to_string();
            let line: Vec<&str> = message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("error: {}", line.join("; "));
            ExitCode::FAILURE
        }
    }
}

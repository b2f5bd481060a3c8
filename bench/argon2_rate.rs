//! The raw argon2id verify rate of N threads, with the same parameters and code the server uses.
//! `cargo bench --bench argon2_rate` (env: THREADS, default the CPU count; SECONDS, default 10).
//! Prints one line: `argon2_verify_per_sec threads=N rate=R`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use keel::{
    accounts::passwords::{hash_blocking, verify_with},
    argon2_memory::WorkingMemory,
};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let threads = env_num("THREADS", cpus).max(1);
    let seconds = env_num("SECONDS", 10).max(1);
    let password = "BenchPassword123!";
    let hash = Arc::new(hash_blocking(password).expect("hash"));
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (hash, done, count) = (hash.clone(), done.clone(), count.clone());
            std::thread::spawn(move || {
                // Reused working memory, as the server's hashing threads do.
                let mut memory = WorkingMemory::new();
                while !done.load(Ordering::Relaxed) {
                    assert!(verify_with(password, &hash, &mut memory));
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = count.load(Ordering::Relaxed) as f64 / elapsed;
    println!("argon2_verify_per_sec threads={threads} rate={rate:.1}");
}

//! Submits no-op test tasks through the HTTP API for `bench/jobs.sh`, at a steady rate (the
//! latency runs) or one lone task at a time (the wake-up runs).
//!
//! `cargo bench --bench jobs_load -- URL TOKEN RATE SECONDS` submits RATE tasks a second for
//! SECONDS seconds over up to 64 connections; RATE 0 submits one task, waits for it to start,
//! and repeats SECONDS times, 100 ms apart. Prints how many were accepted and the errors.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [url, token, rate, seconds] = args.as_slice() else {
        eprintln!("usage: jobs_load URL TOKEN RATE SECONDS");
        std::process::exit(2);
    };
    let rate: u64 = rate.parse().expect("RATE");
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let client = keel::net::http_client()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let submit_url = format!("{url}/system/background-tasks/test-task");
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let submit = {
        let (client, token, submit_url) = (client.clone(), token.clone(), submit_url.clone());
        let (accepted, failed) = (accepted.clone(), failed.clone());
        move || {
            let (client, token, submit_url) = (client.clone(), token.clone(), submit_url.clone());
            let (accepted, failed) = (accepted.clone(), failed.clone());
            async move {
                let resp = client
                    .post(&submit_url)
                    .bearer_auth(&token)
                    .json(&json!({"message": "bench"}))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == 202 => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        r.json::<Value>().await.ok()
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
        }
    };
    let started = Instant::now();
    if rate == 0 {
        for _ in 0..seconds {
            if let Some(task) = submit().await {
                let status = format!(
                    "{url}/system/background-tasks/task-status/{}",
                    task["task_id"].as_str().unwrap_or_default()
                );
                for _ in 0..500 {
                    let s: Value = client
                        .get(&status)
                        .bearer_auth(token)
                        .send()
                        .await
                        .expect("status")
                        .json()
                        .await
                        .expect("json");
                    if s["status"] != "PENDING" {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut running = Vec::new();
        for _ in 0..rate * seconds {
            tick.tick().await;
            let permit = limit.clone().acquire_owned().await.expect("permit");
            let job = submit();
            running.push(tokio::spawn(async move {
                job.await;
                drop(permit);
            }));
        }
        for r in running {
            let _ = r.await;
        }
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "accepted {} failed {} in {took:.2} s ({:.0}/s)",
        accepted.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        accepted.load(Ordering::Relaxed) as f64 / took
    );
}

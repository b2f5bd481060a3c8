//! WebSocket fan-out: one sender, many receivers in one room. Prints deliveries per second and
//! the delivery latency (send → receipt) percentiles. Run by `bench/ws_fanout.sh` against a
//! release server; on its own:
//!
//!   WS_URL=ws://127.0.0.1:18001/integrations/ws/demo RECEIVERS=1000 MESSAGES=200 \
//!     cargo bench --bench ws_fanout

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{connect_async, tungstenite::Message};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let url = std::env::var("WS_URL")
        .unwrap_or_else(|_| "ws://127.0.0.1:18001/integrations/ws/demo".into());
    let receivers = env("RECEIVERS", 1000);
    let messages = env("MESSAGES", 200);
    let gap = Duration::from_millis(env("GAP_MS", 20) as u64);
    let room = "bench";
    let base = Instant::now();

    // Connect and join the room, a few at a time.
    let joined = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(receivers);
    for _ in 0..receivers {
        let url = url.clone();
        let joined = joined.clone();
        let (ws, _) = connect_async(url).await.expect("connect");
        let (mut tx, mut rx) = ws.split();
        tasks.push(tokio::spawn(async move {
            tx.send(Message::Text(
                json!({"type": "room", "room": room}).to_string().into(),
            ))
            .await
            .expect("join");
            let mut latencies = Vec::with_capacity(messages);
            while let Some(Ok(msg)) = rx.next().await {
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                match v["type"].as_str() {
                    Some("room_joined") => {
                        joined.fetch_add(1, Ordering::SeqCst);
                    }
                    Some("room_broadcast") => {
                        let sent = v["message"].as_u64().unwrap_or(0);
                        let now = base.elapsed().as_micros() as u64;
                        latencies.push(now.saturating_sub(sent));
                        if latencies.len() == messages {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            (latencies, base.elapsed())
        }));
    }
    while joined.load(Ordering::SeqCst) < receivers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{receivers} receivers joined room {room:?}");

    let (sender, _) = connect_async(url.clone()).await.expect("connect sender");
    let (mut tx, mut rx) = sender.split();
    tx.send(Message::Text(
        json!({"type": "room", "room": room}).to_string().into(),
    ))
    .await
    .unwrap();
    // The sender reads (and drops) its own copies, so it never becomes a slow reader.
    tokio::spawn(async move { while rx.next().await.is_some() {} });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = base.elapsed();
    for _ in 0..messages {
        let now = base.elapsed().as_micros() as u64;
        tx.send(Message::Text(
            json!({"type": "room_broadcast", "room": room, "message": now})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        tokio::time::sleep(gap).await;
    }

    let mut all = Vec::with_capacity(receivers * messages);
    let mut last = started;
    for task in tasks {
        let (latencies, done) = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("receivers finish")
            .expect("receiver task");
        all.extend(latencies);
        last = last.max(done);
    }
    all.sort_unstable();
    let elapsed = (last - started).as_secs_f64();
    let expected = receivers * messages;
    println!(
        "deliveries={} of {expected} in {elapsed:.2}s rate={:.0}/s latency_ms p50={:.2} p99={:.2} max={:.2}",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
    );
}

//! The broker's own limit on this machine, the reference for `bench/jobs.sh`: what RabbitMQ does
//! with Keel's message shape and settings and nothing of Keel's around it. Persistent messages
//! on a durable queue with Keel's dead-letter arguments, publisher confirms (a window of
//! unconfirmed messages in flight), manual acknowledgements with a prefetch window.
//!
//! `cargo bench --bench broker_rate` (env: RABBITMQ_URL, MESSAGES=50000, WINDOW=1000,
//! PREFETCH=256, QUEUE_TYPE=classic|quorum). Prints publish-only, consume-only and together
//! (publisher and consumer at once, first publish to last ack) rates in messages/s.

use std::{collections::VecDeque, time::Instant};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn publish(channel: &lapin::Channel, queue: &str, n: usize, window: usize) {
    let mut in_flight = VecDeque::with_capacity(window);
    for _ in 0..n {
        let id = uuid::Uuid::new_v4().to_string();
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("text/plain".into())
            .with_message_id(id.as_str().into())
            .with_type("test_task".into());
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                id.as_bytes(),
                properties,
            )
            .await
            .expect("publish");
        in_flight.push_back(confirm);
        if in_flight.len() >= window {
            let confirmation = in_flight.pop_front().unwrap().await.expect("confirm");
            assert!(!confirmation.is_nack(), "the broker refused a message");
        }
    }
    for confirm in in_flight {
        assert!(!confirm.await.expect("confirm").is_nack());
    }
}

async fn consume(channel: &lapin::Channel, queue: &str, n: usize, prefetch: u16) {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            format!("bench-{}", std::process::id()).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for _ in 0..n {
        let delivery = consumer
            .next()
            .await
            .expect("a delivery")
            .expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    channel
        .basic_cancel(
            format!("bench-{}", std::process::id()).as_str().into(),
            Default::default(),
        )
        .await
        .expect("cancel");
}

#[tokio::main]
async fn main() {
    let url = std::env::var("RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let n = env("MESSAGES", 50_000);
    let window = env("WINDOW", 1_000).max(1);
    let prefetch = env("PREFETCH", 256).clamp(1, usize::from(u16::MAX)) as u16;
    let queue_type = std::env::var("QUEUE_TYPE").unwrap_or_else(|_| "classic".into());
    let queue = format!("keel.bench.{}", std::process::id());
    let dead = format!("{queue}.dead");

    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let publisher = conn.create_channel().await.expect("channel");
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let consumer_conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let consumer = consumer_conn.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut args = FieldTable::default();
    if queue_type == "quorum" {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    publisher
        .queue_declare(dead.as_str().into(), durable, args.clone())
        .await
        .expect("declare");
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.as_str().into()),
    );
    publisher
        .queue_declare(queue.as_str().into(), durable, args)
        .await
        .expect("declare");

    let started = Instant::now();
    publish(&publisher, &queue, n, window).await;
    let publish_rate = n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    consume(&consumer, &queue, n, prefetch).await;
    let consume_rate = n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let (c, q) = (consumer.clone(), queue.clone());
    let draining = tokio::spawn(async move { consume(&c, &q, n, prefetch).await });
    publish(&publisher, &queue, n, window).await;
    draining.await.expect("consumer");
    let together = n as f64 / started.elapsed().as_secs_f64();

    for q in [&queue, &dead] {
        let _ = publisher
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    println!(
        "broker ({queue_type} queue, {n} persistent messages, confirm window {window}, prefetch {prefetch})"
    );
    println!("  publish alone   {publish_rate:>9.0} msgs/s");
    println!("  consume alone   {consume_rate:>9.0} msgs/s");
    println!("  together        {together:>9.0} msgs/s   (first publish to last ack)");
}

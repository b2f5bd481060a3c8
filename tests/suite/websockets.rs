//! WebSockets: the tutorial's session, rooms, fan-out across instances through Redis, and the
//! protections (slow readers, message rate, size, authentication, shutdown).

use crate::common;

use std::time::Duration;

use common::{Backend, TestApp, eventually, problem};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn start(extra: &[(&str, &str)], redis: bool) -> TestApp {
    let mut env = if redis {
        common::redis_overrides()
    } else {
        vec![]
    };
    env.push(("ENABLE_WEBSOCKETS".into(), "true".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = TestApp::start_with(Backend::Sqlite, &pairs).await;
    if redis {
        // Clients are sent to an instance once it is ready, as a load balancer would.
        app.wait_ready().await;
    }
    app
}

async fn connect(app: &TestApp, query: &str) -> Ws {
    let url = format!("ws://{}/integrations/ws/demo{query}", app.addr);
    connect_async(url).await.expect("websocket handshake").0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text message as JSON (pings are answered by the client library).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the connection is open")
            .expect("a valid frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => continue,
        }
    }
}

/// Reads until the server closes; returns the close code.
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return None,
            Err(_) => panic!("the server did not close the connection"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_session_works_as_written() {
    let app = start(&[], false).await;
    let mut ws = connect(&app, "").await;
    send(
        &mut ws,
        json!({"type": "echo", "message": "Hello WebSocket!"}),
    )
    .await;
    let echo = next(&mut ws).await;
    assert_eq!(
        (&echo["type"], &echo["message"]),
        (&json!("echo"), &json!("Hello WebSocket!"))
    );
    assert!(
        echo["timestamp"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .is_ok()
    );

    send(&mut ws, json!({"type": "room", "room": "test-room"})).await;
    let joined = next(&mut ws).await;
    assert_eq!(
        (&joined["type"], &joined["room"]),
        (&json!("room_joined"), &json!("test-room"))
    );

    send(
        &mut ws,
        json!({"type": "room_broadcast", "message": "Hello room!", "room": "test-room"}),
    )
    .await;
    let b = next(&mut ws).await;
    assert_eq!(
        (&b["type"], &b["message"], &b["room"], &b["sender"]),
        (
            &json!("room_broadcast"),
            &json!("Hello room!"),
            &json!("test-room"),
            &json!("anonymous")
        )
    );

    send(&mut ws, json!({"type": "status"})).await;
    let s = next(&mut ws).await;
    assert_eq!(
        (
            &s["type"],
            &s["total_connections"],
            &s["current_room"],
            &s["room_connections"]
        ),
        (&json!("status"), &json!(1), &json!("test-room"), &json!(1))
    );
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    send(&mut ws, json!({"type": "leave"})).await;
    let left = next(&mut ws).await;
    assert_eq!(
        (&left["type"], &left["room"]),
        (&json!("room_left"), &json!("test-room"))
    );

    // Plain text is echoed; unknown types, bad rooms and foreign rooms are errors.
    ws.send(Message::Text("just text".into())).await.unwrap();
    assert_eq!(next(&mut ws).await["message"], "just text");
    for bad in [
        json!({"type": "dance"}),
        json!({"type": "room", "room": "no spaces allowed"}),
        json!({"type": "room", "room": ""}),
        json!({"type": "room_broadcast", "room": "elsewhere", "message": "x"}),
        json!({"message": "no type"}),
    ] {
        send(&mut ws, bad.clone()).await;
        let reply = next(&mut ws).await;
        assert_eq!(reply["type"], "error", "{bad}");
        assert!(reply["message"].is_string());
    }
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["type"], "error");

    let status: Value = app
        .get("/integrations/ws/status", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["total_connections"], 1);
    assert_eq!(status["room_connections"], json!({"default": 1}));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("keel_websocket_connections 1"),
        "{metrics}"
    );
    assert!(metrics.contains("keel_websocket_messages_total{direction=\"in\"}"));
    let features: Value = app.get("/features", None).await.json().await.unwrap();
    assert_eq!(features["websockets"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_the_room_and_only_the_room() {
    let app = start(&[], false).await;
    let (_, tokens) = app.signed_in_user().await;
    let me: Value = app
        .get("/users/me", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    let mut a = connect(&app, &format!("?token={}", tokens.access)).await;
    let mut b = connect(&app, "").await;
    let mut outside = connect(&app, "").await;
    for ws in [&mut a, &mut b] {
        send(ws, json!({"type": "room", "room": "lobby"})).await;
        assert_eq!(next(ws).await["type"], "room_joined");
    }
    send(
        &mut a,
        json!({"type": "broadcast", "message": {"text": "hi", "n": 1}}),
    )
    .await;
    for ws in [&mut a, &mut b] {
        let m = next(ws).await;
        assert_eq!(
            (&m["type"], &m["message"], &m["room"], &m["sender"]),
            (
                &json!("broadcast"),
                &json!({"text": "hi", "n": 1}),
                &json!("lobby"),
                &me["username"]
            )
        );
    }
    // The connection outside the room got nothing: its next message is the answer to its ping.
    send(&mut outside, json!({"type": "ping"})).await;
    assert_eq!(next(&mut outside).await["type"], "pong");

    let status: Value = app
        .get("/integrations/ws/status", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            &status["total_connections"],
            &status["active_rooms"],
            &status["room_connections"]
        ),
        (&json!(3), &json!(2), &json!({"default": 1, "lobby": 2}))
    );
    // The last member leaving removes the room.
    drop(a);
    send(&mut b, json!({"type": "leave"})).await;
    next(&mut b).await;
    eventually(Duration::from_secs(5), "the lobby to be gone", || async {
        let s: Value = app
            .get("/integrations/ws/status", None)
            .await
            .json()
            .await
            .unwrap();
        (s["room_connections"] == json!({"default": 2})).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_span_instances_through_redis() {
    let a = start(&[], true).await;
    let b = TestApp::start_env(Backend::Sqlite, a.env.clone()).await;
    b.wait_ready().await;
    let mut on_a = connect(&a, "").await;
    let mut on_b = connect(&b, "").await;
    let mut also_b = connect(&b, "").await;
    for ws in [&mut on_a, &mut on_b] {
        send(ws, json!({"type": "room", "room": "shared"})).await;
        next(ws).await;
    }
    send(
        &mut on_b,
        json!({"type": "room_broadcast", "room": "shared", "message": "from B"}),
    )
    .await;
    let got = next(&mut on_a).await;
    assert_eq!(
        (&got["message"], &got["room"]),
        (&json!("from B"), &json!("shared"))
    );
    assert_eq!(
        next(&mut on_b).await["message"],
        "from B",
        "once, not twice"
    );
    send(&mut on_b, json!({"type": "ping"})).await;
    assert_eq!(next(&mut on_b).await["type"], "pong");
    send(&mut also_b, json!({"type": "ping"})).await;
    assert_eq!(
        next(&mut also_b).await["type"],
        "pong",
        "not in the room, got nothing"
    );

    // Either instance counts every connection.
    for app in [&a, &b] {
        eventually(
            Duration::from_secs(10),
            "counts across instances",
            || async {
                let s: Value = app
                    .get("/integrations/ws/status", None)
                    .await
                    .json()
                    .await
                    .unwrap();
                (s["total_connections"] == 3
                    && s["room_connections"] == json!({"default": 1, "shared": 2}))
                .then_some(())
            },
        )
        .await;
    }
}

/// A room message from instance B reaches a member on instance A as soon as A's health
/// report says its fan-out is healthy, after A's Redis connection was lost and came back.
async fn broadcast_reaches_a_ready_instance(a: &TestApp, b: &TestApp, room: &str) {
    let mut on_a = connect(a, "").await;
    let mut on_b = connect(b, "").await;
    for ws in [&mut on_a, &mut on_b] {
        send(ws, json!({"type": "room", "room": room})).await;
        assert_eq!(next(ws).await["type"], "room_joined");
    }
    send(
        &mut on_b,
        json!({"type": "room_broadcast", "room": room, "message": "after ready"}),
    )
    .await;
    assert_eq!(next(&mut on_a).await["message"], "after ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_reports_healthy_again_only_once_it_is_subscribed_after_redis_returns() {
    let mut redis = common::PrivateRedis::start(common::free_port());
    common::wait_port(redis.port).await;
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let a = start(&[("REDIS_URL", &url)], true).await;
    let b = TestApp::start_env(Backend::Sqlite, a.env.clone()).await;
    b.wait_ready().await;
    let health: Value = a.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["checks"]["websockets"]["status"], "healthy");
    broadcast_reaches_a_ready_instance(&a, &b, "before").await;

    redis.stop();
    // Broadcasts from other instances stop arriving: reported, but the instance still serves.
    let resp = a.get("/system/health/ready", None).await;
    assert_eq!(resp.status(), 200);
    let health: Value = a.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["checks"]["websockets"]["status"], "unhealthy");

    let redis = common::PrivateRedis::start(redis.port);
    common::wait_port(redis.port).await;
    for app in [&a, &b] {
        eventually(
            Duration::from_secs(15),
            "the fan-out to report healthy",
            || async {
                let health: Value = app.get("/system/health", None).await.json().await.ok()?;
                (health["checks"]["websockets"]["status"] == "healthy").then_some(())
            },
        )
        .await;
    }
    broadcast_reaches_a_ready_instance(&a, &b, "after").await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_disconnected_and_others_carry_on() {
    let app = start(
        &[
            ("WS_SEND_QUEUE", "64"),
            ("WS_MESSAGES_PER_SECOND", "10000"),
            ("WS_MAX_MESSAGE_BYTES", "1048576"),
        ],
        false,
    )
    .await;
    let mut slow = connect(&app, "").await;
    let mut sender = connect(&app, "").await;
    for ws in [&mut slow, &mut sender] {
        send(ws, json!({"type": "room", "room": "flood"})).await;
        next(ws).await;
    }
    // The sender reads everything it gets, keeping up; the slow client reads nothing for now.
    let (mut tx, mut rx) = sender.split();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = received.clone();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(Ok(m)) = rx.next().await {
            if m.is_text() {
                n += 1;
                seen.store(n, std::sync::atomic::Ordering::SeqCst);
                if n == 400 {
                    break;
                }
            }
        }
        (n, rx)
    });
    let chunk = "x".repeat(100_000);
    for sent in 0..400 {
        // Never more than a few messages ahead of what the sender has read itself.
        while sent - received.load(std::sync::atomic::Ordering::SeqCst) > 16 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tx.send(Message::Text(
            json!({"type": "broadcast", "message": chunk})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    }
    let (n, rx) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 400, "the reading client got every message");
    eventually(
        Duration::from_secs(10),
        "the slow reader to be cut off",
        || async {
            let s: Value = app
                .get("/integrations/ws/status", None)
                .await
                .json()
                .await
                .unwrap();
            (s["total_connections"] == 1).then_some(())
        },
    )
    .await;
    // The server closes with 1008; when the slow client's buffers are full even the close frame
    // may not fit, and the connection just ends. Either way it is over.
    let code = close_code(&mut slow).await;
    assert!(matches!(code, None | Some(CloseCode::Policy)), "{code:?}");
    let mut sender = tx.reunite(rx).unwrap();
    send(&mut sender, json!({"type": "ping"})).await;
    assert_eq!(next(&mut sender).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rate_and_size_are_limited() {
    let app = start(
        &[
            ("WS_MESSAGES_PER_SECOND", "5"),
            ("WS_MAX_MESSAGE_BYTES", "1024"),
        ],
        false,
    )
    .await;
    let mut chatty = connect(&app, "").await;
    for _ in 0..30 {
        if chatty
            .send(Message::Text(json!({"type": "ping"}).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut chatty).await, Some(CloseCode::Policy));

    let mut big = connect(&app, "").await;
    let _ = big
        .send(Message::Text(
            json!({"type": "echo", "message": "y".repeat(2000)})
                .to_string()
                .into(),
        ))
        .await;
    assert_eq!(close_code(&mut big).await, Some(CloseCode::Size));
    eventually(
        Duration::from_secs(5),
        "both connections to be gone",
        || async {
            let s: Value = app
                .get("/integrations/ws/status", None)
                .await
                .json()
                .await
                .unwrap();
            (s["total_connections"] == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_required_when_configured() {
    let app = start(&[("WS_REQUIRE_AUTH", "true")], false).await;
    let url = format!("ws://{}/integrations/ws/demo", app.addr);
    let refused = connect_async(url.clone()).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let bad = connect_async(format!("{url}?token=nonsense"))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("401"), "{bad}");
    // A plain HTTP request is not a WebSocket handshake: a problem document.
    problem(
        app.get("/integrations/ws/demo", None).await,
        400,
        "bad_request",
    )
    .await;

    let (user, tokens) = app.signed_in_user().await;
    let mut ws = connect(&app, &format!("?token={}", tokens.access)).await;
    send(&mut ws, json!({"type": "broadcast", "message": "signed"})).await;
    assert_eq!(next(&mut ws).await["sender"], user.username.as_str());
    // Or as a header.
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", tokens.access).parse().unwrap(),
    );
    let (mut ws, _) = connect_async(req).await.unwrap();
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_with_going_away() {
    let app = start(&[], false).await;
    let mut ws = connect(&app, "").await;
    send(&mut ws, json!({"type": "ping"})).await;
    next(&mut ws).await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(app.stop());
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Away));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an open socket does not hold the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_feature_the_routes_say_so() {
    let app = TestApp::start(Backend::Sqlite).await;
    let body = problem(
        app.get("/integrations/ws/status", None).await,
        404,
        "not_found",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("ENABLE_WEBSOCKETS")
    );
}

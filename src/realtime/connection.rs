//! One upgraded WebSocket: a writer (queued messages, pings, the close frame) and a reader
//! (every client frame, within the message rate, the size limit and the ping deadline), and
//! what each client message does.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocketStream};
use tokio::sync::mpsc;

use super::{
    hub::{ConnId, DEFAULT_ROOM, Hub},
    protocol::{self, ClientMessage, ServerMessage, timestamp, valid_room},
};
use crate::metrics::metrics;

impl Hub {
    /// Serves one upgraded connection until either side ends it.
    pub async fn serve(&self, socket: WebSocketStream, sender: String) {
        let limits = self.inner.limits.clone();
        let (tx, mut rx) = mpsc::channel::<Arc<str>>(limits.send_queue);
        let (id, close, kick) = self.join(tx.clone());
        let (mut sink, mut stream) = socket.split();
        let shutting_down = self.inner.shutdown.clone();

        // The writer: queued messages and pings out, then the close frame.
        let writer_kick = kick.clone();
        let writer_close = close.clone();
        let ping_every = limits.ping_interval;
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(ping_every);
            ping.tick().await;
            loop {
                let out = tokio::select! {
                    biased;
                    () = writer_kick.cancelled() => break,
                    next = rx.recv() => match next {
                        Some(text) => Message::Text(text.to_string()),
                        None => break,
                    },
                    _ = ping.tick() => Message::Ping(Vec::new()),
                };
                tokio::select! {
                    biased;
                    () = writer_kick.cancelled() => break,
                    sent = sink.send(out) => if sent.is_err() { return; },
                }
            }
            let (code, reason) = if shutting_down.is_cancelled() {
                (1001, "server shutting down")
            } else {
                writer_close
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or((1000, "closing"))
            };
            let frame = Message::Close(Some((CloseCode::from(code), reason.to_string())));
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        });

        // The reader: every client frame, within the message rate and the ping deadline.
        let mut bucket = TokenBucket::new(limits.messages_per_second);
        let mut last_heard = Instant::now();
        let deadline = limits.ping_interval * 2;
        // Set when this side ends the connection: the client's frames are then read to the
        // end of the closing handshake (below).
        let mut closing = false;
        let mut end = |reason: (u16, &'static str)| {
            close
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(reason);
            kick.cancel();
            closing = true;
        };
        loop {
            let frame = tokio::select! {
                () = kick.cancelled() => break,
                () = tokio::time::sleep(deadline.saturating_sub(last_heard.elapsed())) => {
                    end((1001, "no answer to pings"));
                    break;
                }
                frame = stream.next() => frame,
            };
            let frame = match frame {
                Some(Ok(frame)) => frame,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Other => {
                    // tungstenite's own errors: too large a message, or a protocol violation.
                    end(if e.to_string().contains("Space limit exceeded") {
                        (1009, "message too big")
                    } else {
                        (1002, "protocol error")
                    });
                    break;
                }
                _ => {
                    kick.cancel();
                    break;
                }
            };
            last_heard = Instant::now();
            let text = match frame {
                Message::Text(text) => text,
                Message::Binary(_) => {
                    let _ = tx.try_send(error_reply(
                        "binary messages are not supported; send JSON text",
                    ));
                    continue;
                }
                Message::Close(_) => {
                    kick.cancel();
                    break;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            metrics().ws_messages.with_label_values(&["in"]).inc();
            if !bucket.take() {
                end((1008, "message rate limit exceeded"));
                break;
            }
            if let Some(reply) = self.handle(id, &sender, &text).await {
                // Replies go through the same bounded queue as everything else.
                self.send_one(id, &reply);
            }
        }
        self.leave(id);
        drop(tx);
        if closing {
            // The closing handshake: what the client still sends is read (and dropped) until
            // its close frame answers ours. Dropping the socket with unread data would reset
            // the connection, and a reset can destroy our close frame (and its code) before
            // the client reads it.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(frame)) = stream.next().await {
                    if matches!(frame, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = writer.await;
    }

    /// One client message; returns the reply for the sender, if any.
    async fn handle(&self, id: ConnId, sender: &str, text: &str) -> Option<Arc<str>> {
        let message = match protocol::parse(text) {
            Ok(message) => message,
            Err(e) => return Some(error_reply(&e.to_string())),
        };
        let reply = match message {
            ClientMessage::Echo { message } => ServerMessage::Echo {
                message: &message,
                timestamp: timestamp(),
            }
            .to_text(),
            ClientMessage::Ping => ServerMessage::Pong {
                timestamp: timestamp(),
            }
            .to_text(),
            ClientMessage::Broadcast { message } => {
                let room = self.room_of(id);
                let out = ServerMessage::Broadcast {
                    message: &message,
                    room: &room,
                    sender,
                    timestamp: timestamp(),
                };
                self.broadcast(&room, out.to_text()).await;
                return None;
            }
            ClientMessage::RoomBroadcast { room, message } => {
                let Some(room) = room else {
                    return Some(error_reply("room_broadcast needs a \"room\""));
                };
                if self.room_of(id) != room {
                    return Some(error_reply(&format!(
                        "join room {room:?} first: send {{\"type\":\"room\",\"room\":{room:?}}}"
                    )));
                }
                let out = ServerMessage::RoomBroadcast {
                    message: &message,
                    room: &room,
                    sender,
                    timestamp: timestamp(),
                };
                self.broadcast(&room, out.to_text()).await;
                return None;
            }
            ClientMessage::Room { room } => {
                let Some(room) = room.filter(|r| valid_room(r)) else {
                    return Some(error_reply(
                        "a room name is 1-64 characters of letters, digits, _ - . and :",
                    ));
                };
                self.move_to(id, &room);
                ServerMessage::RoomJoined {
                    room: &room,
                    timestamp: timestamp(),
                }
                .to_text()
            }
            ClientMessage::Leave => {
                let left = self.move_to(id, DEFAULT_ROOM);
                ServerMessage::RoomLeft {
                    room: &left,
                    timestamp: timestamp(),
                }
                .to_text()
            }
            ClientMessage::Status => {
                let room = self.room_of(id);
                let status = self.status().await;
                ServerMessage::Status {
                    total_connections: status.total_connections,
                    current_room: &room,
                    room_connections: status.room_connections.get(&room).copied().unwrap_or(0),
                    timestamp: timestamp(),
                }
                .to_text()
            }
        };
        Some(reply)
    }
}

fn error_reply(message: &str) -> Arc<str> {
    ServerMessage::Error {
        message,
        timestamp: timestamp(),
    }
    .to_text()
}

/// `rate` messages a second on average, bursts of twice that.
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            capacity: rate * 2.0,
            tokens: rate * 2.0,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(5);
        assert_eq!((0..20).filter(|_| b.take()).count(), 10);
    }
}

//! The WebSocket protocol: what a client may send (`ClientMessage`) and what the server sends
//! (`ServerMessage`), each a JSON object tagged by `"type"`. Text that is not a JSON object is
//! echoed back as it came, as in the tutorial this protocol follows.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Echo {
        #[serde(default)]
        message: Value,
    },
    Ping,
    /// To everyone in the sender's current room.
    Broadcast {
        #[serde(default)]
        message: Value,
    },
    /// To `room`, which the sender must be in.
    RoomBroadcast {
        #[serde(default, deserialize_with = "text_or_none")]
        room: Option<String>,
        #[serde(default)]
        message: Value,
    },
    /// Moves the sender to `room`.
    Room {
        #[serde(default, deserialize_with = "text_or_none")]
        room: Option<String>,
    },
    /// Back to the default room.
    Leave,
    Status,
}

/// A message the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Echo {
        message: &'a Value,
        timestamp: String,
    },
    Pong {
        timestamp: String,
    },
    Broadcast {
        message: &'a Value,
        room: &'a str,
        sender: &'a str,
        timestamp: String,
    },
    RoomBroadcast {
        message: &'a Value,
        room: &'a str,
        sender: &'a str,
        timestamp: String,
    },
    RoomJoined {
        room: &'a str,
        timestamp: String,
    },
    RoomLeft {
        room: &'a str,
        timestamp: String,
    },
    Status {
        total_connections: u64,
        current_room: &'a str,
        room_connections: u64,
        timestamp: String,
    },
    Error {
        message: &'a str,
        timestamp: String,
    },
}

impl ServerMessage<'_> {
    pub fn to_text(&self) -> std::sync::Arc<str> {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default().into()
    }
}

/// Why a client message could not be understood; each says what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a message needs a \"type\"")]
    MissingType,
    #[error(
        "unknown message type {0:?}; use echo, broadcast, room, leave, room_broadcast, status or ping"
    )]
    UnknownType(String),
}

/// Reads one text frame. A JSON object is a message by its `type`; anything else is an echo of
/// the text itself.
pub fn parse(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) if v.is_object() => v,
        _ => {
            return Ok(ClientMessage::Echo {
                message: Value::String(text.to_string()),
            });
        }
    };
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err(ProtocolError::MissingType),
    };
    // Every field is optional and lenient, so only the type itself can be wrong here.
    serde_json::from_value(value).map_err(|_| ProtocolError::UnknownType(kind))
}

/// A room field that is not text counts as absent, so the reply says what a room name is.
fn text_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

/// Room names: 1–64 characters of letters, digits, `_`, `-`, `.` and `:`.
pub fn valid_room(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn room_names_are_checked() {
        assert!(valid_room("test-room") && valid_room("a") && valid_room("team:42.chat_1"));
        for bad in ["", "has space", "emoji🙂", &"x".repeat(65), "semi;colon"] {
            assert!(!valid_room(bad), "{bad:?}");
        }
    }

    #[test]
    fn text_that_is_not_an_object_is_echoed() {
        for text in ["hello", "42", "[1,2]", "{broken"] {
            assert_eq!(
                parse(text),
                Ok(ClientMessage::Echo {
                    message: json!(text)
                })
            );
        }
    }

    #[test]
    fn messages_are_read_by_type() {
        assert_eq!(
            parse(r#"{"type":"room","room":"lobby"}"#),
            Ok(ClientMessage::Room {
                room: Some("lobby".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"room","room":7}"#),
            Ok(ClientMessage::Room { room: None })
        );
        assert_eq!(
            parse(r#"{"type":"ping","extra":1}"#),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(
            parse(r#"{"type":"broadcast","message":{"a":1}}"#),
            Ok(ClientMessage::Broadcast {
                message: json!({"a": 1})
            })
        );
        assert_eq!(
            parse(r#"{"type":"echo"}"#),
            Ok(ClientMessage::Echo {
                message: Value::Null
            })
        );
    }

    #[test]
    fn a_missing_or_unknown_type_is_an_error_that_says_so() {
        assert_eq!(parse(r#"{"message":"x"}"#), Err(ProtocolError::MissingType));
        assert_eq!(parse(r#"{"type":3}"#), Err(ProtocolError::MissingType));
        assert_eq!(
            parse(r#"{"type":"shout"}"#),
            Err(ProtocolError::UnknownType("shout".into()))
        );
    }

    #[test]
    fn server_messages_carry_their_type_first() {
        let text = ServerMessage::RoomJoined {
            room: "lobby",
            timestamp: "t".into(),
        }
        .to_text();
        assert_eq!(
            &*text,
            r#"{"type":"room_joined","room":"lobby","timestamp":"t"}"#
        );
    }
}

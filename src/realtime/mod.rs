//! WebSocket rooms. Each instance keeps its own connections; with Redis, room broadcasts are
//! published to every instance and each one delivers to its local members, and the instances'
//! connection counts are shared for the status.
//!
//! - `hub`: the connections and rooms of this instance, and delivery to them;
//! - `fanout`: the Redis side (broadcasts to and from other instances, shared counts, the
//!   readiness probe);
//! - `connection`: one upgraded socket (its reader, writer, rate and ping deadline);
//! - `protocol`: the messages clients send and receive, as types.
//!
//! Every connection has a bounded send queue: a client that reads too slowly to keep up is
//! disconnected rather than allowed to grow the server's memory.

mod connection;
mod fanout;
mod hub;
pub mod protocol;

pub use hub::{DEFAULT_ROOM, Hub, Status};
pub use protocol::valid_room;

//! `/integrations`: the WebSocket demo (echo, rooms, broadcasts) and its status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem::{
    Request,
    web::{
        Data,
        websocket::{BoxWebSocketUpgraded, WebSocket, WebSocketConfig},
    },
};
use poem_openapi::{Object, OpenApi, param::Query, payload::Json};

use super::ApiTags;
use crate::http::extractors::{authenticate_token, bearer_token};
use crate::{
    http::error::{ApiError, ApiResult},
    http::state::AppState,
};

#[derive(Object, Debug)]
pub struct WsStatus {
    /// Open connections on every server instance.
    pub total_connections: u64,
    /// Rooms with at least one member.
    pub active_rooms: u64,
    pub room_connections: BTreeMap<String, u64>,
    pub timestamp: DateTime<Utc>,
}

fn disabled() -> ApiError {
    ApiError::not_found("WebSockets are disabled on this server (ENABLE_WEBSOCKETS=false)")
}

pub struct IntegrationsApi;

#[OpenApi(prefix_path = "/integrations", tag = "ApiTags::Integrations")]
impl IntegrationsApi {
    /// WebSocket demo: echo, rooms and broadcasts
    ///
    /// Upgrade to a WebSocket. Anonymous unless `WS_REQUIRE_AUTH=true`; a token may be sent as
    /// `?token=` or `Authorization: Bearer`. Text frames are JSON messages with a `type`: `echo`,
    /// `broadcast`, `room`, `leave`, `room_broadcast`, `status`, `ping` (see docs/realtime.md); any
    /// other text is echoed. Every connection starts in room `default`.
    #[oai(
        path = "/ws/demo",
        method = "get",
        operation_id = "integrations_ws_demo"
    )]
    async fn demo(
        &self,
        state: Data<&AppState>,
        req: &Request,
        ws: WebSocket,
        /// An access token or API key, for clients that cannot set headers.
        token: Query<Option<String>>,
    ) -> ApiResult<BoxWebSocketUpgraded> {
        let Some(hub) = state.hub.clone() else {
            return Err(disabled());
        };
        let token = token.0.or_else(|| bearer_token(req));
        let sender = match token {
            Some(token) => authenticate_token(&state, &token).await?.user.username,
            None if state.settings.websockets.require_auth => {
                return Err(ApiError::unauthorized(
                    "not_authenticated",
                    "this server requires a token: ?token=<access token> or Authorization: Bearer",
                ));
            }
            None => "anonymous".to_string(),
        };
        let limits = hub.limits().clone();
        // Small I/O buffers (tungstenite's default is 128 KiB each way): a thousand idle sockets
        // would otherwise hold a quarter of a gigabyte. They grow for larger messages.
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(8 * 1024)
            .max_message_size(Some(limits.max_message_bytes))
            .max_frame_size(Some(limits.max_message_bytes));
        Ok(ws
            .config(config)
            .on_upgrade(move |socket| async move { hub.serve(socket, sender).await })
            .boxed())
    }

    /// WebSocket connections and rooms, across every server instance
    #[oai(
        path = "/ws/status",
        method = "get",
        operation_id = "integrations_ws_status"
    )]
    async fn status(&self, state: Data<&AppState>) -> ApiResult<Json<WsStatus>> {
        let Some(hub) = &state.hub else {
            return Err(disabled());
        };
        let s = hub.status().await;
        Ok(Json(WsStatus {
            total_connections: s.total_connections,
            active_rooms: s.room_connections.len() as u64,
            room_connections: s.room_connections,
            timestamp: Utc::now(),
        }))
    }
}

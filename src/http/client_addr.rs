//! The client's address, decided once per request: the peer's, or the one `X-Forwarded-For`
//! names when the peer is a trusted proxy (`TRUSTED_PROXIES`). Rate limits, logs and the
//! audit trail all read this one answer.

use poem::Request;

use crate::net::TrustedProxies;

/// The client's address as decided once per request (`TRUSTED_PROXIES` applied).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

/// The client's address: the peer's, or the one `X-Forwarded-For` names when the peer is a
/// trusted proxy.
pub fn client_ip(req: &Request) -> String {
    if let Some(ClientAddr(ip)) = req.extensions().get::<ClientAddr>() {
        return ip.to_string();
    }
    req.remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// Decides the client's address once, for every layer below (limits, logs, audit).
pub fn resolve_client_addr(req: &mut Request, trusted: &TrustedProxies) {
    let Some(peer) = req.remote_addr().as_socket_addr().map(|a| a.ip()) else {
        return;
    };
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = trusted.client_ip(peer, forwarded);
    req.extensions_mut().insert(ClientAddr(ip));
}

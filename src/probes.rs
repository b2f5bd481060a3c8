//! Health endpoints for the processes that serve no API (worker, scheduler), and the client
//! side of every probe: `server healthcheck`, `worker healthcheck` and `scheduler healthcheck`
//! ask their own process, so container images need no curl.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use poem::{Endpoint, EndpointExt, Response, Route, http::StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::db;

/// How long a probe waits for the database's answer.
pub const DATABASE_CHECK: Duration = Duration::from_secs(2);

/// Whether the process is going away: set on SIGTERM, readiness fails from then on.
#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `Ok` when the database answers within [`DATABASE_CHECK`].
pub async fn database_answers(conn: &db::Connection) -> Result<(), String> {
    match tokio::time::timeout(DATABASE_CHECK, conn.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the database did not answer".into()),
        Err(_) => Err(format!(
            "no answer from the database within {DATABASE_CHECK:?}"
        )),
    }
}

/// A probe's JSON answer: 200 `{"status": "..."}`, or 503 with why not.
pub fn answer(outcome: Result<&str, String>) -> Response {
    let (status, body) = match outcome {
        Ok(state) => (StatusCode::OK, json!({ "status": state })),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "not_ready", "detail": reason }),
        ),
    };
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// `/health/live` (200 while the process serves) plus the given routes.
pub fn routes(extra: Route) -> Route {
    extra.at(
        "/health/live",
        poem::get(poem::endpoint::make_sync(|_| answer(Ok("alive")))),
    )
}

/// Serves `routes` on `addr` until `stop` is cancelled; `what` names them in the log (`worker
/// health endpoints`).
pub async fn serve(
    addr: SocketAddr,
    routes: impl Endpoint + 'static,
    stop: CancellationToken,
    what: &'static str,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use poem::listener::{Acceptor, Listener};
    let acceptor = poem::listener::TcpListener::bind(addr)
        .into_acceptor()
        .await?;
    let bound = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .unwrap_or(addr);
    tracing::info!(%bound, "{what} at http://{bound}");
    let routes = routes.map_to_response();
    Ok(tokio::spawn(async move {
        let served = poem::Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(routes, async move { stop.cancelled().await }, None)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "{what}: the listener failed");
        }
    }))
}

/// The address to probe a process listening on `addr` at: loopback for an unspecified address.
pub fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// `GET path` on `addr` over plain HTTP/1.1: the status code, or why there was none. For the
/// `healthcheck` subcommands; nothing else needs an HTTP client this small.
pub async fn probe(addr: SocketAddr, path: &str, within: Duration) -> Result<u16, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: keel-healthcheck\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send to {addr}: {e}"))?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        // The status line is all a probe needs.
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("no answer from {addr}: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .filter(|_| line.starts_with("HTTP/1."))
            .ok_or_else(|| format!("{addr} did not answer HTTP"))
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| format!("no answer from {addr} within {within:?}"))?
}

/// The `healthcheck` subcommands' outcome: exit 0 on a 200, 1 otherwise, with one line on
/// stderr saying why.
pub async fn healthcheck(addr: SocketAddr, path: &str) -> std::process::ExitCode {
    match probe(local(addr), path, Duration::from_secs(5)).await {
        Ok(200) => std::process::ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("healthcheck: {path} answered {code}");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("healthcheck: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        assert_eq!(
            local("0.0.0.0:9091".parse().unwrap()),
            "127.0.0.1:9091".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            local("[::]:80".parse().unwrap()),
            "[::1]:80".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            local("10.1.2.3:80".parse().unwrap()),
            "10.1.2.3:80".parse::<SocketAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_a_failed_probe() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: nothing listens there now.
        let e = probe(port, "/", Duration::from_secs(2)).await.unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
    }
}

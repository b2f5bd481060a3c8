//! Keel: accounts, sessions, email and an OpenAPI-first HTTP API, as a library that the four
//! binaries (`server`, `worker`, `scheduler`, `admin`) compose.

pub mod accounts;
pub mod api;
pub mod app;
pub mod config;
pub mod db;
pub mod entities;
pub mod error;
pub mod mail;
pub mod telemetry;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

//! Every integration test in one binary: one link step instead of fourteen. Each module is a
//! feature area; `common` is the harness (a real server on a random port, real services).

#[macro_use]
mod common;

/// The tables as `src/entities` declares them, compiled into the suite: the library keeps its
/// rows private to its domains, and tests read and arrange rows directly.
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/entities/mod.rs"]
mod entities;

mod accounts;
mod admin_api;
mod admin_cli;
mod api_keys;
mod binaries;
mod console;
mod deletion;
mod docs;
mod email_change;
mod hostile_input;
mod http;
mod jobs;
mod limits;
mod listing;
mod mail_templates;
mod mfa;
mod oidc;
mod pages;
mod production;
mod queues;
mod ratelimit;
mod redis;
mod request_ids;
mod scheduler;
mod security;
mod structure;
mod traces;
mod websockets;

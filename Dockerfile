# One image for the four binaries: server, worker, scheduler, admin.
# Build: docker build -t keel .   (the build stage runs `cargo build --release --bins --locked`)
# .dockerignore keeps target/, .env and local databases out of the build context.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependency layer: built from the manifests alone, reused until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY migration/Cargo.toml migration/Cargo.toml
# Every target Cargo.toml declares needs a file to be loaded: each gets an empty `main`.
RUN mkdir -p src bin/admin migration/src bench examples \
 && touch src/lib.rs migration/src/lib.rs \
 && for target in bin/server.rs bin/worker.rs bin/scheduler.rs bin/admin/main.rs \
      bench/argon2_rate.rs bench/ws_fanout.rs bench/broker_rate.rs bench/jobs_load.rs \
      examples/jobs.rs examples/endpoint.rs; do echo 'fn main() {}' > "$target"; done \
 && cargo build --release --bins --locked \
 && rm -rf src bin migration/src bench examples
COPY . .
RUN touch src/lib.rs migration/src/lib.rs && cargo build --release --bins --locked

# The runtime: the binaries and CA certificates, nothing else (no shell tools, no curl: the
# health checks are `server healthcheck`, `worker healthcheck` and `scheduler healthcheck`).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /app keel
COPY --from=build /src/target/release/server /src/target/release/worker \
     /src/target/release/scheduler /src/target/release/admin /usr/local/bin/
USER 10001:10001
WORKDIR /app
ENV HOST=0.0.0.0 PORT=8000 LOG_FORMAT=json
EXPOSE 8000
CMD ["server"]

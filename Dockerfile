# One image for the four binaries: server, worker, scheduler, admin.
# Build: docker build -t keel .   (the build stage runs the README's `cargo build --release --bins`)

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependency layer: built from the manifests alone, reused until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY migration/Cargo.toml migration/Cargo.toml
RUN mkdir -p src bin migration/src bench \
 && touch src/lib.rs migration/src/lib.rs \
 && for b in server worker scheduler admin; do echo 'fn main() {}' > bin/$b.rs; done \
 && echo 'fn main() {}' > bench/argon2_rate.rs \
 && cargo build --release --bins \
 && rm -rf src bin migration/src bench
COPY . .
RUN touch src/lib.rs migration/src/lib.rs && cargo build --release --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /app keel
COPY --from=build /src/target/release/server /src/target/release/worker \
     /src/target/release/scheduler /src/target/release/admin /usr/local/bin/
USER keel
WORKDIR /app
ENV HOST=0.0.0.0 PORT=8000 LOG_FORMAT=json
EXPOSE 8000
CMD ["server"]

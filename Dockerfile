# The pg-router image: the router (`serve`), the catalog CLI (`meta`), the
# online split job (`split`, which runs pg_dump/psql from postgresql-client)
# and the Kubernetes reconciler (`operator run`), one binary.
#
#   docker build -t pg-router:0.1.0 .
FROM rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY shard-metadata shard-metadata
RUN cargo build --release --locked --features operator --bin pg-router

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 postgresql-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 pgrouter \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin pgrouter
COPY --from=build /src/target/release/pg-router /usr/local/bin/pg-router
USER 65532:65532
EXPOSE 6432 9930
ENTRYPOINT ["/usr/local/bin/pg-router"]
CMD ["serve", "--config", "/etc/pg-router/router.toml"]

# authback container image: a static-ish release binary on distroless, as
# user 65532, with no shell. Config and certificates are mounted read-only.
#   docker build -t authback .
#   docker run --rm -v $PWD/config.toml:/etc/authback/config.toml:ro -p 8443:8443 authback

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first: a change to the code alone does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/ack.rs \
 && cargo build --release --locked \
 && rm -rf src benches
COPY src src
COPY benches benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin authback \
 && strip target/release/authback

# glibc and libgcc only; TLS (aws-lc) and SQLite are linked in.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/authback /usr/local/bin/authback
USER 65532:65532
# public TLS listener, admin (probes, metrics, API)
EXPOSE 8443 9901
ENTRYPOINT ["/usr/local/bin/authback"]
CMD ["run", "--config", "/etc/authback/config.toml"]

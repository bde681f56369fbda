# authback container image: the release binary on distroless, as user 65532,
# with no shell. Config and certificates are mounted read-only; the file
# store's folder, /var/lib/authback, belongs to user 65532, so a new volume
# mounted there is writable.
#
#   docker build -t authback .
#
# To run it beside a backend, with the config, secrets, certificate and data
# volume in place: examples/docker/ (`docker compose up --build`, or the
# plain `docker run` line in examples/docker/README.md).

# Base images. Pin them by digest with scripts/pin-images.sh: it resolves
# each `*_IMAGE` tag below in the registry (with crane or docker buildx) and
# rewrites the line to `<image>:<tag>@sha256:<digest>`, so a build pulls
# exactly the image that was reviewed, wherever the tag has moved since.
# To take in a new Rust or a patched base image, run
#   bash scripts/pin-images.sh
# then review the diff, build, test and commit it. To check a digest by hand:
#   crane digest rust:1-bookworm
#   docker buildx imagetools inspect rust:1-bookworm     (the "Digest:" line)
# The Rust image must be at least the rust-version in Cargo.toml. The pins
# below were taken from public build files that use the same tags, not
# resolved in a registry here (this machine reaches none): run the script
# before the first build you ship.
ARG RUST_IMAGE=rust:1-bookworm@sha256:93ce27a88655056a51dbdd8f5f2d7ddc071c7b0070fb288a37b5a285fc83971e
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The same build settings as a local `cargo build`: .cargo/config.toml
# builds the bundled SQLite with fdatasync (LIBSQLITE3_FLAGS). Without it
# the image's SQLite would flush more on every commit than the tested one.
COPY .cargo/config.toml .cargo/config.toml
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
# The file store's folder, owned by the runtime user (there is no shell in
# the runtime image to create it there).
RUN install -d -o 65532 -g 65532 /var/lib/authback

# glibc and libgcc only; TLS (aws-lc) and SQLite are linked in.
FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/authback /usr/local/bin/authback
COPY --from=build --chown=65532:65532 /var/lib/authback /var/lib/authback
USER 65532:65532
# public TLS listener, admin (probes, metrics, API)
EXPOSE 8443 9901
ENTRYPOINT ["/usr/local/bin/authback"]
CMD ["run", "--config", "/etc/authback/config.toml"]

//! Order-watch release over 1,000 authorizations, against the simulated
//! Klarna and shop of the integration tests: 85 % placed at once, 10 %
//! never placed, 5 % re-authorized (the order placed on the new token).
//! Bounded: it gives up after `LIMIT`. Prints the outcomes and the Klarna
//! calls per authorization. `cargo bench --bench release`.

#[allow(unused_imports, unused_macros)]
#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

const SESSIONS: usize = 1000;
const LIMIT: Duration = Duration::from_secs(300);

/// Short clocks: the shape of the defaults (first check, every, release
/// before unconfirmed), scaled from minutes to a few seconds.
const WATCH: &str = "[order_watch]\nenabled = true\nafter = \"300ms\"\nevery = \"500ms\"\nredeliver_after = \"1500ms\"\nunconfirmed_after = \"8s\"\nrelease = \"on\"\nrelease_after = \"5s\"\n";

fn kind_of(i: usize) -> &'static str {
    match i % 20 {
        0 | 1 => "never",
        2 => "reauth",
        _ => "placed",
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench targets too; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("release bench: skipped (run `cargo bench --bench release`)");
        return;
    }
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let dir = TempDir::new();
    let cfg = format!("{}{WATCH}", api.config(dir.path(), r#"["1h"]"#));
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let text = base_config(&shop.url(), &c, &k, &cfg);
    let ab = Authback::start_text(dir, cert.der, &text, false).await;
    let started = Instant::now();
    let mut tokens = 0usize;
    for i in 0..SESSIONS {
        let session = format!("sess-{i:04}");
        let token = format!("tok-{i:04}-a");
        shop.places(
            &session,
            if kind_of(i) == "placed" {
                Places::AtOnce
            } else {
                Places::Never
            },
        );
        api.authorize(&session, &token);
        let (status, _) = ab
            .callback(
                &ab.mint(&format!("cart-{i}")),
                &callback_body(&session, &token),
            )
            .await;
        assert_eq!(status, 204);
        tokens += 1;
    }
    for i in (0..SESSIONS).filter(|i| kind_of(*i) == "reauth") {
        let (session, token) = (format!("sess-{i:04}"), format!("tok-{i:04}-b"));
        api.authorize(&session, &token);
        let (status, _) = ab
            .callback(
                &ab.mint(&format!("cart-{i}")),
                &callback_body(&session, &token),
            )
            .await;
        assert_eq!(status, 204);
        tokens += 1;
        eventually!(within: LIMIT, shop.got(&session).len() >= 2);
        assert_eq!(api.create_order(&token).await, 200);
    }
    let count = |m: &str, o: &str| {
        metric(m, &format!("authback_order_watch_total{{outcome=\"{o}\"}}")).unwrap_or(0.0) as u64
    };
    let never = SESSIONS as u64 / 10;
    let reauth = SESSIONS as u64 / 20;
    let waiting = Waiting::new(LIMIT);
    let mut m;
    loop {
        m = ab.metrics().await;
        let ended = count(&m, "confirmed") + count(&m, "released") + count(&m, "release_failed");
        if ended >= SESSIONS as u64 - never + never && count(&m, "superseded") >= reauth {
            break;
        }
        if waiting.expired() {
            eprintln!("gave up after {LIMIT:?}");
            break;
        }
        waiting.pause().await;
    }
    let seen = api.seen();
    let calls = seen.len();
    let reads = seen
        .iter()
        .filter(|(p, _, _)| p.starts_with("/payments/v1/sessions/"))
        .count();
    let deletes = api.deletes.lock().map(|d| d.len()).unwrap_or(0);
    println!("sessions                 {SESSIONS}");
    println!("authorizations           {tokens}");
    for o in [
        "confirmed",
        "released",
        "superseded",
        "release_failed",
        "redelivered",
        "unconfirmed",
    ] {
        println!("{o:<24} {}", count(&m, o));
    }
    println!("DELETEs sent             {deletes}");
    println!("Read Session calls       {reads}");
    println!("Klarna calls (all)       {calls}");
    println!(
        "authback's Klarna calls per authorization {:.2} (Read Session and DELETE)",
        (reads + deletes) as f64 / tokens as f64
    );
    println!(
        "Klarna calls per authorization {:.2} (create-order calls by the shop included)",
        calls as f64 / tokens as f64
    );
    println!(
        "elapsed                  {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

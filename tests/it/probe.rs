//! The doctor's probe nonces: their life in each store kind. One use, one
//! minute, shared by replicas.

use std::time::Duration;

use authback::store::{ProbeNonce, PROBE_TTL};
use authback::types::unix_ms;

use crate::common::*;
use crate::store::{open, Env, Kind};

// ---------------------------------------------------------------------------
// The nonce in each store kind.

const TTL: Duration = Duration::from_secs(3600);

async fn a_nonce_is_taken_once(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let now = unix_ms();
    let n = ProbeNonce::random().expect("nonce");
    let other = ProbeNonce::random().expect("nonce");
    assert!(!s.take_probe(n, now).await.expect("take"), "unknown");
    s.put_probe(n, now + 60_000).await.expect("put");
    s.put_probe(other, now + 60_000).await.expect("put");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.take_probe(n, now).await.expect("take")
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("task"));
    }
    assert_eq!(won, 1, "{kind:?}: one of 16 concurrent takes");
    assert!(!s.take_probe(n, now).await.expect("take"), "used");
    assert!(
        s.take_probe(other, now).await.expect("take"),
        "another is untouched"
    );
}

async fn a_nonce_lives_until_its_expiry(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let now = unix_ms();
    let expires_at = now + PROBE_TTL.as_millis() as u64;
    let (a, b) = (
        ProbeNonce::random().expect("nonce"),
        ProbeNonce::random().expect("nonce"),
    );
    s.put_probe(a, expires_at).await.expect("put");
    s.put_probe(b, expires_at).await.expect("put");
    assert!(s.take_probe(a, expires_at - 1).await.expect("take"));
    assert!(!s.take_probe(b, expires_at).await.expect("take"), "expired");
    assert!(!s.take_probe(b, now).await.expect("take"), "and gone");
    // On the clock: a nonce whose expiry has passed is refused.
    let c = ProbeNonce::random().expect("nonce");
    let soon = unix_ms() + 50;
    s.put_probe(c, soon).await.expect("put");
    eventually!(unix_ms() > soon, "the nonce's expiry to pass");
    assert!(!s.take_probe(c, unix_ms()).await.expect("take"));
}

macro_rules! every_store {
    ($($property:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $property() { super::$property(super::Kind::Memory).await })*
        }
        mod file {
            $(#[tokio::test] async fn $property() { super::$property(super::Kind::File).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $property() { super::$property(super::Kind::Redis).await })*
        }
    };
}

every_store!(a_nonce_is_taken_once, a_nonce_lives_until_its_expiry);

#[tokio::test]
async fn redis_replicas_share_a_nonce_whose_key_expires() {
    let env = Env::new(Kind::Redis);
    let (a, b) = (
        open(Kind::Redis, &env, TTL).await,
        open(Kind::Redis, &env, TTL).await,
    );
    let n = ProbeNonce::random().expect("nonce");
    s_put(&*a, n, unix_ms() + 60_000).await;
    let url = env.redis.as_ref().expect("redis").url();
    let mut c = ::redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = format!("t:p:{n}");
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("pttl");
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    assert!(
        b.take_probe(n, unix_ms()).await.expect("take"),
        "another replica"
    );
    assert!(!a.take_probe(n, unix_ms()).await.expect("take"), "used");
    let left: i64 = ::redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("exists");
    assert_eq!(left, 0);
    // Redis itself forgets a nonce at its expiry.
    let m = ProbeNonce::random().expect("nonce");
    s_put(&*a, m, unix_ms() + 50).await;
    let key = format!("t:p:{m}");
    eventually!(
        ::redis::cmd("EXISTS")
            .arg(&key)
            .query_async::<i64>(&mut c)
            .await
            .expect("exists")
            == 0,
        "Redis to expire {key}"
    );
}

async fn s_put(s: &dyn authback::store::Store, n: ProbeNonce, at: u64) {
    s.put_probe(n, at).await.expect("put");
}

#[tokio::test]
async fn the_file_store_keeps_a_nonce_across_a_restart() {
    let env = Env::new(Kind::File);
    let n = ProbeNonce::random().expect("nonce");
    {
        let s = open(Kind::File, &env, TTL).await;
        s.put_probe(n, unix_ms() + 60_000).await.expect("put");
    }
    let s = open(Kind::File, &env, TTL).await;
    assert!(s.take_probe(n, unix_ms()).await.expect("take"));
    assert!(!s.take_probe(n, unix_ms()).await.expect("take"));
}

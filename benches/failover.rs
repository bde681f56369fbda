//! The failover drill (`tests/it/common/failover.rs`), longer than the
//! suite's: `FAILOVERS` failovers (default 4) under `SENDERS` Klarna
//! senders (default 8), the replica held `HELD_MS` (default 1500) before
//! each kill, with `store.min_replicas_acked` 1 and then 0. Prints the
//! figures: failovers, callbacks, acknowledged, lost, duplicates, and the
//! time from each kill to the promotion and to the first 2xx after it.
//! `cargo bench --bench failover`; `MIN_REPLICAS_ACKED=1` runs one setting.

#[allow(unused_imports, unused_macros)]
#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench targets too; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("failover bench: skipped (run `cargo bench --bench failover`)");
        return;
    }
    let settings: Vec<u32> = match std::env::var("MIN_REPLICAS_ACKED") {
        Ok(v) => v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => vec![1, 0],
    };
    for min_replicas_acked in settings {
        let drill = Drill {
            min_replicas_acked,
            failovers: env("FAILOVERS", 4) as usize,
            senders: env("SENDERS", 8) as usize,
            held: Duration::from_millis(env("HELD_MS", 1500)),
            steady: 100,
        };
        let started = Instant::now();
        let f = drill.run().await;
        let secs = |ds: &[Duration]| {
            let v: Vec<String> = ds
                .iter()
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .collect();
            v.join(" ")
        };
        println!("min_replicas_acked       {min_replicas_acked}");
        println!(
            "failovers                {} (authback counted {})",
            f.failovers, f.failovers_counted
        );
        println!("callbacks                {}", f.callbacks);
        println!("acknowledged (2xx)       {}", f.acknowledged);
        println!("refused attempts         {}", f.refused);
        println!("lost                     {}", f.lost.len());
        println!("duplicates               {}", f.duplicates);
        println!("kill to promotion, s     {}", secs(&f.promoted_after_kill));
        println!("kill to first 2xx, s     {}", secs(&f.first_2xx_after_kill));
        println!(
            "replica ack failures     claim {} outcome {}",
            f.ack_failures_claim, f.ack_failures_outcome
        );
        println!(
            "elapsed                  {:.1} s\n",
            started.elapsed().as_secs_f64()
        );
    }
}

//! Store write throughput: one-document writes from N concurrent tasks, each its own transaction
//! (`Store::apply`) versus group commit (`GroupCommit::write`).
//!
//! ```text
//! cargo run --release -p bigpeer --example store_load -- postgres://postgres@127.0.0.1:5432 32 5
//! ```
//! Arguments: server URL (a scratch database is created and dropped), concurrency, seconds per mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bigpeer::store::{Change, GroupCommit, GroupCommitOptions, Store, StoreOptions};
use bigpeer_schema::{DocId, ObjectMode, Op, Value};
use sqlx::{Connection, PgConnection};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into());
    let conc: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let name = format!("bigpeer_load_{:08x}", rand::random::<u32>());
    let mut admin = PgConnection::connect(&format!("{url}/postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let opts = StoreOptions {
        max_connections: (conc as u32).min(64),
        ..StoreOptions::default()
    };
    let store = Store::connect(&format!("{url}/{name}"), &opts).await?;
    store.migrate().await?;
    let doc = Value::parse_json(
        r#"{"make":"Toyota","model":"Corolla","year":2019,"color":"red","price":18999.5,"mileage":42000,
            "owner":{"name":"Ada Lovelace","city":"London"},"tags":["sedan","hybrid"],"vin":"JT2AE92E0J3123456",
            "features":{"sunroof":true,"seats":5},"notes":"one careful owner, full service history"}"#,
    )?;
    let fields = doc.as_object().cloned().unwrap_or_default();

    for mode in ["apply", "group"] {
        let gc = GroupCommit::start(store.clone(), &GroupCommitOptions::default());
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for t in 0..conc {
            let (store, gc, done, fields) =
                (store.clone(), gc.clone(), done.clone(), fields.clone());
            let mode = mode.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let change = Change::Ops {
                        collection: "cars".into(),
                        id: DocId::string(format!("{mode}-{t}-{i}")),
                        ops: vec![Op::Merge {
                            path: vec![],
                            value: fields.clone(),
                            objects: ObjectMode::Map,
                        }],
                    };
                    let res = if mode == "apply" {
                        store.apply(vec![change]).await
                    } else {
                        gc.write(vec![change]).await
                    };
                    if let Err(e) = res {
                        eprintln!("write failed: {e}");
                        return;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
        let start = Instant::now();
        for t in tasks {
            t.await?;
        }
        let n = done.load(Ordering::Relaxed);
        println!(
            "{mode}: {conc} writers, {n} one-document writes in {:.1}s = {:.0} writes/s",
            start.elapsed().as_secs_f64(),
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

//! Sync benchmarks against a running `bigpeer serve` (loopback only).
//!
//! ```text
//! bigpeer-sync-bench --url http://127.0.0.1:8080 --token KEY --scenario idle --peers 1000 --server-pid PID
//! bigpeer-sync-bench --url http://127.0.0.1:8080 --token KEY --scenario fanout --peers 100 --rate 1000 --seconds 10
//! ```
//!
//! The peers here speak the wire protocol directly (`bigpeer_schema::wire`), each on its own
//! WebSocket: they measure the server, not a client library.
//!
//! - `idle`: `--peers` sessions open, each with one subscription that matches nothing, then sit
//!   idle (answering pings). Reports the server's resident memory (from `/proc/PID/status` of
//!   `--server-pid`) before and after, per connection.
//! - `fanout`: `--peers` sessions subscribe to the whole collection `fan`; writers send `--rate`
//!   single-document updates per second over HTTP for `--seconds`. Every peer must receive every
//!   change; reports changes delivered per second in all, and the latency from the write's
//!   request to each peer's receipt (p50, p99, max).
//! - `initial`: loads `--docs` documents of ~300 bytes over HTTP, then a fresh small peer (the
//!   `smallpeer` library: a SQLite store in a temporary folder and its sync client) subscribes
//!   to the whole collection; reports documents per second until it has caught up, durably.
//! - `latency`: two small peers A and B, both subscribed; A updates a document, B's observer sees
//!   the new value; `--samples` times in a row. Reports p50, p99 and max.

/// mimalloc instead of the system allocator: with glibc's, a sync peer spent about a quarter
/// of its time in malloc and free (see BENCHMARKS.md, Sync).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bigpeer_schema::wire::{DocChange, Msg, SubStatus, SUBPROTOCOL};
use bigpeer_schema::{DocId, SiteId, Value};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Args {
    addr: SocketAddr,
    token: String,
    scenario: String,
    peers: usize,
    rate: u64,
    seconds: u64,
    server_pid: Option<u32>,
    docs: usize,
    samples: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        token: String::new(),
        scenario: "fanout".into(),
        peers: 100,
        rate: 1000,
        seconds: 10,
        server_pid: None,
        docs: 100_000,
        samples: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => {
                let v = value()?;
                let hostport = v.trim_start_matches("http://").trim_end_matches('/');
                a.addr = hostport
                    .parse()
                    .map_err(|e| format!("--url {v}: {e} (give http://IP:PORT)"))?;
            }
            "--token" => a.token = value()?,
            "--scenario" => a.scenario = value()?,
            "--peers" => a.peers = value()?.parse().map_err(|e| format!("--peers: {e}"))?,
            "--rate" => a.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--server-pid" => {
                a.server_pid = Some(value()?.parse().map_err(|e| format!("--server-pid: {e}"))?)
            }
            "--docs" => a.docs = value()?.parse().map_err(|e| format!("--docs: {e}"))?,
            "--samples" => a.samples = value()?.parse().map_err(|e| format!("--samples: {e}"))?,
            "--help" | "-h" => {
                println!("bigpeer-sync-bench --url http://IP:PORT --token KEY [--scenario idle|fanout|initial|latency] [--peers N] [--rate CHANGES_PER_S] [--seconds S] [--server-pid PID] [--docs N] [--samples N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !a.addr.ip().is_loopback() {
        return Err("the benchmark only targets loopback addresses".into());
    }
    a.peers = a.peers.clamp(1, 5000);
    a.rate = a.rate.clamp(1, 20_000);
    a.seconds = a.seconds.clamp(1, 300);
    a.docs = a.docs.clamp(1, 2_000_000);
    a.samples = a.samples.clamp(1, 100_000);
    Ok(a)
}

/// One wire-protocol session.
struct Peer {
    ws: Ws,
    last_batch: u64,
}

impl Peer {
    async fn open(args: &Args) -> Result<Peer, String> {
        let mut req = format!("ws://{}/api/v4/sync", args.addr)
            .into_client_request()
            .map_err(|e| e.to_string())?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut p = Peer { ws, last_batch: 0 };
        p.send(&Msg::Hello {
            minor: 0,
            site: SiteId::random(),
            token: args.token.clone(),
            features: vec![],
            last_sync_ms: 0,
        })
        .await?;
        match p.recv().await? {
            Msg::Welcome { .. } => Ok(p),
            other => Err(format!("expected welcome, got {other:?}")),
        }
    }

    async fn send(&mut self, m: &Msg) -> Result<(), String> {
        self.ws
            .send(Message::Binary(m.encode().into()))
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// The next protocol message; pings are answered, batches acknowledged.
    async fn recv(&mut self) -> Result<Msg, String> {
        loop {
            let frame = self
                .ws
                .next()
                .await
                .ok_or("the server closed the connection")?
                .map_err(|e| format!("receive: {e}"))?;
            let Message::Binary(b) = frame else {
                continue;
            };
            let m = Msg::decode(&b).map_err(|e| format!("bad frame: {e}"))?;
            match m {
                Msg::Ping { nonce } => self.send(&Msg::Pong { nonce }).await?,
                Msg::Batch { batch, .. } => {
                    self.last_batch = batch;
                    self.send(&Msg::Ack { batch, credit: 8 }).await?;
                    return Ok(m);
                }
                Msg::Error { code, message, .. } => return Err(format!("{code}: {message}")),
                other => return Ok(other),
            }
        }
    }

    /// Subscribes and waits until the initial sync is done; returns its changes.
    async fn subscribe(&mut self, query: &str) -> Result<Vec<DocChange>, String> {
        self.send(&Msg::Subscribe {
            sub: 1,
            query: query.into(),
            args: Value::Object(Default::default()),
            cursor: None,
        })
        .await?;
        let mut initial = Vec::new();
        loop {
            match self.recv().await? {
                Msg::Batch { changes, .. } => initial.extend(changes),
                Msg::SubState {
                    status: SubStatus::CaughtUp { .. },
                    ..
                } => return Ok(initial),
                Msg::SubState {
                    status: SubStatus::Failed { code, message },
                    ..
                } => return Err(format!("subscription failed: {code}: {message}")),
                _ => {}
            }
        }
    }
}

/// The value of the top-level integer field `field` a change carries, if it carries one (a
/// delta holds only what changed; a full state holds every field).
fn int_field(c: &DocChange, field: &str) -> Option<i64> {
    let reg = c
        .delta
        .state
        .root
        .map
        .as_ref()?
        .entries
        .get(field)?
        .reg
        .as_ref()?;
    match reg.value.as_ref()? {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn idle(args: &Args) -> Result<(), String> {
    let pid = args
        .server_pid
        .ok_or("the idle scenario needs --server-pid")?;
    let before = rss_kib(pid).ok_or("cannot read the server's memory")?;
    let started = Instant::now();
    let mut peers = Vec::with_capacity(args.peers);
    for _ in 0..args.peers {
        let mut p = Peer::open(args).await?;
        p.subscribe("SELECT * FROM idle_bench WHERE _id = 'nothing'")
            .await?;
        peers.push(p);
    }
    let opened = started.elapsed();
    // Let the server settle, answering pings meanwhile.
    let settle = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for mut p in peers {
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(settle, async {
                loop {
                    if p.recv().await.is_err() {
                        break;
                    }
                }
            })
            .await;
            p
        }));
    }
    let mut peers = Vec::new();
    for t in tasks {
        peers.push(t.await.map_err(|e| e.to_string())?);
    }
    let after = rss_kib(pid).ok_or("cannot read the server's memory")?;
    let per = (after.saturating_sub(before)) as f64 / args.peers as f64;
    println!(
        "idle: {} peers connected and subscribed in {:.1}s; server RSS {before} KiB -> {after} KiB = {per:.1} KiB per connection",
        args.peers,
        opened.as_secs_f64()
    );
    for mut p in peers {
        let _ = p.ws.close(None).await;
    }
    Ok(())
}

/// When each write (by its value of `n`, unique per write) was requested.
type Sent = Arc<Mutex<HashMap<i64, Instant>>>;

async fn fanout(args: &Args) -> Result<(), String> {
    const DOCS: u64 = 200;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())?;
    let exec = |statement: String, a: serde_json::Value| {
        let (http, addr, token) = (http.clone(), args.addr, args.token.clone());
        async move { post_dql(&http, addr, &token, &statement, a).await }
    };
    let docs: Vec<serde_json::Value> = (0..DOCS)
        .map(|i| serde_json::json!({"_id": format!("d{i}"), "n": -1, "pad": "x".repeat(200)}))
        .collect();
    exec(
        "INSERT INTO fan DOCUMENTS (:docs) ON ID CONFLICT DO UPDATE".replace(
            "(:docs)",
            &(0..DOCS)
                .map(|i| format!("(:d{i})"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        serde_json::Value::Object(
            docs.into_iter()
                .enumerate()
                .map(|(i, d)| (format!("d{i}"), d))
                .collect(),
        ),
    )
    .await?;

    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The big peer's final values, once the writes are done; peers holding all of them count
    // themselves in `converged`.
    let (truth_tx, truth_rx) = tokio::sync::watch::channel(None::<Arc<HashMap<DocId, i64>>>);
    let converged = Arc::new(AtomicU64::new(0));
    let mut peer_tasks = Vec::new();
    for _ in 0..args.peers {
        let mut p = Peer::open(args).await?;
        // The newest `n` this peer holds, per document: seeded by the initial sync, then moved
        // by every live change that carries `n` (the server may coalesce updates of a document
        // for a peer that lags: it then sees only the newest).
        let mut latest: HashMap<DocId, i64> = HashMap::new();
        for c in p.subscribe("SELECT * FROM fan").await? {
            if let Some(n) = int_field(&c, "n") {
                latest.insert(c.id.clone(), n);
            }
        }
        let (sent, latencies, received, mut stop, converged) = (
            sent.clone(),
            latencies.clone(),
            received.clone(),
            stop_rx.clone(),
            converged.clone(),
        );
        let mut truth_rx = truth_rx.clone();
        peer_tasks.push(tokio::spawn(async move {
            let mut counted = false;
            loop {
                if !counted {
                    let truth = truth_rx.borrow().clone();
                    if let Some(truth) = truth {
                        if truth.iter().all(|(id, n)| latest.get(id) == Some(n)) {
                            counted = true;
                            converged.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let m = tokio::select! {
                    m = p.recv() => m,
                    _ = truth_rx.changed(), if !counted => continue,
                    _ = stop.changed() => break,
                };
                let Ok(Msg::Batch { changes, .. }) = m else {
                    if let Err(e) = m {
                        eprintln!("peer: {e}");
                        break;
                    }
                    continue;
                };
                let now = Instant::now();
                let mut mine = Vec::new();
                for c in changes {
                    let Some(n) = int_field(&c, "n") else {
                        continue;
                    };
                    latest.insert(c.id.clone(), n);
                    if let Some(t) = sent.lock().ok().and_then(|s| s.get(&n).copied()) {
                        mine.push(now.duration_since(t));
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Ok(mut l) = latencies.lock() {
                    l.extend(mine);
                }
            }
            let _ = p.ws.close(None).await;
            latest
        }));
    }

    // Writers: `rate` updates per second, each to the next document, paced by the clock.
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(tokio::sync::Semaphore::new(64));
    for k in 0..total {
        let due = started + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = inflight
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let id = format!("d{}", k % DOCS);
        let n = k as i64;
        if let Ok(mut s) = sent.lock() {
            s.insert(n, Instant::now());
        }
        let fut = exec(
            "UPDATE fan SET n = :n WHERE _id = :id".into(),
            serde_json::json!({"n": n, "id": id}),
        );
        let errors = errors.clone();
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("write failed: {e}");
                }
            }
            drop(permit);
        });
    }
    // Every write answered.
    let _all = inflight.acquire_many(64).await.map_err(|e| e.to_string())?;
    let write_secs = started.elapsed().as_secs_f64();
    // What the big peer holds at the end: every peer must end with exactly this.
    let truth = final_values(&http, args).await?;
    truth_tx.send_replace(Some(Arc::new(truth.clone())));
    // Wait (bounded) until every peer holds the newest value of every document.
    let expected = total * args.peers as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while converged.load(Ordering::Relaxed) < args.peers as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_secs = started.elapsed().as_secs_f64();
    stop_tx.send_replace(true);
    let mut lost = 0u64;
    let mut peers_done = 0;
    for t in peer_tasks {
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(latest)) => {
                peers_done += 1;
                lost += truth
                    .iter()
                    .filter(|(id, n)| latest.get(*id) != Some(*n))
                    .count() as u64;
            }
            _ => lost += truth.len() as u64,
        }
    }
    let got = received.load(Ordering::Relaxed);
    let mut l = latencies.lock().map_err(|e| e.to_string())?.clone();
    l.sort();
    let pct = |q: f64| {
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    // Updates of the same document can be coalesced by the server when a peer lags (the peer
    // then sees only the latest value): those are counted as coalesced, not lost. Lost is a
    // document whose newest value a peer does not hold at the end.
    println!(
        "fanout: {} peers, {} writes in {write_secs:.1}s ({:.0}/s), write errors {}; {got}/{expected} change deliveries ({} coalesced) in {all_secs:.1}s = {:.0} deliveries/s; latency write->peer p50 {:.1} ms p99 {:.1} ms max {:.1} ms; final state: {peers_done}/{} peers checked, {lost} (peer, document) pairs not at the big peer's value",
        args.peers,
        total,
        total as f64 / write_secs,
        errors.load(Ordering::Relaxed),
        expected.saturating_sub(got),
        got as f64 / all_secs,
        pct(0.50),
        pct(0.99),
        l.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        args.peers,
    );
    if errors.load(Ordering::Relaxed) > 0 {
        return Err("some writes failed".into());
    }
    if lost > 0 {
        return Err(format!(
            "{lost} (peer, document) pairs lost their final value"
        ));
    }
    Ok(())
}

/// `n` of every document of `fan` at the big peer, over HTTP.
async fn final_values(http: &reqwest::Client, args: &Args) -> Result<HashMap<DocId, i64>, String> {
    let r = http
        .post(format!("http://{}/api/v4/store/execute", args.addr))
        .bearer_auth(&args.token)
        .json(&serde_json::json!({"statement": "SELECT _id, n FROM fan"}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("final SELECT: {}", r.status()));
    }
    let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    let items = body
        .get("items")
        .and_then(|v| v.as_array())
        .ok_or("final SELECT: no items")?;
    let mut out = HashMap::new();
    for it in items {
        let (Some(id), Some(n)) = (
            it.get("_id").and_then(|v| v.as_str()),
            it.get("n").and_then(|v| v.as_i64()),
        ) else {
            return Err(format!("final SELECT: unexpected item {it}"));
        };
        out.insert(DocId::string(id), n);
    }
    Ok(out)
}

/// `POST /api/v4/store/execute`; an error for anything but 200.
async fn execute(
    http: &reqwest::Client,
    args: &Args,
    statement: &str,
    a: serde_json::Value,
) -> Result<(), String> {
    post_dql(http, args.addr, &args.token, statement, a).await
}

async fn post_dql(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    statement: &str,
    a: serde_json::Value,
) -> Result<(), String> {
    let r = http
        .post(format!("http://{addr}/api/v4/store/execute"))
        .bearer_auth(token)
        .json(&serde_json::json!({"statement": statement, "args": a}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!(
            "{}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ));
    }
    Ok(())
}

/// A ~300-byte document.
fn car(run: u32, i: usize) -> serde_json::Value {
    const COLORS: [&str; 4] = ["red", "blue", "black", "white"];
    serde_json::json!({
        "_id": format!("{run:x}-{i}"), "make": "Toyota", "model": "Corolla",
        "color": COLORS[i % 4], "year": 2019, "price": 18450, "mileage": 42000,
        "vin": format!("JTDBR32E7{i:010}"),
        "owner": {"name": format!("owner-{i}"), "city": "Berlin", "zip": "10115"},
        "tags": ["sedan", "used", "hybrid"], "features": {"sunroof": true, "seats": 5, "doors": 4},
        "notes": format!("one owner, full history, seq {i}")
    })
}

fn small_peer(
    args: &Args,
    query: &str,
) -> Result<
    (
        tempfile::TempDir,
        smallpeer::SharedStore,
        smallpeer::SyncHandle,
    ),
    String,
> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = smallpeer::Store::open_dir(dir.path()).map_err(|e| e.to_string())?;
    let store = Arc::new(Mutex::new(store));
    let config = smallpeer::SyncConfig::new(format!("ws://{}", args.addr), args.token.clone())
        .subscribe(query, serde_json::Value::Null)
        .map_err(|e| e.to_string())?;
    let handle = smallpeer::SyncClient::start(store.clone(), config).map_err(|e| e.to_string())?;
    Ok((dir, store, handle))
}

async fn initial(args: &Args) -> Result<(), String> {
    let http = reqwest::Client::new();
    let run: u32 = rand::random();
    let collection = format!("initial_{run:x}");
    let started = Instant::now();
    let mut i = 0;
    while i < args.docs {
        let n = 500.min(args.docs - i);
        let marks: Vec<String> = (0..n).map(|k| format!("(:d{k})")).collect();
        let docs: serde_json::Map<String, serde_json::Value> =
            (0..n).map(|k| (format!("d{k}"), car(run, i + k))).collect();
        execute(
            &http,
            args,
            &format!("INSERT INTO {collection} DOCUMENTS {}", marks.join(", ")),
            serde_json::Value::Object(docs),
        )
        .await?;
        i += n;
    }
    println!(
        "initial: loaded {} documents over HTTP in {:.1}s",
        args.docs,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let (_dir, store, handle) = small_peer(args, &format!("SELECT * FROM {collection}"))?;
    handle
        .wait_until_caught_up()
        .await
        .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    let held = store
        .lock()
        .map_err(|e| e.to_string())?
        .documents(&collection)
        .map_err(|e| e.to_string())?
        .len();
    let stats = handle.status().stats;
    handle.stop().await;
    if held != args.docs {
        return Err(format!(
            "the small peer holds {held} of {} documents",
            args.docs
        ));
    }
    println!(
        "initial: {} documents synced into a fresh small peer's SQLite store in {secs:.2}s = {:.0} docs/s ({} batches)",
        args.docs,
        args.docs as f64 / secs,
        stats.batches
    );
    Ok(())
}

async fn latency(args: &Args) -> Result<(), String> {
    let run: u32 = rand::random();
    let collection = format!("latency_{run:x}");
    let query = format!("SELECT * FROM {collection}");
    let (_da, a, ha) = small_peer(args, &query)?;
    let (_db, b, hb) = small_peer(args, &query)?;
    ha.wait_until_caught_up().await.map_err(|e| e.to_string())?;
    hb.wait_until_caught_up().await.map_err(|e| e.to_string())?;
    let mut observer = b
        .lock()
        .map_err(|e| e.to_string())?
        .observe(
            &format!("SELECT n FROM {collection} WHERE _id = 'p'"),
            &Default::default(),
        )
        .map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(args.samples);
    for k in 0..args.samples as i64 {
        let t0 = Instant::now();
        a.lock()
            .map_err(|e| e.to_string())?
            .execute_json(
                &format!("INSERT INTO {collection} DOCUMENTS (:d) ON ID CONFLICT DO UPDATE"),
                &serde_json::json!({"d": {"_id": "p", "n": k}}),
            )
            .map_err(|e| e.to_string())?;
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let Some(Ok(items)) = observer.next().await else {
                    return false;
                };
                let n = items
                    .first()
                    .and_then(|v| v.as_object())
                    .and_then(|o| o.get("n"))
                    .cloned();
                if n == Some(Value::Int(k)) {
                    return true;
                }
            }
        })
        .await;
        if seen != Ok(true) {
            return Err(format!("peer B did not see write {k} within 10 s"));
        }
        samples.push(t0.elapsed());
    }
    ha.stop().await;
    hb.stop().await;
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]);
    println!(
        "latency: small peer A write -> bigpeer -> small peer B observer, {} samples: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        at(0.50),
        at(0.99),
        samples.last().map_or(0.0, |d| ms(*d))
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let result = match args.scenario.as_str() {
        "idle" => idle(&args).await,
        "fanout" => fanout(&args).await,
        "initial" => initial(&args).await,
        "latency" => latency(&args).await,
        other => Err(format!(
            "unknown scenario {other} (idle, fanout, initial, latency)"
        )),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

//! Load generator for `POST /api/v4/store/execute`.
//!
//! ```text
//! bigpeer-load --url http://127.0.0.1:8080 --connections 32 --seconds 10 --scenario insert
//! ```
//! Scenarios: `insert` (one new ~300-byte document per request), `get` (point SELECT by `_id` on
//! documents loaded first), `filter` (a selective SELECT with a WHERE on a field over
//! `--docs` documents, loaded first). Each connection is a kept-alive HTTP/1.1 socket sending one
//! request at a time. Prints requests/s, p50/p99 latency and the error count; exits non-zero on any
//! error. Traffic goes only to the given URL (use loopback). `--skip-load` reuses documents an
//! earlier run loaded (the `filter` scenario looks documents up by `vin`, the same in every run).

/// mimalloc instead of the system allocator: with glibc's, a sync peer spent about a quarter
/// of its time in malloc and free (see BENCHMARKS.md, Sync).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    connections: usize,
    seconds: u64,
    scenario: String,
    docs: usize,
    token: Option<String>,
    skip_load: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        connections: 32,
        seconds: 10,
        scenario: "insert".into(),
        docs: 100_000,
        token: None,
        skip_load: false,
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
            "--connections" => {
                a.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--scenario" => a.scenario = value()?,
            "--docs" => a.docs = value()?.parse().map_err(|e| format!("--docs: {e}"))?,
            "--token" => a.token = Some(value()?),
            "--skip-load" => a.skip_load = true,
            "--help" | "-h" => {
                println!("bigpeer-load --url http://IP:PORT [--connections N] [--seconds S] [--scenario insert|get|filter] [--docs N] [--token KEY] [--skip-load]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !a.addr.ip().is_loopback() {
        return Err("the load generator only targets loopback addresses".into());
    }
    a.seconds = a.seconds.clamp(1, 600);
    a.connections = a.connections.clamp(1, 1024);
    Ok(a)
}

/// One kept-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
    token: Option<String>,
}

impl Conn {
    async fn open(addr: SocketAddr, token: Option<String>) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(s),
            addr,
            token,
        })
    }

    /// POSTs a JSON body; returns the status and the body.
    async fn post(&mut self, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.reader.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&line))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().map_err(|_| bad(l))?;
                }
            }
        }
        let mut out = vec![0u8; len];
        self.reader.read_exact(&mut out).await?;
        Ok((status, out))
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("unexpected response: {what:?}"),
    )
}

fn doc(i: u64, run: u64) -> String {
    const COLORS: [&str; 8] = [
        "red", "blue", "black", "white", "silver", "grey", "green", "yellow",
    ];
    format!(
        r#"{{"_id":"{run:x}-{i}","make":"Toyota","model":"Corolla","color":"{}","year":2019,"price":18450,"mileage":42000,"vin":"JTDBR32E7{i:010}","owner":{{"name":"owner-{i}","city":"Berlin","zip":"10115"}},"tags":["sedan","used","hybrid"],"features":{{"sunroof":true,"seats":5,"doors":4}},"notes":"one owner, full history, seq {i}"}}"#,
        COLORS[(i % 8) as usize]
    )
}

async fn load(args: &Args, run: u64) -> Result<(), String> {
    let mut c = Conn::open(args.addr, args.token.clone())
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let batch = 500;
    let mut i = 0;
    while i < args.docs {
        let n = batch.min(args.docs - i);
        let marks: Vec<String> = (0..n).map(|k| format!("(:d{k})")).collect();
        let docs: Vec<String> = (0..n)
            .map(|k| format!("\"d{k}\":{}", doc((i + k) as u64, run)))
            .collect();
        let body = format!(
            r#"{{"statement":"INSERT INTO cars DOCUMENTS {}","args":{{{}}}}}"#,
            marks.join(", "),
            docs.join(",")
        );
        let (status, resp) = c
            .post("/api/v4/store/execute", &body)
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!(
                "loading failed: {status} {}",
                String::from_utf8_lossy(&resp)
            ));
        }
        i += n;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "loaded {} documents in {secs:.1}s ({:.0} docs/s)",
        args.docs,
        args.docs as f64 / secs
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
    let run: u64 = rand::random::<u32>().into();
    if (args.scenario == "get" || args.scenario == "filter") && !args.skip_load {
        if let Err(e) = load(&args, run).await {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for t in 0..args.connections {
        let (errors, scenario, addr, token, docs) = (
            errors.clone(),
            args.scenario.clone(),
            args.addr,
            args.token.clone(),
            args.docs as u64,
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let Ok(mut c) = Conn::open(addr, token).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return lat;
            };
            let mut i: u64 = (t as u64) << 32;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ t as u64;
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let body = match scenario.as_str() {
                    "insert" => format!(
                        r#"{{"statement":"INSERT INTO cars DOCUMENTS (:d)","args":{{"d":{}}}}}"#,
                        doc(i, run ^ 0xffff)
                    ),
                    "get" => format!(
                        r#"{{"statement":"SELECT * FROM cars WHERE _id = :id","args":{{"id":"{run:x}-{}"}}}}"#,
                        x % docs.max(1)
                    ),
                    _ => format!(
                        r#"{{"statement":"SELECT * FROM cars WHERE vin = :v","args":{{"v":"JTDBR32E7{:010}"}}}}"#,
                        x % docs.max(1)
                    ),
                };
                i += 1;
                let sent = Instant::now();
                match c.post("/api/v4/store/execute", &body).await {
                    Ok((200, _)) => lat.push(sent.elapsed()),
                    Ok((status, body)) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("error: {status} {}", String::from_utf8_lossy(&body));
                        }
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("error: {e}");
                        match Conn::open(addr, c.token.clone()).await {
                            Ok(n) => c = n,
                            Err(_) => return lat,
                        }
                    }
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            all.extend(l);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let errs = errors.load(Ordering::Relaxed);
    println!(
        "scenario={} connections={} requests={} seconds={secs:.1} req/s={:.0} p50_ms={:.2} p99_ms={:.2} errors={errs}",
        args.scenario,
        args.connections,
        all.len(),
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
    if errs > 0 {
        std::process::exit(1);
    }
}

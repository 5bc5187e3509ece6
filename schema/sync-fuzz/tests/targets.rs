//! The fuzz targets' bodies on stable: over the committed seed corpus of each target
//! (`schema/fuzz/corpus/<target>`), and over thousands of seeded random inputs (fresh bytes,
//! and valid encodings with bytes flipped, cut or inserted). The same seeds every run: a failure
//! names its seed and reproduces.
//!
//! `cargo test -p bigpeer-sync-fuzz -- --ignored regenerate_seed_corpus` writes the corpus anew.

use std::path::PathBuf;

use arbitrary::Unstructured;
use bigpeer_schema::wire::{Cursor, Msg, PushResult, SubStatus};
use bigpeer_schema::{SiteId, Value, VersionVector};
use bigpeer_sync_fuzz::gen::{self, Gen};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A target's body.
type Body = fn(&[u8]);

const TARGETS: [(&str, Body); 3] = [
    ("frame", bigpeer_sync_fuzz::frame),
    ("states", bigpeer_sync_fuzz::states),
    ("structured", bigpeer_sync_fuzz::structured),
];

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `body` on `input`, naming the input when it panics.
fn run(target: &str, what: &str, body: Body, input: &[u8]) {
    let outcome = std::panic::catch_unwind(|| body(input));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("target {target}, {what} ({} bytes): {message}", input.len());
    }
}

#[test]
fn every_target_passes_its_seed_corpus() {
    for (target, body) in TARGETS {
        let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
            .unwrap_or_else(|e| panic!("the seed corpus of {target}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        assert!(files.len() >= 10, "{target}: only {} seeds", files.len());
        for f in files {
            let input = std::fs::read(&f).expect("a seed");
            run(target, &f.display().to_string(), body, &input);
        }
    }
}

/// Valid frames of every message type, with random contents.
fn frames(g: &Gen, u: &mut Unstructured) -> arbitrary::Result<Vec<Vec<u8>>> {
    let changes = |u: &mut Unstructured| -> arbitrary::Result<Vec<_>> {
        (0..u.int_in_range(0..=3)?)
            .map(|_| g.change(u, &["cars", "c"]))
            .collect()
    };
    let cursor = |u: &mut Unstructured| -> arbitrary::Result<Cursor> {
        Ok(Cursor {
            epoch: g.key(u)?,
            seq: u.arbitrary()?,
        })
    };
    let msgs = vec![
        Msg::Hello {
            minor: u.arbitrary()?,
            site: g.site(u)?,
            token: g.key(u)?,
            features: vec![g.key(u)?],
            last_sync_ms: u.arbitrary()?,
        },
        Msg::Welcome {
            minor: 0,
            site: SiteId(u.arbitrary()?),
            session: g.key(u)?,
            max_frame: u.arbitrary()?,
            window: u.arbitrary()?,
            heartbeat_ms: u.arbitrary()?,
            expires_in: u.arbitrary()?,
            user: g.key(u)?,
        },
        Msg::Subscribe {
            sub: u.arbitrary()?,
            query: "SELECT * FROM cars WHERE n > :n".into(),
            args: Value::Object([("n".to_owned(), g.value(u, 3)?)].into()),
            cursor: if u.arbitrary()? {
                Some(cursor(u)?)
            } else {
                None
            },
        },
        Msg::Unsubscribe {
            sub: u.arbitrary()?,
        },
        Msg::SubState {
            sub: u.arbitrary()?,
            status: match u.int_in_range(0..=2)? {
                0 => SubStatus::Active,
                1 => SubStatus::CaughtUp { cursor: cursor(u)? },
                _ => SubStatus::Failed {
                    code: g.key(u)?,
                    message: g.key(u)?,
                },
            },
        },
        Msg::Batch {
            batch: u.arbitrary()?,
            subs: vec![u.arbitrary()?],
            changes: changes(u)?,
            cursor: Some(cursor(u)?),
        },
        Msg::Ack {
            batch: u.arbitrary()?,
            credit: u.arbitrary()?,
        },
        Msg::Push {
            push: u.arbitrary()?,
            changes: changes(u)?,
        },
        Msg::PushAck {
            push: u.arbitrary()?,
            txn: u.arbitrary()?,
            results: vec![
                PushResult::Applied,
                PushResult::Unchanged,
                PushResult::Refused {
                    have: g.version_vector(u, &[])?,
                },
                PushResult::Denied { code: g.key(u)? },
            ],
        },
        Msg::Want {
            collection: g.key(u)?,
            id: g.doc_id(u)?,
            have: g.version_vector(u, &[])?,
        },
        Msg::Error {
            code: g.key(u)?,
            message: g.key(u)?,
            fatal: u.arbitrary()?,
        },
        Msg::Ping {
            nonce: u.arbitrary()?,
        },
        Msg::Pong {
            nonce: u.arbitrary()?,
        },
        Msg::Bye { reason: g.key(u)? },
        Msg::ClientInfo {
            info: g.value(u, 4)?,
        },
    ];
    Ok(msgs.iter().map(Msg::encode).collect())
}

/// Encoded deltas and states, as the `states` target reads them (a cut byte, then two parts).
fn states(g: &Gen, u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let a = if u.arbitrary()? {
        g.delta(u)?.encode()
    } else {
        g.doc(u)?.encode()
    };
    let b = if u.arbitrary()? {
        g.delta(u)?.encode()
    } else {
        g.doc(u)?.encode()
    };
    let total = a.len() + b.len();
    let cut = if total == 0 {
        0
    } else {
        // The byte that splits the rest at `a.len()` (or as near as 255 steps get).
        u8::try_from((a.len() * 255).div_ceil(total)).unwrap_or(255)
    };
    let mut out = vec![cut];
    out.extend(a);
    out.extend(b);
    Ok(out)
}

/// Flips, cuts, inserts or duplicates bytes.
fn mutate(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..=4) {
        if bytes.is_empty() {
            bytes.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..5) {
            0 => bytes[at] ^= 1 << rng.random_range(0..8),
            1 => bytes[at] = rng.random(),
            2 => bytes.truncate(at),
            3 => bytes.insert(at, rng.random()),
            _ => {
                let end = (at + rng.random_range(1..=16)).min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk);
            }
        }
    }
    bytes
}

/// Seeds per target and kind of input.
const SEEDS: u64 = 600;

#[test]
fn every_target_survives_seeded_random_inputs() {
    let g = Gen::default();
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);
        let len = rng.random_range(0..=1024);
        let noise = gen::bytes(&mut rng, len);
        let drive = gen::bytes(&mut rng, 4096);
        let mut u = Unstructured::new(&drive);
        let valid_frames = frames(&g, &mut u).unwrap_or_default();
        let valid_states = states(&g, &mut u).unwrap_or_default();
        for (target, body) in TARGETS {
            run(target, &format!("noise of seed {seed}"), body, &noise);
        }
        for (i, f) in valid_frames.into_iter().enumerate() {
            run(
                "frame",
                &format!("frame {i} of seed {seed}"),
                bigpeer_sync_fuzz::frame,
                &f,
            );
            let m = mutate(&mut rng, f);
            run(
                "frame",
                &format!("mutated frame {i} of seed {seed}"),
                bigpeer_sync_fuzz::frame,
                &m,
            );
        }
        run(
            "states",
            &format!("states of seed {seed}"),
            bigpeer_sync_fuzz::states,
            &valid_states,
        );
        let m = mutate(&mut rng, valid_states);
        run(
            "states",
            &format!("mutated states of seed {seed}"),
            bigpeer_sync_fuzz::states,
            &m,
        );
        run(
            "structured",
            &format!("seed {seed}"),
            bigpeer_sync_fuzz::structured,
            &drive,
        );
    }
}

/// Writes the seed corpus: valid inputs of every kind (run by hand after the formats change).
#[test]
#[ignore = "writes files: run by hand to regenerate the seed corpus"]
fn regenerate_seed_corpus() {
    let g = Gen::default();
    for (target, _) in TARGETS {
        let dir = corpus_dir(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("corpus dir");
    }
    let write = |target: &str, name: String, bytes: &[u8]| {
        std::fs::write(corpus_dir(target).join(name), bytes).expect("write a seed");
    };
    for seed in 0..24u64 {
        let mut rng = StdRng::seed_from_u64(1_000_000 + seed);
        let drive = gen::bytes(&mut rng, 2048);
        let mut u = Unstructured::new(&drive);
        if let Ok(frames) = frames(&g, &mut u) {
            for (i, f) in frames.iter().enumerate() {
                write("frame", format!("seed-{seed:02}-{i:02}"), f);
            }
        }
        if let Ok(s) = states(&g, &mut u) {
            write("states", format!("seed-{seed:02}"), &s);
        }
        write("structured", format!("seed-{seed:02}"), &drive);
    }
    // The edges: empty input, an empty delta, a frame of each tag alone.
    write("frame", "empty".into(), &[]);
    write("states", "empty".into(), &[]);
    let empty = bigpeer_schema::Delta {
        base: VersionVector::new(),
        state: bigpeer_schema::Doc::new(),
    };
    write(
        "states",
        "empty-delta".into(),
        &[0].into_iter().chain(empty.encode()).collect::<Vec<_>>(),
    );
    for tag in 0..=0x0fu8 {
        write("frame", format!("tag-{tag:02x}"), &[tag]);
    }
    write("frame", "tag-80".into(), &[0x80]);
}

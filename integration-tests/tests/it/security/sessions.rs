//! What one sync session may make the server hold in memory: every answer that is a batch
//! (live changes, initial sync, answers to `Want`) waits for the peer's credit, and what waits
//! is bounded.

use std::time::Duration;

use bigpeer_schema::wire::{Msg, PushResult};
use bigpeer_schema::{SiteId, VersionVector};
use futures_util::StreamExt as _;
use integration_tests::TestApp;
use tokio_tungstenite::tungstenite::Message;

use crate::sync::{admin, change, local_doc, Peer};

/// Counts the batches that arrive within `wait` without acknowledging any.
async fn batches_without_ack(p: &mut Peer, wait: Duration) -> usize {
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, p.ws.next()).await {
        if let Message::Binary(b) = frame {
            if matches!(Msg::decode(&b), Ok(Msg::Batch { .. })) {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test]
async fn answers_to_wants_wait_for_credit() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let site = SiteId(0x3a17);
    let (mut p, welcome) = Peer::open_as(&app, site, &token).await;
    let Msg::Welcome { window, .. } = welcome else {
        panic!("welcome")
    };
    // A large document (about 1 MiB).
    let big = "x".repeat(1024 * 1024);
    let doc = local_doc(0x3a17, &format!(r#"{{"blob": "{big}"}}"#));
    p.send(&Msg::Push {
        push: 1,
        changes: vec![change("files", "big", doc.delta(&VersionVector::new()))],
    })
    .await;
    let Msg::PushAck { results, .. } = p.recv().await else {
        panic!("push ack")
    };
    assert_eq!(results, vec![PushResult::Applied]);

    // Many wants for it and for others, reading nothing: at most `window` answers go out.
    for i in 0..200 {
        let id = if i % 2 == 0 {
            "big".to_owned()
        } else {
            format!("none-{i}")
        };
        p.send(&Msg::Want {
            collection: "files".into(),
            id: bigpeer_schema::DocId::string(&id),
            have: VersionVector::new(),
        })
        .await;
    }
    let sent = batches_without_ack(&mut p, Duration::from_secs(2)).await;
    assert!(sent >= 1, "no answer at all");
    assert!(
        sent <= window as usize,
        "{sent} answers without credit (window {window})"
    );
    // With credit, the queued request is answered (repeats of it were merged into one).
    p.send(&Msg::Ack {
        batch: sent as u64,
        credit: window,
    })
    .await;
    let more = batches_without_ack(&mut p, Duration::from_secs(2)).await;
    assert!(more <= 1, "{more} answers for one queued want");
    // The session is healthy.
    p.send(&Msg::Ping { nonce: 9 }).await;
    assert_eq!(p.recv().await, Msg::Pong { nonce: 9 });
    app.shutdown().await;
}

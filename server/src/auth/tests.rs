//! API key tests against a real Postgres.

use super::*;
use crate::testdb::TestDb;

fn reader_of(coll: &str) -> Permissions {
    let mut p = Permissions::default();
    p.read
        .queries_by_collection
        .insert(coll.to_owned(), vec!["true".to_owned()]);
    p
}

#[tokio::test]
async fn create_authenticate_list_revoke() {
    let db = TestDb::new().await;
    let keys = KeyStore::new(db.store.clone());
    let created = keys
        .create(NewKey {
            name: "ci".into(),
            permissions: reader_of("cars"),
            ..NewKey::default()
        })
        .await
        .expect("create");
    assert!(created.secret.starts_with(SECRET_PREFIX));
    assert!(created.secret.starts_with(&created.key.prefix));

    let k = keys.authenticate(&created.secret).await.expect("valid key");
    assert_eq!(k.id, created.key.id);
    assert_eq!(k.permissions.read.scope("cars"), Scope::All);
    assert_eq!(k.permissions.write.scope("cars"), Scope::Nothing);

    let wrong = format!("{}x", created.secret);
    assert_eq!(
        keys.authenticate(&wrong).await.expect_err("unknown").code(),
        "auth/invalid-key"
    );
    assert_eq!(
        keys.authenticate("not-a-key")
            .await
            .expect_err("garbage")
            .code(),
        "auth/invalid-key"
    );

    let listed = keys.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.key.id);
    let shown = serde_json::to_string(&listed).expect("json");
    assert!(
        !shown.contains(&created.secret),
        "the secret is never shown again"
    );

    // Revoked in this process: refused at once, even though the lookup was cached.
    assert!(keys.revoke(&created.key.id).await.expect("revoke"));
    assert_eq!(
        keys.authenticate(&created.secret)
            .await
            .expect_err("revoked")
            .code(),
        "auth/revoked-key"
    );
    assert!(!keys.revoke("key_missing").await.expect("revoke"));
    db.drop_db().await;
}

#[tokio::test]
async fn revocation_by_another_process_takes_effect_within_a_second() {
    let db = TestDb::new().await;
    let here = KeyStore::new(db.store.clone());
    let there = KeyStore::new(db.store.clone());
    let created = here
        .create(NewKey {
            name: "k".into(),
            ..NewKey::default()
        })
        .await
        .expect("create");
    here.authenticate(&created.secret)
        .await
        .expect("valid and now cached");
    there.revoke(&created.key.id).await.expect("revoke");
    let start = std::time::Instant::now();
    loop {
        match here.authenticate(&created.secret).await {
            Err(e) => {
                assert_eq!(e.code(), "auth/revoked-key");
                break;
            }
            Ok(_) => {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(1),
                    "revoked key still works after 1 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    db.drop_db().await;
}

#[tokio::test]
async fn expiry_and_bad_requests() {
    let db = TestDb::new().await;
    let keys = KeyStore::new(db.store.clone());
    let past = keys
        .create(NewKey {
            name: "old".into(),
            expires_at: Some(now_secs() - 10),
            ..NewKey::default()
        })
        .await
        .expect_err("past expiry");
    assert_eq!(past.code(), "auth/invalid-request");
    assert_eq!(
        keys.create(NewKey::default())
            .await
            .expect_err("no name")
            .code(),
        "auth/invalid-request"
    );

    let created = keys
        .create(NewKey {
            name: "soon".into(),
            expires_at: Some(now_secs() + 3600),
            ..NewKey::default()
        })
        .await
        .expect("create");
    keys.authenticate(&created.secret)
        .await
        .expect("valid before expiry");
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second'")
        .execute(db.store.pool())
        .await
        .expect("expire it");
    tokio::time::sleep(CACHE_TTL + std::time::Duration::from_millis(100)).await;
    assert_eq!(
        keys.authenticate(&created.secret)
            .await
            .expect_err("expired")
            .code(),
        "auth/expired-key"
    );
    db.drop_db().await;
}

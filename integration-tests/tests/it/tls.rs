//! HTTPS with rustls: HTTP/2 and HTTP/1.1 on a real socket, with a certificate made here.

use integration_tests::{TestApp, TestDb};
use serde_json::{json, Value};

/// A self-signed certificate for 127.0.0.1 written to `dir`: (cert path, key path, cert PEM).
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("a certificate");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let (cp, kp) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cp, &cert_pem).expect("write cert");
    std::fs::write(&kp, key_pem).expect("write key");
    (cp, kp, cert_pem)
}

#[tokio::test]
async fn https_with_http2_and_http1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, pem) = certificate(dir.path());
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.playground = true;
    })
    .await;
    assert!(app.app.url().starts_with("https://"));
    let root = reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem");

    let h2 = reqwest::Client::builder()
        .add_root_certificate(root.clone())
        .build()
        .expect("client");
    let r = h2
        .get(format!("{}/healthz", app.app.url()))
        .send()
        .await
        .expect("https request");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN picks HTTP/2");
    let r = h2
        .post(format!("{}/api/v4/store/execute", app.app.url()))
        .json(&json!({"statement": "INSERT INTO c DOCUMENTS ({'_id': 'tls'})"}))
        .send()
        .await
        .expect("execute over HTTPS");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["mutatedDocumentIds"],
        json!(["tls"])
    );

    let h1 = reqwest::Client::builder()
        .add_root_certificate(root)
        .http1_only()
        .build()
        .expect("client");
    let r = h1
        .get(format!("{}/readyz", app.app.url()))
        .send()
        .await
        .expect("https request");
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );

    // Plain HTTP on the TLS port gets no answer; a client that does not trust the certificate
    // is refused.
    let plain = reqwest::get(format!("http://{}/healthz", app.app.local_addr())).await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
    let untrusting = reqwest::get(format!("{}/healthz", app.app.url())).await;
    assert!(
        untrusting.is_err(),
        "an untrusted certificate must not be accepted"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_bad_certificate_stops_start_up_with_a_precise_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _key, _) = certificate(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").expect("write");
    let db = TestDb::create().await;
    let mut config = integration_tests::test_config(&db);
    config.tls_cert = Some(cert);
    config.tls_key = Some(garbage);
    let Err(err) = bigpeer::spawn_app(config).await else {
        panic!("a server started with a garbage key");
    };
    assert_eq!(err.code(), "tls/invalid");
    assert!(err.to_string().contains("garbage.pem"), "{err}");
}

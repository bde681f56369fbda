//! The TLS front door: certificate reloads without restart.

use crate::common::*;

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_to_the_next_handshake() {
    let up = Upstream::start().await;
    let dir = TempDir::new();
    let first = make_cert();
    let (c, k) = write_cert(dir.path(), &first);
    let text = base_config(&up.url(), &c, &k, "");
    let ab = Authback::start_text(dir, first.der.clone(), &text, false).await;
    let served = |tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
    };
    assert_eq!(
        served(&ab.tls(&[b"http/1.1"]).await),
        Some(first.der.clone())
    );

    // A broken pair is refused and the last good certificate stays.
    std::fs::write(
        &k,
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    eventually!(
        ab.metrics()
            .await
            .contains("authback_tls_reloads_total{listener=\"public\",outcome=\"error\"}"),
        "the broken pair's reload refused"
    );
    assert_eq!(
        served(&ab.tls(&[b"http/1.1"]).await),
        Some(first.der.clone())
    );

    // Kubernetes-style swap: new files written beside, then renamed over.
    let second = make_cert();
    let (c_new, k_new) = (c.with_extension("crt.new"), k.with_extension("key.new"));
    std::fs::write(&c_new, &second.cert_pem).expect("write");
    std::fs::write(&k_new, &second.key_pem).expect("write");
    std::fs::rename(&k_new, &k).expect("rename");
    std::fs::rename(&c_new, &c).expect("rename");
    let mut got = None;
    eventually!(
        match tls_connect(ab.public, &second.der, &[b"http/1.1"]).await {
            Ok(tls) => {
                got = served(&tls);
                true
            }
            Err(_) => false,
        },
        "a handshake trusting only the new certificate"
    );
    assert_eq!(
        got,
        Some(second.der.clone()),
        "the new certificate is served without a restart"
    );
    let m = ab.metrics().await;
    assert_eq!(
        metric(
            &m,
            "authback_tls_reloads_total{listener=\"public\",outcome=\"ok\"}"
        ),
        Some(1.0)
    );
}

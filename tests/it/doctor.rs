//! `authback doctor`, the real binary, against real servers on 127.0.0.1:
//! authback itself, a WAF that blocks POSTs, the upstream, and Klarna.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::common::*;

/// Runs `authback doctor` on `config`; returns its exit code and stdout.
async fn doctor(config: &Path, ca_file: Option<&Path>) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_authback"));
    cmd.arg("doctor").arg("--config").arg(config);
    if let Some(ca) = ca_file {
        cmd.arg("--ca-file").arg(ca);
    }
    // Blocking, so off the runtime: the servers it talks to run on it.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run doctor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code(), stdout)
}

/// The checklist line of check `name`, and the line after it.
fn line<'a>(out: &'a str, name: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{out}"));
    (lines[at], lines.get(at + 1).copied().unwrap_or(""))
}

fn assert_no_secret(out: &str, tokens: &[String]) {
    for s in [SECRET, OLD_SECRET, SIGNING_SECRET, KLARNA_PASSWORD] {
        assert!(!out.contains(s), "a secret in the output:\n{out}");
    }
    for t in tokens {
        assert!(
            !out.contains(t.as_str()),
            "a URL token in the output:\n{out}"
        );
    }
}

/// A TLS server for `localhost` answering every request with `status` and
/// `text` followed by the request target it got (as a WAF's page echoes
/// the URL it refused), and `date` as its `Date` header when given (else
/// hyper's, the true time). Records the targets.
struct Fixed {
    port: u16,
    ca: PathBuf,
    targets: Arc<Mutex<Vec<String>>>,
}

impl Fixed {
    async fn start(dir: &Path, status: u16, text: &'static str) -> Self {
        Self::start_dated(dir, status, text, None).await
    }

    async fn start_dated(
        dir: &Path,
        status: u16,
        text: &'static str,
        date: Option<&'static str>,
    ) -> Self {
        let cert = make_cert();
        let acceptor = tls_acceptor(&cert);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ca = dir.join(format!("fixed-{port}.pem"));
        std::fs::write(&ca, &cert.cert_pem).expect("write ca");
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = targets.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let target = req.uri().to_string();
                        seen.lock().expect("lock").push(target.clone());
                        let mut resp = Response::builder().status(status);
                        if let Some(d) = date {
                            resp = resp.header("date", d);
                        }
                        let resp = resp
                            .header("content-type", "text/html")
                            .body(Full::new(Bytes::from(format!("{text}: POST {target}"))));
                        async move { resp }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Fixed { port, ca, targets }
    }

    /// A `[klarna]` section with this server as Klarna's API.
    fn klarna_section(&self) -> String {
        format!(
            "[klarna]\napi_url = \"https://localhost:{}\"\nusername = \"K123_test\"\npassword = \"{KLARNA_PASSWORD}\"\nca_file = \"{}\"\n",
            self.port,
            self.ca.display()
        )
    }

    /// The `token` of every URL it was sent.
    fn tokens(&self) -> Vec<String> {
        let targets = self.targets.lock().expect("lock");
        targets
            .iter()
            .filter_map(|t| t.split("token=").nth(1).map(String::from))
            .collect()
    }
}

/// authback running in process, and a config file for the doctor that is
/// the same config as it would be deployed: `public_url` on authback's
/// port, the same route secrets and certificate files.
struct Deployment {
    upstream: Upstream,
    ab: Authback,
    dir: TempDir,
}

impl Deployment {
    async fn start() -> Self {
        let upstream = Upstream::start().await;
        let ab = Authback::start(&upstream).await;
        Deployment {
            upstream,
            ab,
            dir: TempDir::new(),
        }
    }

    /// authback's own certificate, which is self-signed: the doctor's CA.
    fn ca(&self) -> PathBuf {
        self.ab.dir.path().join("tls.crt")
    }

    /// Writes the doctor's config: the base config with `extra` appended,
    /// `public_url` at `public_port` and the upstream at `upstream_url`.
    fn config(&self, public_port: u16, upstream_url: &str, extra: &str) -> PathBuf {
        let text = base_config(
            upstream_url,
            &self.ca(),
            &self.ab.dir.path().join("tls.key"),
            extra,
        )
        .replace(
            "public_url = \"https://localhost\"",
            &format!("public_url = \"https://localhost:{public_port}\""),
        );
        let path = self.dir.path().join("doctor.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }
}

#[tokio::test]
async fn a_probe_through_public_url_reaches_the_running_authback_and_is_never_forwarded() {
    let d = Deployment::start().await;
    let klarna = KlarnaApi::start().await;
    let klarna_section = klarna.config(d.dir.path(), "[\"1s\"]");
    let config = d.config(d.ab.public.port(), &d.upstream.url(), &klarna_section);

    let (code, out) = doctor(&config, Some(&d.ca())).await;

    assert_eq!(code, Some(0), "{out}");
    for name in [
        "config",
        "public_url",
        "probe",
        "upstream",
        "klarna",
        "clock",
    ] {
        let (l, _) = line(&out, name);
        assert!(l.starts_with("ok "), "{name} is not ok:\n{out}");
    }
    assert!(!out.contains("FAIL") && !out.contains("fix:"), "{out}");
    let (probe, _) = line(&out, "probe");
    assert!(
        probe.contains("/klarna/authorization/doctor-probe")
            && probe.contains("reached an authback with this route's secret"),
        "{probe}"
    );
    // It reached this very process, which refused the body as meant.
    assert_eq!(
        callbacks(&d.ab.metrics().await, "bad_request"),
        Some(1.0),
        "{out}"
    );
    // Nothing was recorded, so nothing is delivered: the upstream sees only
    // the doctor's own `GET /`.
    let (status, listed) = d.ab.admin_request("GET", "/v1/deliveries", "", None).await;
    assert_eq!((status, listed.as_str()), (200, "[]"), "nothing recorded");
    let seen = d.upstream.recorded();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("GET", "/")
    );
    assert!(seen[0]
        .header("user-agent")
        .is_some_and(|u| u.starts_with("authback-doctor/")));
    // Klarna was asked about one made-up session, with the credentials.
    let asked = klarna.seen();
    let read: Vec<_> = asked
        .iter()
        .filter(|(p, _, _)| p.starts_with("/payments/v1/sessions/authback-doctor-"))
        .collect();
    assert_eq!(read.len(), 1, "{out}");
    assert!(read[0]
        .1
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic ")));
    assert_no_secret(&out, &[]);
    assert!(!out.contains("token="), "{out}");
    d.ab.stop().await.expect("stop");
}

#[tokio::test]
async fn a_waf_that_blocks_the_probe_fails_with_its_answer_and_the_fix() {
    let d = Deployment::start().await;
    let waf = Fixed::start(d.dir.path(), 403, "blocked by WAF").await;
    let config = d.config(waf.port, &d.upstream.url(), "");

    let (code, out) = doctor(&config, Some(&waf.ca)).await;

    assert_eq!(code, Some(1), "{out}");
    let (probe, fix) = line(&out, "probe");
    assert!(probe.starts_with("FAIL "), "{out}");
    assert!(
        probe.contains("403 Forbidden")
            && probe.contains("not authback")
            && probe.contains("blocked by WAF"),
        "{probe}"
    );
    assert!(
        fix.trim_start().starts_with(
            "fix: allow POST to /klarna/authorization/doctor-probe through your WAF/CDN/ingress"
        ) && fix.contains("docs/operations.md"),
        "{fix}"
    );
    // The WAF echoed the URL, token and all; the doctor shows neither.
    let tokens = waf.tokens();
    assert_eq!(tokens.len(), 1, "the probe reached the WAF once");
    assert_no_secret(&out, &tokens);
    for name in ["config", "public_url", "upstream"] {
        assert!(line(&out, name).0.starts_with("ok "), "{out}");
    }
    for name in ["klarna", "clock"] {
        assert!(line(&out, name).0.starts_with("skip "), "{out}");
    }
    // authback never saw it.
    assert_eq!(callbacks(&d.ab.metrics().await, "bad_request"), Some(0.0));
    d.ab.stop().await.expect("stop");
}

#[tokio::test]
async fn an_authback_with_other_secrets_fails_the_probe() {
    let d = Deployment::start().await;
    let config = d.config(d.ab.public.port(), &d.upstream.url(), "");
    let text = std::fs::read_to_string(&config).expect("read");
    let other = "another-deployments-secret-0123456789";
    std::fs::write(
        &config,
        text.replace(
            &format!("secrets = [\"{SECRET}\", \"{OLD_SECRET}\"]"),
            &format!("secrets = [\"{other}\"]"),
        ),
    )
    .expect("write");

    let (code, out) = doctor(&config, Some(&d.ca())).await;

    assert_eq!(code, Some(1), "{out}");
    let (l, fix) = line(&out, "probe");
    assert!(
        l.starts_with("FAIL ") && l.contains("401 invalid_token"),
        "{out}"
    );
    assert!(fix.contains("routes[0].secrets"), "{fix}");
    assert!(!out.contains(other), "{out}");
    assert_eq!(callbacks(&d.ab.metrics().await, "invalid_token"), Some(1.0));
    d.ab.stop().await.expect("stop");
}

#[tokio::test]
async fn klarna_refusing_the_credentials_fails_the_klarna_check() {
    let d = Deployment::start().await;
    let klarna = Fixed::start(d.dir.path(), 401, "unauthorized").await;
    let klarna_section = klarna.klarna_section();
    let config = d.config(d.ab.public.port(), &d.upstream.url(), &klarna_section);

    let (code, out) = doctor(&config, Some(&d.ca())).await;

    assert_eq!(code, Some(1), "{out}");
    let (l, fix) = line(&out, "klarna");
    assert!(l.starts_with("FAIL ") && l.contains("401"), "{out}");
    assert!(
        fix.contains("klarna.username") && fix.contains("klarna.password"),
        "{fix}"
    );
    assert!(
        !fix.contains("firewall"),
        "wrong credentials are not the network: {fix}"
    );
    // Its Date header still tells the clock; everything else is fine.
    for name in ["config", "public_url", "probe", "upstream", "clock"] {
        assert!(line(&out, name).0.starts_with("ok "), "{out}");
    }
    assert_no_secret(&out, &[]);
    d.ab.stop().await.expect("stop");
}

#[tokio::test]
async fn klarna_unreachable_fails_the_klarna_check_with_a_network_fix() {
    let d = Deployment::start().await;
    // Nothing listens there: the connection is refused, as by a firewall
    // that rejects, or a host that is gone.
    let klarna_section = format!(
        "[klarna]\napi_url = \"https://localhost:{}\"\nusername = \"K123_test\"\npassword = \"{KLARNA_PASSWORD}\"\n",
        free_port()
    );
    let config = d.config(d.ab.public.port(), &d.upstream.url(), &klarna_section);

    let (code, out) = doctor(&config, Some(&d.ca())).await;

    assert_eq!(code, Some(1), "{out}");
    let (l, fix) = line(&out, "klarna");
    assert!(l.starts_with("FAIL ") && l.contains("unreachable"), "{out}");
    assert!(
        fix.contains("the network, not the credentials") && fix.contains("firewall"),
        "{fix}"
    );
    assert!(!fix.contains("klarna.password"), "{fix}");
    for name in ["config", "public_url", "probe", "upstream"] {
        assert!(line(&out, name).0.starts_with("ok "), "{out}");
    }
    assert_no_secret(&out, &[]);
    d.ab.stop().await.expect("stop");
}

#[tokio::test]
async fn a_clock_far_from_klarnas_date_fails_the_clock_check() {
    let d = Deployment::start().await;
    let klarna = Fixed::start_dated(
        d.dir.path(),
        404,
        "not found",
        Some("Sun, 06 Nov 1994 08:49:37 GMT"),
    )
    .await;
    let klarna_section = klarna.klarna_section();
    let config = d.config(d.ab.public.port(), &d.upstream.url(), &klarna_section);

    let (code, out) = doctor(&config, Some(&d.ca())).await;

    assert_eq!(code, Some(1), "{out}");
    let (l, fix) = line(&out, "clock");
    assert!(
        l.starts_with("FAIL ") && l.contains("ahead of Klarna's"),
        "{out}"
    );
    assert!(fix.contains("NTP"), "{fix}");
    assert!(line(&out, "klarna").0.starts_with("ok "), "{out}");
    d.ab.stop().await.expect("stop");
}

#[tokio::test]
async fn an_upstream_nobody_listens_on_fails_the_upstream_check() {
    let d = Deployment::start().await;
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let config = d.config(d.ab.public.port(), &nobody, "");

    let (code, out) = doctor(&config, Some(&d.ca())).await;

    assert_eq!(code, Some(1), "{out}");
    let (l, fix) = line(&out, "upstream");
    assert!(
        l.starts_with("FAIL ") && l.contains(&nobody) && l.contains("cannot connect"),
        "{out}"
    );
    assert!(fix.contains("fix: start the backend"), "{fix}");
    assert!(line(&out, "probe").0.starts_with("ok "), "{out}");
    d.ab.stop().await.expect("stop");
}

#[tokio::test]
async fn an_invalid_config_is_listed_and_nothing_else_is_checked() {
    let dir = TempDir::new();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[server]\npublic_url = \"https://localhost\"\n[upstream]\nurl = \"ftp://x\"\n",
    )
    .expect("write");

    let (code, out) = doctor(&path, None).await;

    assert_eq!(code, Some(1), "{out}");
    let (l, _) = line(&out, "config");
    assert!(l.starts_with("FAIL ") && l.contains("broken.toml"), "{out}");
    assert!(
        out.contains("upstream.url") && out.contains("fix: "),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| !l.starts_with(' ')).count(),
        2,
        "{out}"
    );
}

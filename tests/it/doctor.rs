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

// ---------------------------------------------------------------------------
// Probes with a nonce: authback as its own process, on the very config file
// the doctor reads, as where it is deployed.

const ADMIN_TOKEN: &str = "doctor-admin-token-0123456789abcdef";

/// `authback run` on a config file, killed when stopped or dropped.
struct Running {
    child: Option<std::process::Child>,
}

impl Running {
    async fn start(config: &Path, ca: &Path, public: u16, env: &[(&str, &str)]) -> Self {
        let log = config.with_extension("log");
        let child = spawn_binary(config, &log, env);
        let pem = std::fs::read(ca).expect("read ca");
        let der = pem_der(&pem);
        let addr = format!("127.0.0.1:{public}").parse().expect("addr");
        wait_tls(addr, &der).await;
        Running { child: Some(child) }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The DER of the one certificate in `pem`.
fn pem_der(pem: &[u8]) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem).expect("a PEM certificate")
}

/// Runs `authback doctor` on `config` with `env` set.
async fn doctor_env(config: &Path, ca_file: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_authback"));
    cmd.arg("doctor")
        .arg("--config")
        .arg(config)
        .arg("--ca-file")
        .arg(ca_file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run doctor");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Every `probe` line of the checklist.
fn probes(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("probe"))
        .collect()
}

/// The base config as deployed on `public` and `admin`, `public_url`
/// included, its certificate in `dir` (self-signed: also the CA).
fn deployed(
    dir: &Path,
    upstream: &str,
    extra: &str,
    public: u16,
    admin: u16,
) -> (PathBuf, PathBuf) {
    let (c, k) = write_cert(dir, &make_cert());
    let text = on_ports(&base_config(upstream, &c, &k, extra), public, admin).replace(
        "public_url = \"https://localhost\"",
        &format!("public_url = \"https://localhost:{public}\""),
    );
    let path = dir.join("c.toml");
    std::fs::write(&path, text).expect("write config");
    (path, c)
}

/// An unverified route only 192.0.2.0/24 may call: never the doctor.
const FENCED: &str = r#"
[[routes]]
name = "fenced"
kind = "klarna_authorization"
path = "/shop/klarna/callback"
aliases = ["/index.php/shop/klarna/callback"]
forward_format = "original"
unverified = true
allow_ips = ["192.0.2.0/24"]
"#;

const RECIPES: [&str; 4] = [
    "examples/platforms/woocommerce.toml",
    "examples/platforms/magento2.toml",
    "examples/platforms/sap-commerce.toml",
    "examples/platforms/saleor.toml",
];

/// A platform recipe as deployed here: on loopback ports, with a test
/// certificate, a store in `dir`, `upstream` as the shop and `klarna` as
/// Klarna's API. Everything else is the recipe's own: its routes, with
/// `allow_ips = ["klarna-production"]`, and its secrets from the
/// environment.
fn recipe(rel: &str, dir: &Path, ports: (u16, u16), upstream: &str, klarna: &KlarnaApi) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    let (c, k) = write_cert(dir, &make_cert());
    let klarna_ca = dir.join("klarna-ca.pem");
    std::fs::write(&klarna_ca, &klarna.ca_pem).expect("write ca");
    let (public, admin) = ports;
    text.lines()
        .map(|l| {
            let set = |v: String| format!("{} = {v}", l.split(" = ").next().unwrap_or(""));
            match l.split(" = ").next().unwrap_or("") {
                "listen" if l.contains(":443") => set(format!("\"127.0.0.1:{public}\"")),
                "listen" if l.contains(":9901") => set(format!("\"127.0.0.1:{admin}\"")),
                "public_url" => set(format!("\"https://localhost:{public}\"")),
                "cert" => set(format!("\"{}\"", c.display())),
                "key" => set(format!("\"{}\"", k.display())),
                "path" if l.contains("/var/lib/authback") => {
                    set(format!("\"{}\"", dir.join("authback.db").display()))
                }
                "url" if l.contains("http://127.0.0.1:") => set(format!("\"{upstream}\"")),
                "api_url" => format!(
                    "api_url = \"https://localhost:{}\"\nca_file = \"{}\"",
                    klarna.addr.port(),
                    klarna_ca.display()
                ),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many paths the recipe's routes have, aliases included.
fn paths_of(text: &str) -> usize {
    let v: toml::Value = toml::from_str(text).expect("TOML");
    v["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            1 + r
                .get("aliases")
                .and_then(|a| a.as_array())
                .map_or(0, Vec::len)
        })
        .sum()
}

#[tokio::test]
async fn every_platform_recipe_passes_with_authback_up_and_fails_with_it_down() {
    sensitive(ADMIN_TOKEN);
    let env = [
        ("AUTHBACK_ADMIN_TOKEN", ADMIN_TOKEN),
        ("KLARNA_API_USERNAME", "K123456_doctor"),
        ("KLARNA_API_PASSWORD", KLARNA_PASSWORD),
    ];
    for rel in RECIPES {
        let dir = TempDir::new();
        let up = Upstream::start().await;
        let klarna = KlarnaApi::start().await;
        let ports = (free_port(), free_port());
        let text = recipe(rel, dir.path(), ports, &up.url(), &klarna);
        let config = dir.path().join("c.toml");
        std::fs::write(&config, &text).expect("write config");
        let ca = dir.path().join("tls.crt");
        let mut ab = Running::start(&config, &ca, ports.0, &env).await;

        let (code, out) = doctor_env(&config, &ca, &env).await;
        eprintln!("{rel}, authback up:\n{out}");
        assert_eq!(code, Some(0), "{rel}:\n{out}");
        let lines = probes(&out);
        assert_eq!(
            lines.len(),
            paths_of(&text),
            "{rel}: one probe a path:\n{out}"
        );
        for l in &lines {
            assert!(
                l.starts_with("ok ") && l.contains("reached this deployment's authback (replica `"),
                "{rel}: {l}"
            );
        }
        assert!(out.contains(" 0 failed, 0 skipped"), "{rel}:\n{out}");
        // The probes went nowhere: the shop saw the doctor's `GET /` only.
        let seen = up.recorded();
        assert_eq!(
            seen.len(),
            1,
            "{rel}: {:?}",
            seen.iter().map(|r| &r.uri).collect::<Vec<_>>()
        );
        assert_no_secret(&out, &[ADMIN_TOKEN.to_string()]);

        ab.stop();
        let (code, out) = doctor_env(&config, &ca, &env).await;
        eprintln!("{rel}, authback down:\n{out}");
        assert_eq!(code, Some(1), "{rel}:\n{out}");
        let lines = probes(&out);
        assert_eq!(lines.len(), paths_of(&text), "{rel}:\n{out}");
        assert!(
            lines.iter().all(|l| l.starts_with("FAIL ")),
            "{rel}:\n{out}"
        );
        assert!(!out.lines().any(|l| l.starts_with("skip")), "{rel}:\n{out}");
    }
}

#[tokio::test]
async fn a_route_whose_allow_ips_refuse_the_doctor_is_probed_with_a_nonce_instead() {
    let dir = TempDir::new();
    let up = Upstream::start().await;
    let ports = (free_port(), free_port());
    let (config, ca) = deployed(
        dir.path(),
        &up.url(),
        "allow_ips = [\"192.0.2.0/24\"]",
        ports.0,
        ports.1,
    );
    let _ab = Running::start(&config, &ca, ports.0, &[]).await;

    let (code, out) = doctor_env(&config, &ca, &[]).await;

    assert_eq!(code, Some(0), "{out}");
    let (l, _) = line(&out, "probe");
    assert!(
        l.starts_with("ok ")
            && l.contains("/klarna/authorization/doctor-probe reached this deployment's authback")
            && l.contains("route `klarna`")
            && l.contains(
                "the token was not checked: routes[0].allow_ips refuses this machine's address"
            ),
        "{out}"
    );
    assert!(!out.contains("token="), "{out}");
}

#[tokio::test]
async fn a_waf_in_front_of_an_unverified_route_fails_its_nonce_probe() {
    let dir = TempDir::new();
    let up = Upstream::start().await;
    let ports = (free_port(), free_port());
    let (config, ca) = deployed(dir.path(), &up.url(), FENCED, ports.0, ports.1);
    let _ab = Running::start(&config, &ca, ports.0, &[]).await;
    let waf = Fixed::start(dir.path(), 403, "blocked by WAF").await;
    let text = std::fs::read_to_string(&config).expect("read");
    let behind = dir.path().join("behind-waf.toml");
    std::fs::write(
        &behind,
        text.replace(
            &format!("public_url = \"https://localhost:{}\"", ports.0),
            &format!("public_url = \"https://localhost:{}\"", waf.port),
        ),
    )
    .expect("write");

    let (code, out) = doctor_env(&behind, &waf.ca, &[]).await;

    assert_eq!(code, Some(1), "{out}");
    let lines = probes(&out);
    assert_eq!(lines.len(), 3, "klarna, fenced and its alias:\n{out}");
    for l in &lines {
        assert!(
            l.starts_with("FAIL ") && l.contains("not authback") && l.contains("blocked by WAF"),
            "{out}"
        );
    }
    assert!(
        out.contains(
            "fix: allow POST to /index.php/shop/klarna/callback through your WAF/CDN/ingress"
        ),
        "{out}"
    );
    // The WAF got the nonces, which the doctor never shows.
    let seen = waf.targets.lock().expect("lock").len();
    assert_eq!(seen, 3);
}

#[tokio::test]
async fn a_wrong_admin_token_or_another_deployment_fails_the_nonce_probe() {
    sensitive(ADMIN_TOKEN);
    let dir = TempDir::new();
    let up = Upstream::start().await;
    let ports = (free_port(), free_port());
    let (config, ca) = deployed(dir.path(), &up.url(), FENCED, ports.0, ports.1);
    let text = std::fs::read_to_string(&config).expect("read");
    let admin_line = format!("[admin]\nlisten = \"127.0.0.1:{}\"", ports.1);
    std::fs::write(
        &config,
        text.replace(
            &admin_line,
            &format!("{admin_line}\ntoken = \"{ADMIN_TOKEN}\""),
        ),
    )
    .expect("write");
    let _ab = Running::start(&config, &ca, ports.0, &[]).await;

    // The doctor's config holds another admin token.
    let wrong = dir.path().join("wrong-token.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &wrong,
        text.replace(ADMIN_TOKEN, "not-the-admin-token-0123456789"),
    )
    .expect("write");
    let (code, out) = doctor_env(&wrong, &ca, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    let fenced: Vec<&str> = probes(&out)
        .into_iter()
        .filter(|l| l.contains("/shop/"))
        .collect();
    assert_eq!(fenced.len(), 2, "{out}");
    for l in fenced {
        assert!(l.starts_with("FAIL ") && l.contains("401"), "{out}");
    }
    assert!(out.contains("fix: set admin.token"), "{out}");
    assert!(
        !out.contains("not-the-admin-token") && !out.contains(ADMIN_TOKEN),
        "{out}"
    );

    // Another deployment answers public_url: its store never held the
    // nonce, so it gives the route's own answer (allow_ips: 403).
    let other_dir = TempDir::new();
    let other_ports = (free_port(), free_port());
    let (other, other_ca) = deployed(
        other_dir.path(),
        &up.url(),
        FENCED,
        other_ports.0,
        other_ports.1,
    );
    let _other = Running::start(&other, &other_ca, other_ports.0, &[]).await;
    let elsewhere = dir.path().join("elsewhere.toml");
    std::fs::write(
        &elsewhere,
        text.replace(
            &format!("public_url = \"https://localhost:{}\"", ports.0),
            &format!("public_url = \"https://localhost:{}\"", other_ports.0),
        ),
    )
    .expect("write");
    let (code, out) = doctor_env(&elsewhere, &other_ca, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    let fenced: Vec<&str> = probes(&out)
        .into_iter()
        .filter(|l| l.contains("/shop/"))
        .collect();
    for l in &fenced {
        assert!(
            l.starts_with("FAIL ") && l.contains("did not take the probe's nonce (403 forbidden"),
            "{out}"
        );
    }
    assert_eq!(fenced.len(), 2, "{out}");
}

//! The shipped examples stay true: every example config passes
//! `authback check`, and the Kubernetes manifest parses and names the same
//! ports and probe paths as the config it carries.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

use crate::common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `authback check` on `config` with `env`; asserts it passes.
fn check(config: &Path, env: &[(String, String)]) {
    let out = Command::new(env!("CARGO_BIN_EXE_authback"))
        .args(["check", "--config"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} fails check:\n{}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("examples/kubernetes/authback.yaml"))
        .expect("manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML"))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_example_config_passes_check() {
    let secrets: Vec<(String, String)> = [
        "AUTHBACK_SECRET",
        "AUTHBACK_UPSTREAM_SECRET",
        "AUTHBACK_ADMIN_TOKEN",
        "KLARNA_USERNAME",
        "KLARNA_PASSWORD",
    ]
    .iter()
    .map(|k| (k.to_string(), format!("test-value-for-{k}-0123456789")))
    .collect();
    check(&root().join("config.toml"), &[]);
    check(
        &root().join("examples/php-checkout/authback.toml"),
        &secrets,
    );

    // The Kubernetes ConfigMap's config, with its mounted certificate files
    // stood in for by real ones.
    let docs = manifest();
    let cfg = of_kind(&docs, "ConfigMap")["data"]["config.toml"]
        .as_str()
        .expect("config.toml in the ConfigMap");
    let dir = TempDir::new();
    let (c, k) = write_cert(dir.path(), &make_cert());
    let local = cfg
        .replace("/etc/authback/tls/tls.crt", &c.display().to_string())
        .replace("/etc/authback/tls/tls.key", &k.display().to_string());
    let path = dir.path().join("config.toml");
    std::fs::write(&path, local).expect("write");
    // The Secret names exactly the variables the config reads.
    let stringdata = of_kind(&docs, "Secret")["stringData"]
        .as_mapping()
        .expect("stringData");
    let env: Vec<(String, String)> = stringdata
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap_or_default().to_string(),
                v.as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for name in cfg
        .split("\"env:")
        .skip(1)
        .map(|s| s.split('"').next().unwrap_or_default())
    {
        assert!(
            env.iter().any(|(k, _)| k == name),
            "the Secret lacks {name}"
        );
    }
    check(&path, &env);
}

#[test]
fn the_kubernetes_manifest_matches_its_config() {
    let docs = manifest();
    let cfg_text = of_kind(&docs, "ConfigMap")["data"]["config.toml"]
        .as_str()
        .expect("config");
    let cfg: toml::Value = toml::from_str(cfg_text).expect("config TOML");
    let port = |key: &str| -> u64 {
        let addr = cfg[key]["listen"].as_str().expect("listen");
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    };
    let (public, admin) = (port("server"), port("admin"));

    let pod = &of_kind(&docs, "Deployment")["spec"]["template"]["spec"];
    let sidecar = pod["initContainers"]
        .as_sequence()
        .and_then(|s| s.iter().find(|c| c["name"] == "authback"))
        .expect("authback as an init container");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    let ports = sidecar["ports"].as_sequence().expect("ports");
    let named = |name: &str| -> u64 {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no port {name}"))
    };
    assert_eq!(named("https"), public);
    assert_eq!(named("admin"), admin);
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/readyz"),
    ] {
        assert_eq!(sidecar[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(
            sidecar[probe]["httpGet"]["port"], "admin",
            "{probe} on the admin port"
        );
    }
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(sc["capabilities"]["drop"]
        .as_sequence()
        .is_some_and(|d| d.iter().any(|x| x == "ALL")));
    assert!(
        sidecar["resources"]["requests"].is_mapping()
            && sidecar["resources"]["limits"].is_mapping()
    );

    // The certificate Secret is mounted as a directory, so rotations are seen.
    let cert_dir = Path::new(cfg["server"]["tls"]["cert"].as_str().expect("cert"))
        .parent()
        .expect("dir");
    let mounts = sidecar["volumeMounts"].as_sequence().expect("mounts");
    let tls = mounts
        .iter()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(cert_dir))
        .expect("a mount for the certificate folder");
    assert!(
        tls.get("subPath").is_none(),
        "no subPath for the certificate"
    );
    assert_eq!(tls["readOnly"], true);
    // The file store's folder is on the persistent volume.
    let db_dir = Path::new(cfg["store"]["path"].as_str().expect("store path"))
        .parent()
        .expect("dir");
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"].as_str().map(Path::new) == Some(db_dir) && m["name"] == "data"));

    // Klarna's traffic goes to authback's public port.
    let svc = &of_kind(&docs, "Service")["spec"]["ports"][0];
    assert_eq!(svc["targetPort"], "https");
    // The app listens where authback's upstream points.
    let upstream = cfg["upstream"]["url"].as_str().expect("upstream");
    let app = pod["containers"]
        .as_sequence()
        .and_then(|s| s.first())
        .expect("app container");
    let app_port = app["ports"][0]["containerPort"].as_u64().expect("app port");
    assert!(
        upstream.ends_with(&format!(":{app_port}")),
        "{upstream} vs {app_port}"
    );
}

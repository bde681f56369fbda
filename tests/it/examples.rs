//! The shipped examples stay true: every example config passes
//! `authback check`; each Kubernetes manifest parses and names the same
//! ports, probe paths, secrets and volumes as the config it carries; the
//! compose example fits its config, the image and the PHP checkout; and the
//! Dockerfile builds like `cargo build` does.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

use crate::common::*;

const KUBERNETES: [&str; 2] = [
    "examples/kubernetes/file-store.yaml",
    "examples/kubernetes/redis-store.yaml",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML"))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

/// The names of the `"env:NAME"` secrets a config reads.
fn env_names(config: &str) -> Vec<String> {
    config
        .split("\"env:")
        .skip(1)
        .map(|s| s.split('"').next().unwrap_or_default().to_string())
        .collect()
}

/// Stand-in values for secrets: long enough, and a Redis URL where one is
/// expected.
fn stand_ins(names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|k| {
            let v = if k.contains("REDIS_URL") {
                "redis://127.0.0.1:6379/0".to_string()
            } else {
                format!("test-value-for-{k}-0123456789")
            };
            (k.clone(), v)
        })
        .collect()
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

/// `authback check` on a config written for a container, its mounted
/// certificate files stood in for by real ones.
fn check_mounted(what: &str, config: &str, env: &[(String, String)]) {
    let dir = TempDir::new();
    let (c, k) = write_cert(dir.path(), &make_cert());
    let local = config
        .replace("/etc/authback/tls/tls.crt", &c.display().to_string())
        .replace("/etc/authback/tls/tls.key", &k.display().to_string());
    let path = dir.path().join(what.replace('/', "_"));
    std::fs::write(&path, local).expect("write");
    check(&path, env);
}

/// The port of a `host:port` listen address.
fn listen_port(cfg: &toml::Value, table: &str) -> u64 {
    let addr = cfg[table]["listen"].as_str().expect("listen");
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// The folder of a path in the config.
fn folder(path: &str) -> &Path {
    Path::new(path).parent().expect("a folder")
}

/// The ConfigMap's config.toml.
fn kube_config(docs: &[Value]) -> String {
    of_kind(docs, "ConfigMap")["data"]["config.toml"]
        .as_str()
        .expect("config.toml in the ConfigMap")
        .to_string()
}

/// The Secret the manifest's header comment tells to create
/// (`kubectl create secret generic NAME --from-literal=KEY=...`), and its
/// keys.
fn secret_comment(rel: &str) -> (String, Vec<String>) {
    let text = read(rel);
    let comment: String = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let name = comment
        .split("kubectl create secret generic ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("{rel}: no `kubectl create secret generic` comment"))
        .to_string();
    let keys = comment
        .split("--from-literal=")
        .skip(1)
        .map(|s| s.split('=').next().unwrap_or_default().to_string())
        .collect();
    (name, keys)
}

#[test]
fn every_example_config_passes_check() {
    check(&root().join("config.toml"), &[]);
    let php = read("examples/php-checkout/authback.toml");
    check(
        &root().join("examples/php-checkout/authback.toml"),
        &stand_ins(&env_names(&php)),
    );
    let docker = read("examples/docker/config.toml");
    check_mounted(
        "examples/docker/config.toml",
        &docker,
        &stand_ins(&env_names(&docker)),
    );
    // Each Kubernetes config, with the variables of the Secret its manifest
    // tells to create: it must name every one the config reads.
    for rel in KUBERNETES {
        let cfg = kube_config(&yaml_docs(rel));
        let (_, keys) = secret_comment(rel);
        for name in env_names(&cfg) {
            assert!(
                keys.contains(&name),
                "{rel}: the secret to create lacks {name}"
            );
        }
        check_mounted(rel, &cfg, &stand_ins(&keys));
    }
}

/// What both Kubernetes variants must have; returns the manifest and its
/// config for the variant's own checks.
fn check_kubernetes(rel: &str) -> (Vec<Value>, toml::Value) {
    let docs = yaml_docs(rel);
    assert!(
        docs.iter().all(|d| d["kind"] != "Secret"),
        "{rel}: no Secret of placeholders; the header comment tells how to create it"
    );
    let cfg_text = kube_config(&docs);
    let cfg: toml::Value = toml::from_str(&cfg_text).expect("config TOML");
    let (public, admin) = (listen_port(&cfg, "server"), listen_port(&cfg, "admin"));

    let deploy = of_kind(&docs, "Deployment");
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let selects = |selector: &Value| {
        selector
            .as_mapping()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v))
    };
    assert!(
        selects(&deploy["spec"]["selector"]["matchLabels"]),
        "{rel}: Deployment selector"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let sidecar = seq(&pod["initContainers"])
        .iter()
        .find(|c| c["name"] == "authback")
        .expect("authback as an init container");
    assert_eq!(
        sidecar["restartPolicy"], "Always",
        "{rel}: a native sidecar"
    );
    let named = |name: &str| -> u64 {
        seq(&sidecar["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{rel}: no port {name}"))
    };
    assert_eq!(named("https"), public, "{rel}");
    assert_eq!(named("admin"), admin, "{rel}");
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/readyz"),
    ] {
        assert_eq!(sidecar[probe]["httpGet"]["path"], path, "{rel}: {probe}");
        assert_eq!(
            sidecar[probe]["httpGet"]["port"], "admin",
            "{rel}: {probe} on the admin port"
        );
    }
    assert!(
        sidecar["resources"]["requests"].is_mapping()
            && sidecar["resources"]["limits"].is_mapping(),
        "{rel}: authback's resources"
    );

    // Each container has its own securityContext; the pod forces no user on
    // the app.
    assert!(
        pod["securityContext"].get("runAsUser").is_none()
            && pod["securityContext"].get("runAsGroup").is_none(),
        "{rel}: no pod-level user: the app runs as its own"
    );
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsUser"], 65532, "{rel}: the image's user");
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    let drops_all = |sc: &Value| seq(&sc["capabilities"]["drop"]).iter().any(|x| x == "ALL");
    assert!(drops_all(sc), "{rel}: authback drops all capabilities");
    let app = seq(&pod["containers"]).first().expect("app container");
    let asc = &app["securityContext"];
    assert_eq!(
        asc["runAsNonRoot"], true,
        "{rel}: the app's securityContext"
    );
    assert_eq!(asc["allowPrivilegeEscalation"], false, "{rel}");
    assert!(drops_all(asc), "{rel}: the app drops all capabilities");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(app[probe].is_mapping(), "{rel}: the app's {probe}");
    }
    assert!(
        app["resources"]["requests"].is_mapping() && app["resources"]["limits"].is_mapping(),
        "{rel}: the app's resources"
    );

    // The app listens where authback's upstream points: on the pod's loopback.
    let upstream = cfg["upstream"]["url"].as_str().expect("upstream");
    let app_port = app["ports"][0]["containerPort"].as_u64().expect("app port");
    assert_eq!(
        upstream,
        format!("http://127.0.0.1:{app_port}"),
        "{rel}: upstream vs the app's port"
    );

    // The secrets come from the Secret the header comment creates.
    let (secret, keys) = secret_comment(rel);
    assert!(
        seq(&sidecar["envFrom"])
            .iter()
            .any(|e| e["secretRef"]["name"] == secret.as_str()),
        "{rel}: authback's env from the Secret {secret}"
    );
    for e in seq(&app["env"]) {
        let r = &e["valueFrom"]["secretKeyRef"];
        if r.is_mapping() {
            assert_eq!(r["name"], secret.as_str(), "{rel}");
            assert!(
                keys.iter().any(|k| r["key"] == k.as_str()),
                "{rel}: the app reads {:?}, which the secret lacks",
                r["key"]
            );
        }
    }

    // The config file is mounted where authback is told to read it.
    let mounts = seq(&sidecar["volumeMounts"]);
    let args: Vec<&str> = seq(&sidecar["args"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config_path = args
        .iter()
        .skip_while(|a| **a != "--config")
        .nth(1)
        .expect("--config");
    assert!(
        mounts.iter().any(|m| m["mountPath"] == *config_path),
        "{rel}: nothing mounted at {config_path}"
    );
    // The certificate Secret is mounted as a directory, so rotations are seen.
    let cert_dir = folder(cfg["server"]["tls"]["cert"].as_str().expect("cert"));
    let tls = mounts
        .iter()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(cert_dir))
        .expect("a mount for the certificate folder");
    assert!(
        tls.get("subPath").is_none(),
        "{rel}: no subPath for the certificate"
    );
    assert_eq!(tls["readOnly"], true);

    // Klarna reaches authback's public port with its own source address,
    // which is what allow_ips and the per-IP limits look at: nothing in front
    // adds X-Forwarded-For, so no proxy is trusted.
    assert_eq!(
        cfg["server"]["trusted_proxies"].as_array().map(Vec::len),
        Some(0),
        "{rel}: trusted_proxies = []"
    );
    let svc = &of_kind(&docs, "Service")["spec"];
    assert_eq!(svc["type"], "LoadBalancer", "{rel}");
    assert_eq!(
        svc["externalTrafficPolicy"], "Local",
        "{rel}: the client's address kept"
    );
    assert!(selects(&svc["selector"]), "{rel}: Service selector");
    for p in seq(&svc["ports"]) {
        assert_eq!(p["targetPort"], "https", "{rel}: only authback's port");
    }

    // Ingress only to authback's ports; the app's port stays in the pod.
    let np = &of_kind(&docs, "NetworkPolicy")["spec"];
    assert!(selects(&np["podSelector"]["matchLabels"]), "{rel}");
    assert!(
        seq(&np["policyTypes"]).iter().any(|t| t == "Ingress"),
        "{rel}"
    );
    let rules = seq(&np["ingress"]);
    assert!(!rules.is_empty(), "{rel}: the public port is let in");
    let mut public_open = false;
    for rule in rules {
        let ports = seq(&rule["ports"]);
        assert!(
            !ports.is_empty(),
            "{rel}: a rule without ports opens them all"
        );
        for p in ports {
            let port = &p["port"];
            let to = if *port == "https" || port.as_u64() == Some(public) {
                "https"
            } else if *port == "admin" || port.as_u64() == Some(admin) {
                "admin"
            } else {
                panic!("{rel}: the NetworkPolicy opens {port:?}, not authback's")
            };
            if to == "https" && rule.get("from").is_none() {
                public_open = true;
            }
            if to == "admin" {
                assert!(
                    !seq(&rule["from"]).is_empty(),
                    "{rel}: the admin port only from chosen sources"
                );
            }
        }
    }
    assert!(public_open, "{rel}: the public port open to all (Klarna)");
    (docs, cfg)
}

#[test]
fn the_file_store_manifest_runs_one_pod_per_volume() {
    let rel = KUBERNETES[0];
    let (docs, cfg) = check_kubernetes(rel);
    assert_eq!(cfg["store"]["kind"].as_str(), Some("file"));
    let deploy = &of_kind(&docs, "Deployment")["spec"];
    assert_eq!(deploy["replicas"], 1, "one process per file store");
    assert_eq!(deploy["strategy"]["type"], "Recreate");
    let pod = &deploy["template"]["spec"];
    let sidecar = &pod["initContainers"][0];
    // The store's folder is on the claimed volume, writable by authback.
    let db_dir = folder(cfg["store"]["path"].as_str().expect("store path"));
    let mount = seq(&sidecar["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(db_dir))
        .expect("a mount for the store's folder");
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the store's volume");
    let claim = &volume["persistentVolumeClaim"]["claimName"];
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "PersistentVolumeClaim" && d["metadata"]["name"] == *claim),
        "a PersistentVolumeClaim {claim:?}"
    );
    assert_eq!(
        pod["securityContext"]["fsGroup"], sidecar["securityContext"]["runAsGroup"],
        "the volume writable by authback's group"
    );
}

#[test]
fn the_redis_store_manifest_keeps_a_pod_up() {
    let rel = KUBERNETES[1];
    let (docs, cfg) = check_kubernetes(rel);
    let store = &cfg["store"];
    assert_eq!(store["kind"].as_str(), Some("redis"));
    assert!(
        store["sentinels"].as_array().is_some_and(|s| s.len() >= 3),
        "the primary found through the sentinels"
    );
    assert_eq!(store["tls"].as_bool(), Some(true), "TLS to Redis");
    for key in ["password", "sentinel_password"] {
        assert!(
            store[key].as_str().is_some_and(|p| p.starts_with("env:")),
            "{key} from the Secret"
        );
    }
    assert!(
        store["min_replicas_acked"].as_integer() >= Some(1),
        "a replica has each callback before its 204"
    );
    // Egress: Redis and the sentinels, DNS, and 443 anywhere (Klarna).
    let np = &of_kind(&docs, "NetworkPolicy")["spec"];
    assert!(seq(&np["policyTypes"]).iter().any(|t| t == "Egress"));
    let ports: Vec<(u64, bool)> = seq(&np["egress"])
        .iter()
        .flat_map(|rule| {
            let anywhere = rule.get("to").is_none();
            seq(&rule["ports"])
                .iter()
                .filter_map(move |p| p["port"].as_u64().map(|n| (n, anywhere)))
        })
        .collect();
    let mut names: Vec<u64> = ports.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names, [53, 443, 6379, 26379], "egress ports");
    for (port, anywhere) in &ports {
        assert_eq!(
            *anywhere,
            *port == 443,
            "only 443 goes anywhere, not {port}"
        );
    }
    let deploy = &of_kind(&docs, "Deployment")["spec"];
    assert!(deploy["replicas"].as_u64().is_some_and(|n| n >= 2));
    let strategy = &deploy["strategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(strategy["rollingUpdate"]["maxSurge"], 1);
    let pdb = &of_kind(&docs, "PodDisruptionBudget")["spec"];
    assert_eq!(pdb["minAvailable"], 1);
    assert_eq!(
        pdb["selector"]["matchLabels"], deploy["selector"]["matchLabels"],
        "the budget covers the Deployment's pods"
    );
    assert!(
        docs.iter().all(|d| d["kind"] != "PersistentVolumeClaim"),
        "no volume: the state is in Redis"
    );
}

// ---------------------------------------------------------------------------
// The compose example.

/// The variable a compose value such as `${NAME:?message}` takes.
fn compose_var(v: &Value) -> Option<&str> {
    let s = v.as_str()?.strip_prefix("${")?;
    s.split([':', '}', '-', '?']).next()
}

/// The CMD's `--config` path in the Dockerfile.
fn image_config_path() -> String {
    let cmd = dockerfile()
        .into_iter()
        .rfind(|i| instruction(i) == "CMD")
        .expect("CMD");
    let args: Vec<String> = serde_json::from_str(cmd[3..].trim()).expect("CMD in JSON form");
    args.iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("--config in CMD")
        .clone()
}

/// `(source, target, read_only)` of a short-syntax compose volume.
fn mount(v: &Value) -> (String, String, bool) {
    let s = v.as_str().expect("short volume syntax");
    let mut parts = s.split(':');
    let source = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    (source, target, parts.next() == Some("ro"))
}

#[test]
fn the_compose_example_fits_its_config_the_image_and_the_checkout() {
    let dir = "examples/docker";
    let compose: Value = serde_yaml::from_str(&read(&format!("{dir}/compose.yaml"))).expect("YAML");
    let cfg_text = read(&format!("{dir}/config.toml"));
    let cfg: toml::Value = toml::from_str(&cfg_text).expect("config TOML");
    let authback = &compose["services"]["authback"];
    let app = &compose["services"]["app"];

    // authback is this repository's image.
    let context = root()
        .join(dir)
        .join(authback["build"].as_str().expect("build: <context>"));
    assert_eq!(
        context.canonicalize().expect("build context"),
        root().canonicalize().expect("root"),
        "authback is built from the repository's Dockerfile"
    );

    // Its mounts: the config where the image reads it, the certificate
    // folder, and a named volume for the store, which the image has created
    // for its user so that a new volume is writable.
    let mounts: Vec<_> = seq(&authback["volumes"]).iter().map(mount).collect();
    let at = |target: &Path| {
        mounts
            .iter()
            .find(|(_, t, _)| Path::new(t) == target)
            .unwrap_or_else(|| panic!("nothing mounted at {}", target.display()))
    };
    let (src, _, ro) = at(Path::new(&image_config_path()));
    assert_eq!((src.as_str(), *ro), ("./config.toml", true));
    let (_, _, ro) = at(folder(cfg["server"]["tls"]["cert"].as_str().expect("cert")));
    assert!(*ro, "the certificate read-only");
    let db_dir = folder(cfg["store"]["path"].as_str().expect("store path"));
    let (volume, _, _) = at(db_dir);
    assert!(
        compose["volumes"].get(volume.as_str()).is_some(),
        "the store on a named volume, not {volume}"
    );
    let ins = dockerfile();
    let runtime = ins
        .iter()
        .rposition(|i| instruction(i) == "FROM")
        .expect("FROM");
    assert!(
        ins[runtime..].iter().any(|i| instruction(i) == "COPY"
            && i.contains("--chown=65532:65532")
            && i.trim_end().ends_with(&format!(" {}", db_dir.display()))),
        "the image creates {} for user 65532",
        db_dir.display()
    );
    assert!(ins[runtime..].iter().any(|i| i == "USER 65532:65532"));

    // Published: the public port to all, the admin port on loopback only.
    let (public, admin) = (listen_port(&cfg, "server"), listen_port(&cfg, "admin"));
    let ports: Vec<&str> = seq(&authback["ports"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ports.contains(&format!("{public}:{public}").as_str()));
    assert!(ports.contains(&format!("127.0.0.1:{admin}:{admin}").as_str()));
    assert!(app.get("ports").is_none(), "only authback reaches the app");

    // Secrets: each one the config reads comes from .env, which the example
    // ships empty.
    let example = read(&format!("{dir}/.env.example"));
    let listed: Vec<(&str, &str)> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    assert!(
        listed.iter().all(|(_, v)| v.is_empty()),
        "no secret in .env.example"
    );
    for name in env_names(&cfg_text) {
        assert_eq!(
            compose_var(&authback["environment"][name.as_str()]),
            Some(name.as_str()),
            "authback's {name}"
        );
    }
    for service in [authback, app] {
        for (k, v) in service["environment"].as_mapping().expect("environment") {
            if let Some(var) = compose_var(v) {
                assert!(
                    listed.iter().any(|(n, _)| *n == var),
                    ".env.example lacks {var} ({k:?})"
                );
            }
        }
    }

    // The app: the PHP checkout on the address authback's upstream names,
    // with every variable the checkout reads.
    let upstream = cfg["upstream"]["url"].as_str().expect("upstream");
    let command: Vec<&str> = seq(&app["command"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let listen = command
        .iter()
        .skip_while(|a| **a != "-S")
        .nth(1)
        .expect("php -S <addr>");
    let port = listen.rsplit(':').next().expect("port");
    assert_eq!(upstream, format!("http://app:{port}"));
    assert!(command.contains(&"router.php"));
    let code = ["lib.php", "router.php"]
        .map(|f| read(&format!("examples/php-checkout/{f}")))
        .concat();
    for name in code
        .split("env_or_die('")
        .skip(1)
        .map(|s| s.split('\'').next().unwrap_or_default())
        .filter(|n| !n.is_empty() && *n != "string")
    {
        assert!(
            app["environment"].get(name).is_some(),
            "the checkout reads {name}"
        );
    }
    assert_eq!(
        app["environment"]["PUBLIC_URL"].as_str(),
        cfg["server"]["public_url"].as_str(),
        "the checkout mints URLs on authback's public_url"
    );
    let app_mounts: Vec<_> = seq(&app["volumes"]).iter().map(mount).collect();
    assert!(app_mounts
        .iter()
        .any(|(s, t, ro)| s == "../php-checkout" && app["working_dir"] == t.as_str() && *ro));
    let db = app["environment"]["CHECKOUT_DB"]
        .as_str()
        .expect("CHECKOUT_DB");
    assert!(
        app_mounts
            .iter()
            .any(|(s, t, _)| Path::new(t) == folder(db)
                && compose["volumes"].get(s.as_str()).is_some()),
        "the checkout's database on a volume"
    );

    // The local secrets never enter the build context.
    let ignore = read(".dockerignore");
    let ignored = |p: &str| ignore.lines().any(|l| l.trim() == p);
    assert!(ignored("**/.env") || ignored(&format!("{dir}/.env")));
    assert!(ignored(&format!("{dir}/tls")));
}

// ---------------------------------------------------------------------------
// The Dockerfile: the image is built like `cargo build` builds.

/// The Dockerfile's instructions, one string each: continuation lines
/// joined, comments dropped.
fn dockerfile() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn instruction(i: &str) -> String {
    i.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

#[test]
fn the_dockerfile_builds_with_the_cargo_config() {
    let cargo: toml::Value = toml::from_str(
        &std::fs::read_to_string(root().join(".cargo/config.toml")).expect(".cargo/config.toml"),
    )
    .expect("cargo config TOML");
    let flags = match &cargo["env"]["LIBSQLITE3_FLAGS"] {
        toml::Value::String(s) => s.clone(),
        v => v["value"].as_str().expect("LIBSQLITE3_FLAGS").to_string(),
    };

    let ins = dockerfile();
    let builds: Vec<usize> = (0..ins.len())
        .filter(|&i| instruction(&ins[i]) == "RUN" && ins[i].contains("cargo build"))
        .collect();
    assert!(!builds.is_empty(), "no cargo build in the Dockerfile");
    for &i in &builds {
        assert!(ins[i].contains("--locked"), "not --locked: {}", ins[i]);
    }
    // Before the first build, in its stage: the cargo config copied to where
    // cargo looks for it (the working folder's .cargo/), or the same flags.
    let first = builds[0];
    let stage = (0..first)
        .rev()
        .find(|&i| instruction(&ins[i]) == "FROM")
        .expect("a FROM before the build");
    let mut workdir = PathBuf::from("/");
    let mut configured = false;
    for i in &ins[stage..first] {
        let words: Vec<&str> = i.split_whitespace().collect();
        match instruction(i).as_str() {
            "WORKDIR" => workdir = workdir.join(words[1]),
            "COPY" => {
                let args: Vec<&str> = words[1..]
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (dest, srcs) = args.split_last().expect("COPY args");
                let dest = workdir.join(dest);
                configured |= srcs.iter().any(|s| {
                    let s = s.trim_end_matches('/');
                    (s == ".cargo/config.toml"
                        && (dest == workdir.join(".cargo/config.toml")
                            || (dest == workdir.join(".cargo") && dest_is_dir(i))))
                        || (s == ".cargo" && dest == workdir.join(".cargo"))
                });
            }
            "ENV" => {
                configured |= i.contains(&format!("LIBSQLITE3_FLAGS=\"{flags}\""))
                    || i.contains(&format!("LIBSQLITE3_FLAGS={flags}"));
            }
            _ => {}
        }
    }
    assert!(
        configured,
        "the Dockerfile's first `cargo build` runs without .cargo/config.toml \
         (LIBSQLITE3_FLAGS = {flags:?}): COPY it into the build stage first"
    );

    // The build context carries the cargo config.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap_or_default();
    for p in ignore.lines().map(str::trim) {
        let p = p.trim_start_matches('/').trim_end_matches('/');
        assert!(
            !matches!(p, ".cargo" | ".cargo/config.toml" | ".*" | "*" | "**"),
            ".dockerignore drops .cargo/config.toml ({p})"
        );
    }
}

/// `COPY a b/`: the destination is a folder.
fn dest_is_dir(copy: &str) -> bool {
    copy.trim_end().ends_with('/')
}

#[test]
fn every_base_image_is_pinned_through_an_arg() {
    let ins = dockerfile();
    let first_from = ins
        .iter()
        .position(|i| instruction(i) == "FROM")
        .expect("FROM");
    // Global ARGs (before the first FROM) with their defaults.
    let args: Vec<(String, String)> = ins[..first_from]
        .iter()
        .filter(|i| instruction(i) == "ARG")
        .filter_map(|i| {
            let (k, v) = i.split_whitespace().nth(1)?.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect();
    let pin = std::fs::read_to_string(root().join("scripts/pin-images.sh"))
        .expect("scripts/pin-images.sh, which resolves the image tags to digests");
    let mut seen = 0;
    for from in ins.iter().filter(|i| instruction(i) == "FROM") {
        let image = from.split_whitespace().nth(1).expect("FROM image");
        if ins
            .iter()
            .any(|i| instruction(i) == "FROM" && i.split_whitespace().nth(3) == Some(image))
        {
            continue; // an earlier stage
        }
        let name = image
            .strip_prefix("${")
            .and_then(|s| s.strip_suffix('}'))
            .or_else(|| image.strip_prefix('$'))
            .unwrap_or_else(|| panic!("FROM {image}: name the image in a global ARG"));
        assert!(
            name.ends_with("_IMAGE"),
            "{name}: pin-images.sh rewrites ARGs named *_IMAGE"
        );
        let (_, default) = args
            .iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no global ARG {name} with a default"));
        let (reference, digest) = match default.split_once("@sha256:") {
            Some((r, d)) => (r, Some(d)),
            None => (default.as_str(), None),
        };
        assert!(
            reference
                .rsplit('/')
                .next()
                .is_some_and(|n| n.contains(':')),
            "{name} = {default}: name a tag, so pin-images.sh can resolve it again"
        );
        if let Some(d) = digest {
            assert!(
                d.len() == 64
                    && d.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{name}: malformed digest {d}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 2, "a build stage and a runtime stage");
    assert!(
        pin.contains("_IMAGE"),
        "pin-images.sh handles the *_IMAGE ARGs"
    );
}

/// Every file a document names exists: relative links, and repository
/// paths in backticks (`tests/it/x.rs`, `examples/...`), with or without a
/// `#anchor` or `:line`.
#[test]
fn every_file_the_documents_name_exists() {
    let mut docs = vec![
        root().join("README.md"),
        root().join("BENCHMARKS.md"),
        root().join("RELIABILITY.md"),
    ];
    for dir in ["docs", "examples", "examples/php-checkout"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("dir") {
            let p = entry.expect("entry").path();
            if p.extension().is_some_and(|e| e == "md") {
                docs.push(p);
            }
        }
    }
    // What a run writes, and git ignores, is named but not shipped.
    let ignored: Vec<String> = std::fs::read_to_string(root().join(".gitignore"))
        .expect(".gitignore")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim_start_matches('/').trim_end_matches('*').to_string())
        .collect();
    let mut missing = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("read doc");
        let base = doc.parent().expect("folder");
        // Relative links: ](path) and ](path#anchor).
        for part in text.split("](").skip(1) {
            let target = part.split([')', '#', ' ']).next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            if !base.join(target).exists() {
                missing.push(format!("{}: link {target}", doc.display()));
            }
        }
        // Repository paths in backticks.
        for part in text.split('`').skip(1).step_by(2) {
            let path = part.split(['#', ':', ' ']).next().unwrap_or_default();
            let repo_path = [
                "src/",
                "tests/",
                "examples/",
                "docs/",
                "benches/",
                "scripts/",
                "fuzz/",
            ]
            .iter()
            .any(|p| path.starts_with(p));
            let file_like = path.rsplit('/').next().is_some_and(|f| f.contains('.'));
            let written = ignored.iter().any(|i| path.starts_with(i.as_str()));
            if repo_path
                && file_like
                && !written
                && !path.contains('*')
                && !path.contains('<')
                && !root().join(path).exists()
            {
                missing.push(format!("{}: `{path}`", doc.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named but not in the repository:\n{}",
        missing.join("\n")
    );
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to dashes,
/// and only letters, digits, `-` and `_` kept.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The alert rules: each has a summary, a description and a runbook_url
/// that points at a section of docs/operations.md that exists, and reads
/// only metrics authback serves. Failures page when they happen, not for as
/// long as they stay listed, and what is left open has its own rule.
#[tokio::test]
async fn every_alert_rule_has_a_description_and_a_runbook_that_exists() {
    let alerts: Value =
        serde_yaml::from_str(&read("examples/prometheus/alerts.yaml")).expect("YAML");
    let headings: Vec<String> = read("docs/operations.md")
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let served = ab.metrics().await;
    let mut exprs = std::collections::HashMap::new();
    for rule in seq(&alerts["groups"]).iter().flat_map(|g| seq(&g["rules"])) {
        let name = rule["alert"].as_str().expect("alert").to_string();
        for key in ["summary", "description", "runbook_url"] {
            let v = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(!v.trim().is_empty(), "{name}: no {key}");
        }
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let section = url
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("{name}: {url} is not a section of docs/operations.md"));
        assert!(
            headings.iter().any(|h| h == section),
            "{name}: docs/operations.md has no section #{section}"
        );
        let expr = rule["expr"].as_str().expect("expr").to_string();
        for metric in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("authback_"))
        {
            assert!(
                served.contains(&format!("\n{metric}")),
                "{name}: authback does not serve {metric}"
            );
        }
        exprs.insert(name, expr);
    }
    let expr = |name: &str| {
        exprs
            .get(name)
            .unwrap_or_else(|| panic!("no rule {name}"))
            .as_str()
    };
    for (new, open, gauge) in [
        (
            "AuthbackDeadDelivery",
            "AuthbackDeadDeliveryUnresolved",
            "authback_oldest_dead_seconds",
        ),
        (
            "AuthbackOrderNotPlaced",
            "AuthbackOrderNotPlacedUnresolved",
            "authback_oldest_unconfirmed_seconds",
        ),
    ] {
        assert!(
            expr(new).contains("increase(") && expr(new).contains("[10m]"),
            "{new} pages on new failures: {}",
            expr(new)
        );
        assert!(expr(open).contains(gauge), "{open}: {}", expr(open));
    }
    for (name, e) in &exprs {
        for count in ["authback_dead_deliveries", "authback_orders_unconfirmed"] {
            assert!(
                !e.contains(count),
                "{name} would page for as long as a failure is listed: {e}"
            );
        }
    }
}

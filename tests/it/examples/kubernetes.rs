//! The Kubernetes shapes in examples/kubernetes/, each a kustomize
//! directory. What every shape promises: its config passes `check
//! --production` and is the file the pods read; a change to it rolls the
//! pods; nothing is mounted with subPath; the images are named in one place,
//! by digest; the probes, the scraping and the NetworkPolicy fit the config.
//! Then what each shape is for. What kustomize makes of them is validated
//! against the API schemas by scripts/validate-kubernetes.sh.

use std::path::Path;

use serde_yaml::Value;

use super::{check_mounted, env_names, folder, read, root, seq, stand_ins, yaml_docs};
use crate::common::*;

mod shapes;

const SIDECAR_REDIS: &str = "examples/kubernetes/sidecar-redis";
const SINGLE_FILE_STORE: &str = "examples/kubernetes/single-file-store";
const BEHIND_INGRESS: &str = "examples/kubernetes/behind-ingress-nginx";
const SHAPES: [&str; 3] = [SIDECAR_REDIS, SINGLE_FILE_STORE, BEHIND_INGRESS];

/// The ConfigMap kustomization.yaml generates from config.toml.
const CONFIG_MAP: &str = "authback-config";

/// Where each shape's Prometheus Operator objects are, outside `resources:`.
const SERVICE_MONITOR: &str = "servicemonitor.yaml";

/// One shape: its kustomization, the resources kustomize reads, and the
/// authback config it turns into the ConfigMap.
struct Shape {
    rel: &'static str,
    kustomization: Value,
    docs: Vec<Value>,
    text: String,
    /// The config as TOML, for the paths the pods must mount.
    raw: toml::Value,
    /// The config as authback's own loader reads it.
    config: authback::Config,
}

/// `text` through `Config::parse`, its secrets and certificate files
/// stood in for.
fn load(rel: &str, text: &str) -> authback::Config {
    let dir = TempDir::new();
    let (c, k) = write_cert(dir.path(), &make_cert());
    let mut local = text
        .replace("/etc/authback/tls/tls.crt", &c.display().to_string())
        .replace("/etc/authback/tls/tls.key", &k.display().to_string());
    for (name, value) in stand_ins(&env_names(text)) {
        local = local.replace(&format!("\"env:{name}\""), &format!("{value:?}"));
    }
    authback::Config::parse(&local, dir.path())
        .unwrap_or_else(|e| panic!("{rel}/config.toml does not load: {e:?}"))
}

fn shape(rel: &'static str) -> Shape {
    let kustomization: Value =
        serde_yaml::from_str(&read(&format!("{rel}/kustomization.yaml"))).expect("YAML");
    let docs = seq(&kustomization["resources"])
        .iter()
        .flat_map(|r| yaml_docs(&format!("{rel}/{}", r.as_str().expect("a file"))))
        .collect();
    let generator = seq(&kustomization["configMapGenerator"])
        .iter()
        .find(|g| g["name"] == CONFIG_MAP)
        .unwrap_or_else(|| panic!("{rel}: no configMapGenerator {CONFIG_MAP}"));
    let files: Vec<&str> = seq(&generator["files"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        files,
        ["config.toml"],
        "{rel}: the ConfigMap holds config.toml"
    );
    let text = read(&format!("{rel}/config.toml"));
    Shape {
        rel,
        kustomization,
        docs,
        raw: toml::from_str(&text).expect("config TOML"),
        config: load(rel, &text),
        text,
    }
}

impl Shape {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        match self.all(kind)[..] {
            [one] => one,
            ref all => panic!("{}: {} of kind {kind}", self.rel, all.len()),
        }
    }

    /// The Deployment or the StatefulSet.
    fn workload(&self) -> &Value {
        let all: Vec<&Value> = self
            .docs
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
            .collect();
        assert_eq!(all.len(), 1, "{}: one workload", self.rel);
        all[0]
    }

    fn pod(&self) -> &Value {
        &self.workload()["spec"]["template"]["spec"]
    }

    fn sidecar(&self) -> &Value {
        seq(&self.pod()["initContainers"])
            .iter()
            .find(|c| c["name"] == "authback")
            .unwrap_or_else(|| panic!("{}: authback as an init container", self.rel))
    }

    fn app(&self) -> &Value {
        seq(&self.pod()["containers"]).first().expect("the app")
    }

    /// Whether `selector` (matchLabels) picks the workload's pods.
    fn selects(&self, selector: &Value) -> bool {
        let labels = &self.workload()["spec"]["template"]["metadata"]["labels"];
        selector
            .as_mapping()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v))
    }

    /// The port authback names `name`, if it has one.
    fn port(&self, name: &str) -> Option<u64> {
        seq(&self.sidecar()["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    }

    /// authback's public ports, by the name the manifests give them.
    fn public_ports(&self) -> Vec<(&'static str, u16)> {
        let s = &self.config.server;
        [
            ("https", s.listen),
            ("http", s.listen_plain),
            ("redirect", s.listen_redirect),
        ]
        .into_iter()
        .filter_map(|(n, a)| a.map(|a| (n, a.port())))
        .collect()
    }

    /// The path of the file the sidecar is told to read.
    fn config_path(&self) -> String {
        let args: Vec<&str> = seq(&self.sidecar()["args"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        args.iter()
            .skip_while(|a| **a != "--config")
            .nth(1)
            .expect("--config")
            .to_string()
    }

    /// The sidecar's mount of the folder `dir`.
    fn mount_of(&self, dir: &Path) -> &Value {
        seq(&self.sidecar()["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
            .unwrap_or_else(|| panic!("{}: nothing mounted at {}", self.rel, dir.display()))
    }
}

/// The Secret the kustomization's header comment tells to create
/// (`kubectl create secret generic NAME --from-literal=KEY=...`), and its
/// keys.
fn secret_comment(rel: &str) -> (String, Vec<String>) {
    let text = read(&format!("{rel}/kustomization.yaml"));
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

/// Every value at a key named `key`, anywhere in `v`.
fn find_key<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Mapping(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x);
                }
                find_key(x, key, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|x| find_key(x, key, out)),
        _ => {}
    }
}

/// The config passes `check --production` with the variables of the Secret
/// the header tells to create, which must hold every one the config reads
/// (those of its commented Sentinel block too); both containers read that
/// Secret, and no Secret of placeholders ships.
fn check_config_and_secrets(s: &Shape) {
    let rel = s.rel;
    let (secret, keys) = secret_comment(rel);
    for name in env_names(&s.text) {
        assert!(
            keys.contains(&name),
            "{rel}: the secret to create lacks {name}"
        );
    }
    check_mounted(rel, &s.text, &stand_ins(&keys), &["--production"]);
    assert!(
        s.all("Secret").is_empty(),
        "{rel}: no Secret of placeholders"
    );
    assert!(
        seq(&s.sidecar()["envFrom"])
            .iter()
            .any(|e| e["secretRef"]["name"] == secret.as_str()),
        "{rel}: authback's env from the Secret {secret}"
    );
    for e in seq(&s.app()["env"]) {
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
}

/// One access log line per public request, on stdout where the runtime
/// collects it; HSTS on the answers of a TLS listener (behind an ingress,
/// the ingress sends it).
fn check_logs(s: &Shape) {
    let log = &s.config.access_log;
    assert!(
        log.enabled && log.to == authback::config::AccessLogTarget::Stdout,
        "{}: the access log on stdout",
        s.rel
    );
    assert_eq!(
        s.config.server.hsts.is_some(),
        s.config.server.listen.is_some(),
        "{}: server.hsts wherever authback serves TLS",
        s.rel
    );
}

/// A native sidecar with the config's ports, probed on the admin port, in
/// front of an app on the pod's loopback; both locked down.
fn check_sidecar(s: &Shape) {
    let rel = s.rel;
    let w = s.workload();
    assert!(s.selects(&w["spec"]["selector"]["matchLabels"]), "{rel}");
    let sidecar = s.sidecar();
    assert_eq!(
        sidecar["restartPolicy"], "Always",
        "{rel}: a native sidecar"
    );
    let admin = s.config.admin.listen.port();
    assert_eq!(s.port("admin"), Some(u64::from(admin)), "{rel}: admin");
    let public = s.public_ports();
    for (name, port) in &public {
        assert_eq!(s.port(name), Some(u64::from(*port)), "{rel}: port {name}");
    }
    assert_eq!(
        seq(&sidecar["ports"]).len(),
        public.len() + 1,
        "{rel}: a container port for each listener, and no other"
    );
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/readyz"),
    ] {
        assert_eq!(sidecar[probe]["httpGet"]["path"], path, "{rel}: {probe}");
        assert_eq!(sidecar[probe]["httpGet"]["port"], "admin", "{rel}: {probe}");
    }
    let pod = s.pod();
    assert!(
        pod["securityContext"].get("runAsUser").is_none(),
        "{rel}: no pod-level user: the app runs as its own"
    );
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsUser"], 65532, "{rel}: the image's user");
    assert_eq!(sc["runAsNonRoot"], true, "{rel}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{rel}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{rel}");
    let drops_all = |sc: &Value| seq(&sc["capabilities"]["drop"]).iter().any(|x| x == "ALL");
    assert!(drops_all(sc), "{rel}: authback drops all capabilities");
    let app = s.app();
    assert_eq!(app["securityContext"]["runAsNonRoot"], true, "{rel}");
    assert!(drops_all(&app["securityContext"]), "{rel}: the app too");
    for c in [sidecar, app] {
        assert!(
            c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping(),
            "{rel}: {:?}'s resources",
            c["name"]
        );
    }
    let upstream = &s.config.upstream.url;
    let app_port = app["ports"][0]["containerPort"].as_u64();
    assert_eq!(
        upstream.host(),
        Some("127.0.0.1"),
        "{rel}: the app in the pod"
    );
    assert_eq!(upstream.port_u16().map(u64::from), app_port, "{rel}");
}

/// The config is the generated ConfigMap's, mounted as a directory; a
/// change to it changes the ConfigMap's name (its hash), so the pods roll.
/// Nothing anywhere is mounted with subPath.
fn check_config_mount(s: &Shape) {
    let rel = s.rel;
    let hashless = |v: &Value| v["disableNameSuffixHash"] == true;
    assert!(
        !hashless(&s.kustomization["generatorOptions"])
            && seq(&s.kustomization["configMapGenerator"])
                .iter()
                .all(|g| !hashless(&g["options"])),
        "{rel}: the ConfigMap's name must carry its hash, or a change rolls nothing"
    );
    assert!(
        s.all("ConfigMap").is_empty(),
        "{rel}: the config's ConfigMap comes from the generator alone"
    );
    let path = s.config_path();
    let path = Path::new(&path);
    assert_eq!(
        path.file_name().and_then(|f| f.to_str()),
        Some("config.toml")
    );
    let mount = s.mount_of(path.parent().expect("a folder"));
    assert_eq!(mount["readOnly"], true, "{rel}");
    let volume = seq(&s.pod()["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the config's volume");
    assert_eq!(
        volume["configMap"]["name"], CONFIG_MAP,
        "{rel}: the generated ConfigMap, by the name kustomize rewrites"
    );
    let mut sub = Vec::new();
    for d in &s.docs {
        find_key(d, "subPath", &mut sub);
    }
    assert!(
        sub.is_empty(),
        "{rel}: a subPath mount never sees an update"
    );
    // The certificate Secret as a directory too, so renewals are reloaded.
    if let Some(cert) = s.raw["server"].get("tls").and_then(|t| t.get("cert")) {
        let dir = folder(cert.as_str().expect("cert"));
        assert_eq!(s.mount_of(dir)["readOnly"], true, "{rel}");
    }
}

/// Every image is a bare name that the kustomization's `images:` pins by
/// digest: the one place an operator sets them.
fn check_images(s: &Shape) -> (String, String) {
    let rel = s.rel;
    let images = seq(&s.kustomization["images"]);
    for i in images {
        let digest = i["digest"].as_str().unwrap_or_default();
        assert!(
            digest.len() == 71
                && digest.starts_with("sha256:")
                && digest[7..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{rel}: {:?} pinned by digest, not {digest:?}",
            i["name"]
        );
        assert!(i.get("newTag").is_none(), "{rel}: a digest, not a tag");
        assert!(i["newName"].is_string(), "{rel}: the registry's name");
    }
    let pod = s.pod();
    for c in seq(&pod["initContainers"])
        .iter()
        .chain(seq(&pod["containers"]))
    {
        assert!(
            images.iter().any(|i| i["name"] == c["image"]),
            "{rel}: {:?}'s image {:?} is not named in images:",
            c["name"],
            c["image"]
        );
    }
    let authback = images
        .iter()
        .find(|i| i["name"] == s.sidecar()["image"])
        .expect("authback's image");
    let field = |k: &str| authback[k].as_str().unwrap_or_default().to_string();
    (field("newName"), field("digest"))
}

/// A preStop `sleep N` of the app, in seconds (0 without one).
fn pre_stop(app: &Value) -> u64 {
    let hook = &app["lifecycle"]["preStop"];
    if let Some(n) = hook["sleep"]["seconds"].as_u64() {
        return n;
    }
    match seq(&hook["exec"]["command"]) {
        [sleep, n] if sleep == "sleep" => n.as_str().and_then(|n| n.parse().ok()).expect("sleep N"),
        [] => 0,
        other => panic!("a preStop of {other:?}"),
    }
}

/// The pod is given the time its shutdown takes: the app's preStop, then
/// authback's drain (`server.shutdown_grace`), and some to spare.
fn check_termination(s: &Shape) {
    let grace = s.pod()["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let needed = pre_stop(s.app()) + s.config.server.shutdown_grace.as_secs() + 5;
    assert!(
        grace >= needed,
        "{}: terminationGracePeriodSeconds {grace} < preStop + shutdown_grace + 5 = {needed}",
        s.rel
    );
}

/// Scraped by annotation, or by the optional ServiceMonitor, always on the
/// admin port's /metrics.
fn check_scraping(s: &Shape) {
    let rel = s.rel;
    let admin = s.config.admin.listen.port().to_string();
    let notes = &s.workload()["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(notes["prometheus.io/scrape"], "true", "{rel}");
    assert_eq!(notes["prometheus.io/port"], admin.as_str(), "{rel}");
    assert_eq!(notes["prometheus.io/path"], "/metrics", "{rel}");
    assert!(
        seq(&s.kustomization["resources"])
            .iter()
            .all(|r| r != SERVICE_MONITOR),
        "{rel}: the ServiceMonitor needs the operator's CRD: not applied with the rest"
    );
    let docs = yaml_docs(&format!("{rel}/{SERVICE_MONITOR}"));
    let monitor = docs
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("its Service");
    assert!(s.selects(&service["spec"]["selector"]), "{rel}");
    assert_ne!(
        service["spec"]["type"], "LoadBalancer",
        "{rel}: never public"
    );
    let ports = seq(&service["spec"]["ports"]);
    assert!(
        ports.len() == 1
            && port_number(rel, "targetPort", &ports[0]["targetPort"])
                == s.config.admin.listen.port(),
        "{rel}: the admin port alone"
    );
    let labels = &service["metadata"]["labels"];
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels");
    assert!(
        !wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v),
        "{rel}: the ServiceMonitor selects its Service"
    );
    for e in seq(&monitor["spec"]["endpoints"]) {
        assert_eq!(e["port"], ports[0]["name"], "{rel}");
        assert_eq!(e["path"], "/metrics", "{rel}");
    }
}

/// The number a Service or a NetworkPolicy gives for one of authback's
/// ports. By number, never by name: a Service finds a native sidecar's
/// named port only in recent Kubernetes releases, and not every network
/// plugin does for a NetworkPolicy.
fn port_number(rel: &str, what: &str, v: &Value) -> u16 {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("{rel}: {what} {v:?}: a sidecar's port by number"))
}

/// Ingress only to authback's ports (the app's stays in the pod), the admin
/// port only from chosen sources; egress only where authback and the app
/// must go, each rule on its ports.
fn check_network_policy(s: &Shape) {
    let rel = s.rel;
    let np = &s.one("NetworkPolicy")["spec"];
    assert!(s.selects(&np["podSelector"]["matchLabels"]), "{rel}");
    let types = seq(&np["policyTypes"]);
    assert!(types.iter().any(|t| t == "Ingress") && types.iter().any(|t| t == "Egress"));
    let public: Vec<u16> = s.public_ports().iter().map(|(_, p)| *p).collect();
    let admin = s.config.admin.listen.port();
    let mut open_to_all = Vec::new();
    for rule in seq(&np["ingress"]) {
        let ports = seq(&rule["ports"]);
        assert!(
            !ports.is_empty(),
            "{rel}: a rule without ports opens them all"
        );
        for p in ports {
            let port = port_number(rel, "NetworkPolicy port", &p["port"]);
            assert!(
                port == admin || public.contains(&port),
                "{rel}: the NetworkPolicy opens {port}, not authback's"
            );
            let from = seq(&rule["from"]);
            if from.is_empty() {
                open_to_all.push(port);
            }
            assert!(
                from.iter().all(|f| f["namespaceSelector"].is_mapping()),
                "{rel}: sources by namespace"
            );
        }
    }
    assert!(
        !open_to_all.contains(&admin),
        "{rel}: admin from monitoring only"
    );
    if s.config.server.listen.is_some() {
        for p in &public {
            assert!(
                open_to_all.contains(p),
                "{rel}: {p} open to Klarna and the shop's visitors"
            );
        }
    }
    let egress = seq(&np["egress"]);
    let on = |port: u64, proto: &str| {
        egress.iter().find(|r| {
            seq(&r["ports"])
                .iter()
                .any(|p| p["port"].as_u64() == Some(port) && p["protocol"] == proto)
        })
    };
    assert!(
        egress.iter().all(|r| !seq(&r["ports"]).is_empty()),
        "{rel}: each egress on its ports"
    );
    assert!(
        on(53, "UDP").is_some() && on(53, "TCP").is_some(),
        "{rel}: DNS"
    );
    let klarna = on(443, "TCP").expect("HTTPS out, for Klarna");
    assert!(
        seq(&klarna["to"])
            .iter()
            .any(|t| t["ipBlock"]["cidr"] == "0.0.0.0/0"),
        "{rel}: Klarna's API has no fixed addresses: 443 to any public one"
    );
    if s.raw["store"]["kind"].as_str() == Some("redis") {
        assert!(on(6379, "TCP").is_some(), "{rel}: Redis");
    }
    // The Services send only to authback's ports, never to the app's.
    for svc in s.all("Service") {
        for p in seq(&svc["spec"]["ports"]) {
            let target = port_number(rel, "targetPort", &p["targetPort"]);
            assert!(public.contains(&target), "{rel}: a Service to {target}");
        }
    }
}

#[test]
fn every_shape_keeps_the_promises_of_all() {
    let mut images = Vec::new();
    for rel in SHAPES {
        let s = shape(rel);
        check_config_and_secrets(&s);
        check_logs(&s);
        check_sidecar(&s);
        check_config_mount(&s);
        check_termination(&s);
        check_scraping(&s);
        check_network_policy(&s);
        images.push(check_images(&s));
    }
    images.dedup();
    assert_eq!(
        images.len(),
        1,
        "one authback image for every shape: {images:?}"
    );
    // Every directory under examples/kubernetes is a shape tested here.
    let dirs = std::fs::read_dir(root().join("examples/kubernetes"))
        .expect("examples/kubernetes")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(dirs, SHAPES.len(), "a shape without its test");
}

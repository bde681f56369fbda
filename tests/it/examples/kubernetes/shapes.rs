//! What each shape is for: the sidecar front door rolls with no gap behind
//! a PROXY-protocol balancer, the file store is one pod that keeps its
//! volume, and behind an ingress authback serves plain HTTP and trusts only
//! the ingress. And the alerts' labels, which both ways of scraping give.

use serde_yaml::Value;

use super::{
    folder, pre_stop, read, seq, shape, Shape, BEHIND_INGRESS, SHAPES, SIDECAR_REDIS,
    SINGLE_FILE_STORE,
};

/// The Deployment, rolled with no gap, and the budget that keeps pods up
/// through drains.
fn check_rolls_without_a_gap(s: &Shape) {
    let rel = s.rel;
    let w = &s.one("Deployment")["spec"];
    let replicas = w["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "{rel}: several replicas");
    assert_eq!(w["strategy"]["type"], "RollingUpdate", "{rel}");
    assert_eq!(w["strategy"]["rollingUpdate"]["maxUnavailable"], 0, "{rel}");
    assert!(w["strategy"]["rollingUpdate"]["maxSurge"].as_u64() >= Some(1));
    let pdb = &s.one("PodDisruptionBudget")["spec"];
    assert!(s.selects(&pdb["selector"]["matchLabels"]), "{rel}");
    let down = match pdb["maxUnavailable"].as_u64() {
        Some(n) => n,
        None => replicas - pdb["minAvailable"].as_u64().expect("a budget"),
    };
    assert!(
        down >= 1 && down < replicas,
        "{rel}: drains go on, a pod stays up"
    );
    assert_eq!(
        s.raw["store"]["kind"].as_str(),
        Some("redis"),
        "{rel}: shared"
    );
    assert_eq!(
        s.raw["store"]["url"].as_str(),
        Some("env:AUTHBACK_REDIS_URL"),
        "{rel}: the URL (and its password) from the Secret"
    );
    assert!(
        s.all("PersistentVolumeClaim").is_empty(),
        "{rel}: no volume: the state is in Redis"
    );
}

#[test]
fn the_sidecar_front_door_rolls_with_no_gap_behind_a_proxy_protocol_balancer() {
    let s = shape(SIDECAR_REDIS);
    check_rolls_without_a_gap(&s);
    let server = &s.config.server;
    let pp = server
        .proxy_protocol
        .as_ref()
        .expect("proxy_protocol = true");
    assert!(
        !pp.from.is_empty()
            && s.raw["server"]["proxy_protocol_from"]
                .as_array()
                .is_some_and(|a| a.iter().all(|n| n.as_str() != Some("0.0.0.0/0"))),
        "believed from the balancer alone"
    );
    assert!(
        server.trusted_proxies.is_empty(),
        "the client comes from the PROXY header"
    );
    assert_eq!(server.listen_redirect.map(|a| a.port()), Some(8080));
    let svc = &s.one("Service")["spec"];
    assert_eq!(svc["type"], "LoadBalancer");
    assert_eq!(svc["externalTrafficPolicy"], "Local", "no SNAT to a node");
    let to = |port: u64| {
        seq(&svc["ports"])
            .iter()
            .find(|p| p["port"].as_u64() == Some(port))
            .and_then(|p| p["targetPort"].as_u64())
    };
    let port = |a: Option<std::net::SocketAddr>| a.map(|a| u64::from(a.port()));
    assert_eq!(to(443), port(server.listen), "port 443 is the TLS listener");
    assert_eq!(
        to(80),
        port(server.listen_redirect),
        "port 80 is the redirect listener"
    );
    // The Sentinel and TLS block is there, marked, with a replica's
    // acknowledgement before each 204.
    assert!(s
        .text
        .contains("# With Redis Sentinel and TLS (recommended"));
    assert!(s.text.contains("# min_replicas_acked = 1"));
    let np = &s.one("NetworkPolicy")["spec"];
    assert!(
        seq(&np["egress"])
            .iter()
            .any(|r| seq(&r["ports"]).iter().any(|p| p["port"] == 26379)),
        "the sentinels"
    );
}

#[test]
fn the_file_store_shape_is_one_pod_that_keeps_its_volume() {
    let s = shape(SINGLE_FILE_STORE);
    assert_eq!(s.raw["store"]["kind"].as_str(), Some("file"));
    assert!(
        s.all("Deployment").is_empty(),
        "a StatefulSet, not a Deployment"
    );
    let set = &s.one("StatefulSet")["spec"];
    assert_eq!(set["replicas"], 1, "one process per file store");
    assert_eq!(set["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(set["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        set["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Retain"
    );
    assert!(
        s.all("PodDisruptionBudget").is_empty(),
        "a budget for one pod would block every node drain"
    );
    // The store's folder is on the claim template's volume, writable by
    // authback's group.
    let db = s.raw["store"]["path"].as_str().expect("store path");
    let mount = s.mount_of(folder(db));
    let claim = seq(&set["volumeClaimTemplates"])
        .iter()
        .find(|c| c["metadata"]["name"] == mount["name"])
        .expect("the store's volume from volumeClaimTemplates");
    assert!(seq(&claim["spec"]["accessModes"])
        .iter()
        .any(|m| m == "ReadWriteOnce"));
    assert_eq!(
        s.pod()["securityContext"]["fsGroup"],
        s.sidecar()["securityContext"]["runAsGroup"],
        "the volume writable by authback's group"
    );
    // No preStop wait: with no other pod to take over, it only lengthens
    // the gap.
    assert_eq!(pre_stop(s.app()), 0);
    let svc = &s.one("Service")["spec"];
    assert_eq!(
        svc["externalTrafficPolicy"], "Local",
        "Klarna's own address"
    );
    assert!(s.config.server.trusted_proxies.is_empty());
}

#[test]
fn behind_an_ingress_authback_serves_plain_http_and_trusts_only_the_ingress() {
    let s = shape(BEHIND_INGRESS);
    check_rolls_without_a_gap(&s);
    let server = &s.config.server;
    assert!(
        server.listen.is_none() && server.tls.is_none(),
        "TLS ends at the ingress"
    );
    assert!(s.raw["server"].get("tls").is_none(), "no [server.tls]");
    let plain = server.listen_plain.expect("listen_plain").port();
    assert!(server.proxy_protocol.is_none() && server.listen_redirect.is_none());
    assert!(
        !server.trusted_proxies.is_empty(),
        "the ingress's X-Forwarded-For"
    );
    for p in seq(&toml_to_yaml(&s.raw["server"]["trusted_proxies"])) {
        let cidr = p.as_str().expect("a CIDR");
        let bits: u8 = cidr
            .rsplit('/')
            .next()
            .and_then(|b| b.parse().ok())
            .unwrap_or(32);
        assert!(
            bits >= 16,
            "{cidr}: the ingress's addresses, not the cluster's"
        );
    }
    // The whole host through authback, as the client sent it.
    let ingress = s.one("Ingress");
    let notes = ingress["metadata"]["annotations"]
        .as_mapping()
        .expect("annotations");
    for (k, _) in notes {
        let k = k.as_str().unwrap_or_default();
        for bad in ["rewrite-target", "app-root", "use-regex", "snippet"] {
            assert!(
                !k.contains(bad),
                "{k}: the ingress must not change the request"
            );
        }
    }
    assert!(notes
        .iter()
        .any(|(k, _)| k == "nginx.ingress.kubernetes.io/proxy-body-size"));
    let spec = &ingress["spec"];
    assert_eq!(spec["ingressClassName"], "nginx");
    let host = s.config.server.public_url.trim_start_matches("https://");
    let rules = seq(&spec["rules"]);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["host"], host, "public_url's host");
    assert!(seq(&spec["tls"])
        .iter()
        .any(|t| seq(&t["hosts"]).iter().any(|h| h == host)));
    let paths = seq(&rules[0]["http"]["paths"]);
    assert_eq!(
        paths.len(),
        1,
        "one rule for every path: a query cannot be routed"
    );
    assert_eq!(paths[0]["path"], "/");
    assert_eq!(paths[0]["pathType"], "Prefix");
    let backend = &paths[0]["backend"]["service"];
    let svc = s.one("Service");
    assert_eq!(backend["name"], svc["metadata"]["name"]);
    assert_ne!(
        svc["spec"]["type"], "LoadBalancer",
        "reached through the ingress alone"
    );
    let port = seq(&svc["spec"]["ports"])
        .iter()
        .find(|p| p["name"] == backend["port"]["name"])
        .expect("the ingress's port");
    assert_eq!(port["targetPort"].as_u64(), Some(u64::from(plain)));
    assert_eq!(s.port("http"), Some(u64::from(plain)));
    // Only the ingress controller's pods reach that port: what makes
    // trusting their X-Forwarded-For safe.
    let np = &s.one("NetworkPolicy")["spec"];
    let mut admitted = false;
    for rule in seq(&np["ingress"]) {
        if seq(&rule["ports"])
            .iter()
            .any(|p| p["port"].as_u64() == Some(u64::from(plain)))
        {
            admitted = true;
            let from = seq(&rule["from"]);
            assert!(
                !from.is_empty()
                    && from
                        .iter()
                        .all(|f| f["namespaceSelector"].is_mapping()
                            && f["podSelector"].is_mapping()),
                "listen_plain from the ingress controller's pods only"
            );
        }
    }
    assert!(admitted, "the ingress controller reaches listen_plain");
}

fn toml_to_yaml(v: &toml::Value) -> Value {
    serde_yaml::to_value(v).expect("TOML as YAML")
}

/// The labels an alert rule groups or matches by (`by (...)`, `on (...)`),
/// less those its own selectors name (the metric's labels).
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for clause in ["by (", "on ("] {
        for part in expr.split(clause).skip(1) {
            let inside = part.split(')').next().unwrap_or_default();
            out.extend(inside.split(',').map(|l| l.trim().to_string()));
        }
    }
    out.retain(|l| !l.is_empty() && !expr.contains(&format!("{{{l}")));
    out.sort();
    out.dedup();
    out
}

/// What the alerts group by, both ways of scraping give: the annotation
/// job copies `pod` and `namespace` from service discovery, and reads the
/// annotations every shape sets; the operator's ServiceMonitor gives them
/// by itself.
#[test]
fn the_alerts_group_by_labels_that_both_ways_of_scraping_give() {
    let alerts: Value =
        serde_yaml::from_str(&read("examples/prometheus/alerts.yaml")).expect("YAML");
    let mut grouped = Vec::new();
    for rule in seq(&alerts["groups"]).iter().flat_map(|g| seq(&g["rules"])) {
        grouped.extend(grouping_labels(rule["expr"].as_str().expect("expr")));
    }
    grouped.sort();
    grouped.dedup();
    assert!(grouped.contains(&"pod".to_string()), "{grouped:?}");

    let scrape: Value =
        serde_yaml::from_str(&read("examples/prometheus/scrape-pods.yaml")).expect("YAML");
    let job = &scrape["scrape_configs"][0];
    assert_eq!(job["kubernetes_sd_configs"][0]["role"], "pod");
    let relabels = seq(&job["relabel_configs"]);
    let copied = |target: &str| {
        relabels
            .iter()
            .find(|r| r["target_label"] == target)
            .map(|r| seq(&r["source_labels"]).to_vec())
    };
    assert_eq!(
        copied("pod"),
        Some(vec![Value::from("__meta_kubernetes_pod_name")])
    );
    assert_eq!(
        copied("namespace"),
        Some(vec![Value::from("__meta_kubernetes_namespace")])
    );
    // The operator labels each target with these (its relabeling of
    // endpoints discovery); a shape's ServiceMonitor adds none.
    let operator = [
        "namespace",
        "pod",
        "service",
        "container",
        "endpoint",
        "job",
    ];
    for l in &grouped {
        assert!(copied(l).is_some(), "the annotation job gives no {l}");
        assert!(
            operator.contains(&l.as_str()),
            "a ServiceMonitor gives no {l}"
        );
    }
    // Each annotation the job reads is one every shape sets.
    let annotation = "__meta_kubernetes_pod_annotation_";
    let read_by_job: Vec<&str> = relabels
        .iter()
        .flat_map(|r| seq(&r["source_labels"]))
        .filter_map(|l| l.as_str()?.strip_prefix(annotation))
        .collect();
    assert!(read_by_job.contains(&"prometheus_io_scrape"));
    for rel in SHAPES {
        let s = shape(rel);
        let notes = s.workload()["spec"]["template"]["metadata"]["annotations"]
            .as_mapping()
            .expect("annotations");
        // Service discovery's name for an annotation: other characters as _.
        let sd = |k: &str| -> String {
            k.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        };
        for a in &read_by_job {
            assert!(
                notes
                    .iter()
                    .any(|(k, _)| sd(k.as_str().unwrap_or_default()) == *a),
                "{rel}: no annotation for {a}"
            );
        }
    }
}

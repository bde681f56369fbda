//! SAP Commerce: KPPaymentController#authorizeCallback, as its source reads
//! (klarna/SAP-Commerce-klarna-payments): POST /klarna/payment/auth-callback
//! (Spring MVC: a trailing slash matches; case-sensitive; the storefront
//! also serves it under a site and language prefix, here /electronics/en).
//! CSRF-exempt only where `csrf.allowed.url.patterns` says
//! (`/[^/]+(/[^?]*)+(auth-callback)$`: no trailing slash), else 403.
//! @RequireHardLogIn: without a logged-in storefront session, a redirect
//! (302) to the login page. Then the request parameters authorizationToken,
//! paymentOption and finalizeRequired (query or form; never Klarna's JSON
//! body) are required (400), saved on the session's cart, and one more
//! payment transaction created (no dedupe): 200 `success`. No order is
//! placed here, and no Klarna call made.
//!
//!/ Spring MVC's path matching, as it changed between versions (each rule

use std::sync::Mutex;

use crate::common::*;

use super::*;

/// - `AntPathMatcher.trimTokens` (spring-core, `util/AntPathMatcher.java`):
///   `true` before 4.3, so white space around a path segment is ignored
///   (`StringUtils.tokenizeToStringArray(path, "/", trimTokens, true)`);
/// - `useSuffixPatternMatch` (spring-webmvc,
///   `mvc/method/annotation/RequestMappingHandlerMapping.java`, read in
///   `mvc/condition/PatternsRequestCondition.getMatchingPattern`): `true`
///   before 5.3, so a pattern with no `.` also matches `pattern + ".*"`;
/// - `useTrailingSlashMatch` (same two files): `true` before 6.0, so a
///   pattern also matches `pattern + "/"`.
///
/// Case-sensitive in every version.
#[derive(Clone, Copy, Debug)]
struct Spring {
    trim_tokens: bool,
    suffix_pattern: bool,
    trailing_slash: bool,
}

impl Spring {
    fn version(major: u32, minor: u32) -> Self {
        let v = (major, minor);
        Spring {
            trim_tokens: v < (4, 3),
            suffix_pattern: v < (5, 3),
            trailing_slash: v < (6, 0),
        }
    }

    /// Whether Spring maps the (Tomcat-decoded, normalized) `path` to the
    /// handler's `pattern`.
    fn maps(self, pattern: &str, path: &str) -> bool {
        let path: String = if self.trim_tokens {
            path.split('/')
                .map(|s| s.trim_matches(|c: char| c.is_ascii_whitespace()))
                .collect::<Vec<_>>()
                .join("/")
        } else {
            path.to_string()
        };
        path == pattern
            || (self.trailing_slash && path.strip_suffix('/') == Some(pattern))
            || (self.suffix_pattern
                && !pattern.contains('.')
                && path
                    .strip_prefix(pattern)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|ext| !ext.contains('/')))
    }
}

#[derive(Default)]
struct SapState {
    /// (uri, status) of every request the handler mapping sent to the
    /// controller.
    hits: Vec<(String, u16, bool)>,
    /// JSESSIONID -> cart code, for logged-in storefront sessions.
    sessions: std::collections::HashMap<String, String>,
    /// (cart, authorization token) of each payment transaction created.
    transactions: Vec<(String, String)>,
}

#[derive(Clone)]
struct Sap {
    addr: SocketAddr,
    state: Arc<Mutex<SapState>>,
}

impl Sap {
    /// The storefront on Spring 5.2, the last before suffix patterns were
    /// turned off: what a legacy SAP Commerce runs.
    async fn start() -> Self {
        Self::start_on(Spring::version(5, 2)).await
    }

    async fn start_on(spring: Spring) -> Self {
        let state: Arc<Mutex<SapState>> = Arc::default();
        let s = state.clone();
        let addr = serve(Arc::new(move |req| {
            let s = s.clone();
            Box::pin(async move { sap_handle(&s, spring, req).await })
        }))
        .await;
        Sap { addr, state }
    }

    fn hits(&self) -> Vec<(String, u16, bool)> {
        self.state.lock().expect("lock").hits.clone()
    }

    /// Calls that came from authback's delivery.
    fn delivered(&self) -> usize {
        self.hits().iter().filter(|h| h.2).count()
    }
}

fn csrf_exempt(path: &str) -> bool {
    // `/[^/]+(/[^?]*)+(auth-callback)$`
    let Some(before) = path.strip_suffix("auth-callback") else {
        return false;
    };
    let Some(rest) = before.strip_prefix('/') else {
        return false;
    };
    match rest.find('/') {
        Some(i) => i > 0 && !before.contains('?'),
        None => false,
    }
}

async fn sap_handle(
    state: &Mutex<SapState>,
    spring: Spring,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    // Tomcat decodes the path, merges slashes and removes `.` segments.
    let path = percent_decode(req.uri().path(), false)
        .split('/')
        .filter(|s| *s != ".")
        .fold(String::new(), |mut p, seg| {
            if !seg.is_empty() {
                p.push('/');
                p.push_str(seg);
            }
            p
        })
        + if req.uri().path().ends_with('/') {
            "/"
        } else {
            ""
        };
    let servlet = path.strip_prefix("/electronics/en").unwrap_or(&path);
    let mapped = spring.maps("/klarna/payment/auth-callback", servlet);
    if !mapped {
        return answer(404, &[], "Not Found");
    }
    if req.method() != http::Method::POST {
        return answer(405, &[], "Request method not supported");
    }
    let from_authback = req.headers().contains_key("idempotency-key");
    let uri = req.uri().to_string();
    let cookie = req
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let form = req.headers().get("content-type").is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut st = state.lock().expect("lock");
    let status;
    let resp = if !csrf_exempt(&path) {
        status = 403;
        answer(403, &[], "Bad or missing CSRF value")
    } else {
        let session = cookie
            .split(';')
            .filter_map(|c| c.trim().strip_prefix("JSESSIONID="))
            .find_map(|id| st.sessions.get(id).cloned());
        match session {
            None => {
                status = 302;
                answer(302, &[("location", "/login")], "")
            }
            Some(cart) => {
                let mut all = params(&query);
                if form {
                    all.extend(params(&String::from_utf8_lossy(&body)));
                }
                let get = |n: &str| all.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                match (
                    get("authorizationToken"),
                    get("paymentOption"),
                    get("finalizeRequired"),
                ) {
                    (Some(token), Some(_), Some(_)) => {
                        st.transactions.push((cart, token));
                        status = 200;
                        answer(200, &[("content-type", "application/json")], "success")
                    }
                    _ => {
                        status = 400;
                        answer(400, &[], "Required request parameter is not present")
                    }
                }
            }
        }
    };
    st.hits.push((uri, status, from_authback));
    resp
}

const SAP_ROUTE: &str = "sap-commerce";

const SAP_SPELLINGS: [&str; 8] = [
    "/klarna/payment/auth-callback",
    "/klarna/payment/auth-callback/",
    "/klarna/payment/auth-callback.json",
    "/klarna/payment/auth-callback.do",
    "/electronics/en/klarna/payment/auth-callback",
    "/electronics/en/klarna/payment/auth-callback/",
    "/klarna//payment/./auth-callback",
    "/klarna/payment/auth%2Dcallback",
];

#[tokio::test]
async fn sap_commerce_behind_authback_records_each_authorization_once() {
    let api = KlarnaApi::start().await;
    let sap = Sap::start().await;
    let ab = start_platform(
        "examples/platforms/sap-commerce.toml",
        &format!("http://{}", sap.addr),
        &api,
    )
    .await;
    let tally = Mutex::new(Tally::default());
    let (session, tok1, tok2) = ("sess-sap-1", "tok-sap-0001", "tok-sap-0002");
    api.authorize(session, tok1);
    let body1 = callback_body(session, tok1);

    repeats(&ab, &tally, SAP_SPELLINGS[0], &body1).await;
    for pq in SAP_SPELLINGS {
        let before = sap.hits().len();
        let (status, _) = plain(sap.addr, "POST", pq, "{}").await;
        assert!(
            matches!(status, 302 | 403),
            "{pq} reaches the controller: {status}"
        );
        assert_eq!(sap.hits().len(), before + 1, "{pq}");
        intercepted(&ab, &tally, SAP_ROUTE, pq, &body1).await;
    }
    // Tomcat cuts `;jsessionid=...` from the path: authback refuses it on a
    // route's path instead of guessing.
    let before = sap.hits().len();
    let (status, _) = ab
        .callback("/klarna/payment/auth-callback;jsessionid=abc", &body1)
        .await;
    assert_eq!(status, 400);
    assert_eq!(sap.hits().len(), before, "never proxied");

    eventually!(sap.delivered() == 1, "the delivery");
    as_klarna(&ab, &tally, SAP_SPELLINGS[0], &callback_body(session, tok2)).await;
    eventually!(sap.delivered() == 2, "the re-authorization");
    eventually!(
        counter(&ab, "deliveries", SAP_ROUTE, "delivered").await == 2.0,
        "both delivered"
    );
    assert_eq!(counter(&ab, "deliveries", SAP_ROUTE, "dead").await, 0.0);
    assert!(
        sap.hits().iter().filter(|h| h.2).all(|h| h.1 == 302),
        "the extension redirects Klarna's call: {:?}",
        sap.hits()
    );
    assert!(sap.state.lock().expect("lock").transactions.is_empty());

    // The shopper's browser places the order through the storefront; order
    // watch then confirms both deliveries.
    assert_eq!(api.create_order(tok1).await, 200);
    eventually!(confirmed(&ab).await == 2.0, "order watch");

    // A logged-in storefront session with the parameters is what the
    // controller serves.
    sap.state
        .lock()
        .expect("lock")
        .sessions
        .insert("js-1".into(), "cart-00001".into());
    let (status, said) = plain_with(
        sap.addr,
        "POST",
        "/klarna/payment/auth-callback?authorizationToken=tok-browser&paymentOption=pay_later&finalizeRequired=false",
        "",
        &[("cookie", "JSESSIONID=js-1")],
    )
    .await;
    assert_eq!((status, said.as_str()), (200, "success"));

    // Without authback, Klarna gets the redirect three times and gives up.
    let before = sap.hits().len();
    let direct = klarna_direct(
        sap.addr,
        SAP_SPELLINGS[0],
        &callback_body("sess-sap-direct", "tok-sap-direct"),
    )
    .await;
    assert!(
        !direct.delivered && direct.attempts == 3 && direct.status == Some(302),
        "{direct:?}"
    );
    assert_eq!(sap.hits().len(), before + 3);

    tally.lock().expect("lock").report(
        "sap-commerce",
        &format!(
            "{} deliveries for 2 authorizations (each redirected to login, as every Klarna call is; 0 transactions); direct: Klarna {} attempts, last status {:?}",
            sap.delivered(),
            direct.attempts,
            direct.status
        ),
    );
}

#[tokio::test]
async fn sap_commerce_spring_spellings_by_version_never_reach_the_controller() {
    // The imitation's rules, pinned to the versions that change them.
    let cb = "/klarna/payment/auth-callback";
    let v42 = Spring::version(4, 2);
    let v53 = Spring::version(5, 3);
    let v60 = Spring::version(6, 0);
    assert!(v42.maps(cb, "/klarna/payment/ auth-callback "));
    assert!(!v53.maps(cb, "/klarna/payment/ auth-callback"));
    assert!(v42.maps(cb, "/klarna/payment/auth-callback.json"));
    assert!(!v53.maps(cb, "/klarna/payment/auth-callback.json"));
    assert!(v53.maps(cb, "/klarna/payment/auth-callback/"));
    assert!(!v60.maps(cb, "/klarna/payment/auth-callback/"));

    // The oldest storefront behind authback, on a route fenced to a
    // foreign address: every spelling Spring maps is refused.
    let api = KlarnaApi::start().await;
    let sap = Sap::start_on(v42).await;
    let ab = start_platform_fenced(
        "examples/platforms/sap-commerce.toml",
        &format!("http://{}", sap.addr),
        &api,
        "192.0.2.1/32",
    )
    .await;
    let body = callback_body("sess-sap-old", "tok-sap-old");
    let spellings = [
        "/klarna/payment/auth-callback",
        "/klarna/payment/auth-callback/",
        "/klarna/payment/auth-callback.json",
        "/klarna/payment/auth-callback.do",
        "/klarna/payment/%20auth-callback",
        "/klarna/payment/auth-callback%09",
        "/klarna/%20payment/auth-callback.json",
    ];
    for pq in spellings {
        let before = sap.hits().len();
        plain(sap.addr, "POST", pq, "{}").await;
        assert_eq!(sap.hits().len(), before + 1, "{pq} maps to the controller");
    }
    let direct = sap.hits().len();
    for pq in spellings {
        let (status, _) = ab.callback(pq, &body).await;
        assert!(matches!(status.as_u16(), 400 | 403), "{pq}: {status}");
    }
    assert_eq!(
        sap.hits().len(),
        direct,
        "a spelling reached the controller"
    );
}

<?php
// An imitation of a WordPress shop with WooCommerce and Klarna Payments for
// WooCommerce (krokedil), for `php -S 127.0.0.1:PORT router.php`. It does
// what their source does with Klarna's authorization callback:
//
// - Routing (WP::parse_request, WC_API::handle_api_requests): the `wc-api`
//   query var comes from a form field, else from `?wc-api=` (sanitize_key:
//   lowercased, all but [a-z0-9_-] removed), else from the rewrite endpoint
//   `wc-api/<value>`, which WordPress adds to every permalink structure
//   (EP_ALL), so `/<page>/wc-api/<value>` works too, after trimming the
//   path's slashes. The value is read like a query string (url-decoded),
//   cleaned with sanitize_text_field (tags, octets and surrounding white
//   space removed) and lowercased. Any method. The answer is always the body
//   `-1`: 200 when a handler is hooked on the name, else 400.
// - The handler (KP_Callbacks::authorization_cb, the long-standing release):
//   decodes the body as JSON and, unless it is empty, schedules the job
//   `kp_wc_authorization` 120 s later, on every call (no dedupe).
// - The job: finds the order by `_kp_session_id` (the newest), does nothing
//   if there is none or it is already on-hold, processing or completed, else
//   places the order at Klarna with the token (KP_WC()->api->place_order);
//   fraud_status ACCEPTED makes it `processing`.
//
// Test endpoints (not WordPress):
//   POST /__test/order?session_id=S   the checkout created a pending order
//   POST /__test/run-scheduled        runs every scheduled job now, as if
//                                     120 s had passed (Action Scheduler)
//   GET  /__test/state                every table
//
// Markers for the differential fuzzer (tests/it/fuzz.rs): the answer of a
// request that ran authorization_cb carries `X-Handler-Ran: 1`, and
// `X-Saw-Authback` names the HTTP_AUTHBACK_* variables PHP made of the
// request's headers. With PLATFORM_FUZZ=1 the handler writes no rows (the
// fuzzer sends tens of thousands of requests, and the writes would
// dominate).
require __DIR__ . '/../lib.php';

db_init('
    CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL, status TEXT NOT NULL, date_paid TEXT);
    CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY AUTOINCREMENT,
        method TEXT, uri TEXT, body TEXT, idempotency_key TEXT, at REAL);
    CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT,
        args TEXT NOT NULL, run_at INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS placements (id INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id INTEGER, session_id TEXT, authorization_token TEXT, klarna_status INTEGER, at REAL);
');

$uri = $_SERVER['REQUEST_URI'];
$rawPath = explode('?', $uri, 2)[0];
$sawAuthback = array_filter(array_keys($_SERVER), fn($k) => str_starts_with($k, 'HTTP_AUTHBACK_'));
if ($sawAuthback) {
    header('X-Saw-Authback: ' . implode(',', $sawAuthback));
}

if (str_starts_with($rawPath, '/__test/')) {
    test_endpoint($rawPath);
    return true;
}

// WP::parse_request fills the public query var from POST, else GET, else
// the rewrite match; differing GET and POST values die.
$wcApi = null;
if (isset($_GET['wc-api'], $_POST['wc-api']) && $_GET['wc-api'] !== $_POST['wc-api']) {
    http_response_code(400);
    echo 'A variable mismatch has been detected.';
    return true;
} elseif (isset($_POST['wc-api'])) {
    $wcApi = $_POST['wc-api'];
} elseif (isset($_GET['wc-api'])) {
    $wcApi = $_GET['wc-api'];
} else {
    $wcApi = rewrite_wc_api($rawPath);
}
// WC_API::handle_api_requests
if (!empty($_GET['wc-api'])) {
    $wcApi = sanitize_key((string)$_GET['wc-api']);
}
if (!empty($wcApi) && is_string($wcApi)) {
    $request = strtolower(sanitize_text_field($wcApi));
    header('Cache-Control: no-cache, must-revalidate, max-age=0');
    if ($request === 'kp_wc_authorization') {
        http_response_code(200);
        authorization_cb();
    } else {
        http_response_code(400);   // nothing hooked on that name
    }
    echo '-1';
    return true;
}

// Any other page of the shop.
if ($rawPath === '/' || $rawPath === '/index.php' || $rawPath === '/shop/') {
    header('Content-Type: text/html');
    echo '<html><body>a WordPress page</body></html>';
} else {
    http_response_code(404);
    echo '<html><body>Page not found</body></html>';
}
return true;

// The rewrite endpoint: `wc-api(/(.*))?/?$` after any permalink base
// (EP_ALL), matched on the raw path and, failing that, the decoded one.
function rewrite_wc_api(string $rawPath): ?string {
    $req = trim($rawPath, '/');
    if (str_starts_with($req, 'index.php/')) {
        $req = substr($req, strlen('index.php/'));   // PATH_INFO permalinks
    }
    $rule = '#^(?:(.?.+?)/)?wc-api(/(.*))?/?$#';
    if (preg_match($rule, $req, $m) || preg_match($rule, urldecode($req), $m)) {
        // `wc-api=$matches[3]`, read back with parse_str (decoded).
        parse_str('wc-api=' . ($m[3] ?? ''), $vars);
        return $vars['wc-api'] ?? null;
    }
    return null;
}

function sanitize_key(string $key): string {
    return preg_replace('/[^a-z0-9_\-]/', '', strtolower($key));
}

// WordPress's sanitize_text_field (wc_clean on a string).
function sanitize_text_field(string $s): string {
    if (str_contains($s, '<')) {
        $s = strip_tags($s);
    }
    $s = trim(preg_replace('/[\r\n\t ]+/', ' ', $s));
    $found = false;
    while (preg_match('/%[a-f0-9]{2}/i', $s, $m)) {
        $s = str_replace($m[0], '', $s);
        $found = true;
    }
    if ($found) {
        $s = trim(preg_replace('/ +/', ' ', $s));
    }
    return $s;
}

// KP_Callbacks::authorization_cb (the long-standing release).
function authorization_cb(): void {
    header('X-Handler-Ran: 1');
    if (getenv('PLATFORM_FUZZ') === '1') {
        return;
    }
    $body = file_get_contents('php://input');
    db()->prepare('INSERT INTO hits (method, uri, body, idempotency_key, at) VALUES (?, ?, ?, ?, ?)')
        ->execute([$_SERVER['REQUEST_METHOD'], $_SERVER['REQUEST_URI'], $body,
            $_SERVER['HTTP_IDEMPOTENCY_KEY'] ?? '', microtime(true)]);
    $data = json_decode($body, true);
    if (empty($data)) {
        return;
    }
    // as_schedule_single_action( time() + 120, 'kp_wc_authorization', array( $data ) )
    db()->prepare('INSERT INTO jobs (args, run_at) VALUES (?, ?)')
        ->execute([json_encode($data), time() + 120]);
}

// The scheduled job `kp_wc_authorization`.
function kp_wc_authorization(array $data): void {
    $db = db();
    $order = fetch_one('SELECT * FROM orders WHERE session_id = ? ORDER BY id DESC LIMIT 1', [(string)($data['session_id'] ?? '')]);
    if (!$order) {
        return;
    }
    // "Dont do anything if the order has been processed."
    if (in_array($order['status'], ['on-hold', 'processing', 'completed'], true)) {
        return;
    }
    $token = (string)($data['authorization_token'] ?? '');
    [$status, $response] = klarna_create_order($token);
    $db->prepare('INSERT INTO placements (order_id, session_id, authorization_token, klarna_status, at) VALUES (?, ?, ?, ?, ?)')
        ->execute([$order['id'], $order['session_id'], $token, $status, microtime(true)]);
    if ($status >= 200 && $status < 300) {
        $next = ($response['fraud_status'] ?? '') === 'ACCEPTED' ? 'processing' : 'on-hold';
        $db->prepare('UPDATE orders SET status = ?, date_paid = ? WHERE id = ?')
            ->execute([$next, gmdate('c'), $order['id']]);
    }
}

function test_endpoint(string $path): void {
    $db = db();
    if ($path === '/__test/order') {
        $db->prepare("INSERT INTO orders (session_id, status) VALUES (?, 'pending')")
            ->execute([$_GET['session_id'] ?? '']);
        json_answer(201, ['order' => (int)$db->lastInsertId()]);
    } elseif ($path === '/__test/run-scheduled') {
        $ran = 0;
        while (true) {
            $job = fetch_one('SELECT * FROM jobs WHERE done = 0 ORDER BY id LIMIT 1', []);
            if (!$job) {
                break;
            }
            $db->prepare('UPDATE jobs SET done = 1 WHERE id = ?')->execute([$job['id']]);
            kp_wc_authorization(json_decode($job['args'], true));
            $ran++;
        }
        json_answer(200, ['ran' => $ran]);
    } elseif ($path === '/__test/state') {
        dump_state(['orders', 'hits', 'jobs', 'placements']);
    } else {
        json_answer(404, ['error' => 'no such test endpoint']);
    }
}

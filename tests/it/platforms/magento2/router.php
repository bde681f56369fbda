<?php
// An imitation of a Magento 2 store with Klarna's module (Klarna_Kp, now
// vaimo/kustom-module-payments), for `php -S 127.0.0.1:PORT router.php`
// (with PHP_CLI_SERVER_WORKERS, so callbacks overlap as they do on a real
// store). It does what their source does with Klarna's authorization
// callback:
//
// - Routing (Router\Base, ActionList): `/index.php` (the base URL) is cut,
//   the path's slashes trimmed; the front name `checkout` is compared as it
//   is, the controller and the action lowercased; the segments after the
//   action are `key/value` parameters, which getParam() reads before the
//   query, and the query before form fields. POST only (else 404).
// - The controller (Controller/Klarna/Authorize.php): `dryRun` answers 200
//   before anything else; then session_id and authorization_token are
//   required; the Klarna quote is found by session_id; the module's token
//   is compared with `!=`; the quote must be active; a callback already
//   in progress or done (status >= 1) gets 400 "Another authorization
//   callback workflow is still in progress."; otherwise the status becomes
//   IN_PROGRESS and placeOrder runs inside the request: the quote is
//   loaded (getActive), the order placed at Klarna, which takes 2.5 s here
//   (longer than Klarna's 2 s read timeout), then the quote is inactive and
//   the answer 204. A LocalizedException after the quote was loaded sets
//   the status to FAILED (-1) and answers 400 {"error": message}. There is
//   no lock around the check and the set.
//
// Test endpoints (not Magento):
//   POST /__test/quote?session_id=S&token=T   a quote with its Klarna session
//   GET  /__test/state                        every table
//
// Markers for the differential fuzzer (tests/it/fuzz.rs), which asks every
// request whether the controller went past its dryRun check: the answer
// then carries `X-Handler-Ran: 1`. `X-Saw-Authback` names the
// HTTP_AUTHBACK_* variables PHP made of the request's headers. With
// PLATFORM_FUZZ=1 the hits table is not written (the fuzzer sends tens of
// thousands of requests, and the writes would dominate).
require __DIR__ . '/../lib.php';

const PLACE_ORDER_SECONDS = 2.5;
const IN_PROGRESS = 1;
const SUCCESSFUL = 2;
const FAILED = -1;

db_init('
    CREATE TABLE IF NOT EXISTS quotes (quote_id INTEGER PRIMARY KEY AUTOINCREMENT,
        is_active INTEGER NOT NULL DEFAULT 1);
    CREATE TABLE IF NOT EXISTS klarna_quotes (session_id TEXT PRIMARY KEY,
        quote_id INTEGER NOT NULL, auth_token_callback_token TEXT,
        authorization_token TEXT, is_auth_callback_active INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT,
        quote_id INTEGER, authorization_token TEXT, klarna_status INTEGER, at REAL);
    CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY AUTOINCREMENT,
        uri TEXT, body TEXT, idempotency_key TEXT, status INTEGER, answer TEXT,
        started REAL, ended REAL);
');

class LocalizedException extends Exception {}

$uri = $_SERVER['REQUEST_URI'];
$rawPath = explode('?', $uri, 2)[0];
$fuzz = getenv('PLATFORM_FUZZ') === '1';
$sawAuthback = array_filter(array_keys($_SERVER), fn($k) => str_starts_with($k, 'HTTP_AUTHBACK_'));
if ($sawAuthback) {
    header('X-Saw-Authback: ' . implode(',', $sawAuthback));
}

if (str_starts_with($rawPath, '/__test/')) {
    test_endpoint($rawPath);
    return true;
}

// Router\Base: the path info without the base URL, slashes trimmed.
$pathInfo = $rawPath;
if ($pathInfo === '/index.php' || str_starts_with($pathInfo, '/index.php/')) {
    $pathInfo = substr($pathInfo, strlen('/index.php'));
}
$params = explode('/', trim($pathInfo, '/'));
$routed = count($params) >= 3
    && $params[0] === 'checkout'
    && strtolower($params[1]) === 'klarna'
    && strtolower($params[2]) === 'authorize';
if (!$routed || $_SERVER['REQUEST_METHOD'] !== 'POST') {
    http_response_code(404);
    header('Content-Type: text/html');
    echo '<html><body>Page not found.</body></html>';
    return true;
}
$routeParams = [];
for ($i = 3, $l = count($params); $i < $l; $i += 2) {
    $routeParams[$params[$i]] = isset($params[$i + 1]) ? urldecode($params[$i + 1]) : '';
}

$body = file_get_contents('php://input');
$db = db();
if (!$fuzz) {
    $db->prepare('INSERT INTO hits (uri, body, idempotency_key, started) VALUES (?, ?, ?, ?)')
        ->execute([$uri, $body, $_SERVER['HTTP_IDEMPOTENCY_KEY'] ?? '', microtime(true)]);
    $hit = (int)$db->lastInsertId();
}
[$status, $answer] = authorize($body, $routeParams);
if (!$fuzz) {
    $db->prepare('UPDATE hits SET status = ?, answer = ?, ended = ? WHERE id = ?')
        ->execute([$status, json_encode($answer), microtime(true), $hit]);
}
json_answer($status, $answer);
return true;

function get_param(array $routeParams, string $name) {
    return $routeParams[$name] ?? $_GET[$name] ?? $_POST[$name] ?? null;
}

// Controller/Klarna/Authorize::execute
function authorize(string $body, array $routeParams): array {
    $db = db();
    $parameters = json_decode($body, true);
    if (get_param($routeParams, 'dryRun')) {
        return [200, [
            'message' => 'The ' . $_SERVER['REQUEST_URI'] . ' is accessible.',
            'timestamp' => time(),
            'code' => 200,
        ]];
    }
    header('X-Handler-Ran: 1');   // past the probe: the real work begins
    $klarnaQuote = null;
    try {
        foreach (['session_id', 'authorization_token'] as $name) {
            if (empty($parameters[$name])) {
                throw new LocalizedException(sprintf('%s is required.', $name));
            }
        }
        $found = fetch_one('SELECT * FROM klarna_quotes WHERE session_id = ?', [(string)$parameters['session_id']]);
        if (!$found) {
            throw new LocalizedException('No such entity with session_id = ' . $parameters['session_id']);
        }
        $klarnaQuote = $found;
        // RequestValidator::verifyAuthCallbackToken: a loose comparison.
        $token = get_param($routeParams, 'token');
        if ($token != $klarnaQuote['auth_token_callback_token']) {
            throw new LocalizedException(sprintf('Invalid value of "%s" provided for the token field.', (string)$token));
        }
        // RequestValidator::verifyMagentoQuote
        if (!quote_active((int)$klarnaQuote['quote_id'])) {
            throw new LocalizedException(sprintf('cartId = %s is not active.', $klarnaQuote['quote_id']));
        }
        if ((int)$klarnaQuote['is_auth_callback_active'] >= IN_PROGRESS) {
            return [400, ['error' => 'Another authorization callback workflow is still in progress.']];
        }
        $db->prepare('UPDATE klarna_quotes SET authorization_token = ?, is_auth_callback_active = ? WHERE session_id = ?')
            ->execute([(string)$parameters['authorization_token'], IN_PROGRESS, $klarnaQuote['session_id']]);
        place_order((int)$klarnaQuote['quote_id'], (string)$parameters['authorization_token']);
    } catch (LocalizedException $e) {
        if ($klarnaQuote !== null) {
            set_status($klarnaQuote['session_id'], FAILED);
        }
        return [400, ['error' => $e->getMessage()]];
    }
    set_status($klarnaQuote['session_id'], SUCCESSFUL);
    return [204, ['message' => 'Order has placed successfully.']];
}

function quote_active(int $quoteId): bool {
    $row = fetch_one('SELECT is_active FROM quotes WHERE quote_id = ?', [$quoteId]);
    return $row !== false && (int)$row['is_active'] === 1;
}

function set_status(string $sessionId, int $status): void {
    db()->prepare('UPDATE klarna_quotes SET is_auth_callback_active = ? WHERE session_id = ?')
        ->execute([$status, $sessionId]);
}

// CartManagement::placeOrder: the quote is loaded active, the payment
// authorized at Klarna (the slow part), the order saved, the quote closed.
function place_order(int $quoteId, string $authorizationToken): void {
    if (!quote_active($quoteId)) {
        throw new LocalizedException(sprintf('No such entity with cartId = %s', $quoteId));
    }
    usleep((int)(PLACE_ORDER_SECONDS * 1e6));
    [$status] = klarna_create_order($authorizationToken);
    if ($status < 200 || $status >= 300) {
        throw new LocalizedException('The payment method you requested is not available.');
    }
    $db = db();
    $db->prepare('INSERT INTO orders (quote_id, authorization_token, klarna_status, at) VALUES (?, ?, ?, ?)')
        ->execute([$quoteId, $authorizationToken, $status, microtime(true)]);
    $db->prepare('UPDATE quotes SET is_active = 0 WHERE quote_id = ?')->execute([$quoteId]);
}

function test_endpoint(string $path): void {
    $db = db();
    if ($path === '/__test/quote') {
        $db->exec('INSERT INTO quotes (is_active) VALUES (1)');
        $quoteId = (int)$db->lastInsertId();
        $db->prepare('INSERT INTO klarna_quotes (session_id, quote_id, auth_token_callback_token) VALUES (?, ?, ?)')
            ->execute([$_GET['session_id'] ?? '', $quoteId, $_GET['token'] ?? '']);
        json_answer(201, ['quote_id' => $quoteId]);
    } elseif ($path === '/__test/state') {
        dump_state(['quotes', 'klarna_quotes', 'orders', 'hits']);
    } else {
        json_answer(404, ['error' => 'no such test endpoint']);
    }
}

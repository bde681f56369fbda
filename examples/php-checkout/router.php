<?php
// `php -S 127.0.0.1:8080 router.php`: a small legacy-style checkout.
//   GET  /checkout/start?ref=R     mints the URL to give Klarna as merchant_urls.authorization
//   POST /authback/authorized      the normalized request from authback (json or form)
//   POST /legacy/klarna-push       an older callback endpoint with its own ?token=, shielded by authback
//   GET  /orders                   what was placed (for the demo and the tests)
require __DIR__ . '/lib.php';

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
$method = $_SERVER['REQUEST_METHOD'];
header('Content-Type: application/json');

if ($method === 'GET' && $path === '/checkout/start') {
    $ref = $_GET['ref'] ?? '';
    if (!preg_match('/^[A-Za-z0-9._~-]{1,128}$/', $ref)) {
        http_response_code(400);
        echo json_encode(['error' => 'bad reference']);
        return true;
    }
    $url = authback_callback_url(env_or_die('PUBLIC_URL'), 'klarna', $ref, env_or_die('AUTHBACK_SECRET'));
    echo json_encode(['merchant_urls' => ['authorization' => $url]]);
    return true;
}

if ($method === 'POST' && $path === '/authback/authorized') {
    $body = file_get_contents('php://input');
    if (!authback_signature_ok($body, env_or_die('AUTHBACK_UPSTREAM_SECRET'))) {
        http_response_code(401);
        echo json_encode(['error' => 'bad signature']);
        return true;
    }
    $key = $_SERVER['HTTP_IDEMPOTENCY_KEY'] ?? '';
    $ct = $_SERVER['CONTENT_TYPE'] ?? '';
    if (str_starts_with($ct, 'application/x-www-form-urlencoded')) {
        $a = $_POST;                         // form format: $_POST just works
        $format = 'form';
    } else {
        $a = json_decode($body, true) ?: [];
        $format = 'json';
    }
    if ($key === '' || $key !== ($a['id'] ?? null)) {
        http_response_code(400);
        echo json_encode(['error' => 'missing or mismatched Idempotency-Key']);
        return true;
    }
    // Place the order once per Idempotency-Key: a repeat is a success too.
    $stmt = db()->prepare('INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)');
    $stmt->execute([$key, $a['session_id'], $a['reference'], $a['authorization_token'], $a['source'], $format, gmdate('c')]);
    http_response_code($stmt->rowCount() === 1 ? 201 : 200);
    echo json_encode(['order' => $key]);
    return true;
}

if ($method === 'POST' && $path === '/legacy/klarna-push') {
    // This endpoint predates authback and checks its own token.
    if (($_GET['token'] ?? '') !== env_or_die('LEGACY_TOKEN')) {
        http_response_code(403);
        return true;
    }
    $stmt = db()->prepare('INSERT INTO legacy_callbacks (body, idempotency_key, received_at) VALUES (?, ?, ?)');
    $stmt->execute([file_get_contents('php://input'), $_SERVER['HTTP_IDEMPOTENCY_KEY'] ?? '', gmdate('c')]);
    http_response_code(200);
    echo '{}';
    return true;
}

if ($method === 'GET' && $path === '/orders') {
    $db = db();
    echo json_encode([
        'orders' => $db->query('SELECT * FROM orders ORDER BY placed_at')->fetchAll(PDO::FETCH_ASSOC),
        'legacy_callbacks' => $db->query('SELECT * FROM legacy_callbacks ORDER BY id')->fetchAll(PDO::FETCH_ASSOC),
    ]);
    return true;
}

http_response_code(404);
echo json_encode(['error' => 'not found']);
return true;

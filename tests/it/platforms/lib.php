<?php
// Shared by the PHP imitations of the platforms' Klarna callback handlers
// (tests/it/platforms.rs): their state in SQLite, Klarna's create-order
// call, and the test's own endpoints.

function db(): PDO {
    static $pdo = null;
    if ($pdo !== null) {
        return $pdo;
    }
    $pdo = new PDO('sqlite:' . getenv('PLATFORM_DB'));
    $pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
    $pdo->setAttribute(PDO::ATTR_DEFAULT_FETCH_MODE, PDO::FETCH_ASSOC);
    $pdo->exec('PRAGMA busy_timeout = 10000');
    return $pdo;
}

// Several `php -S` workers share the database: the first request creates it,
// in WAL mode (the test makes that request before any other).
function db_init(string $schema): void {
    $db = db();
    if ($db->query("SELECT count(*) FROM sqlite_master WHERE name = 'hits'")->fetchColumn() > 0) {
        return;
    }
    $db->exec('PRAGMA journal_mode = WAL');
    $db->exec($schema);
}

// Places the order at Klarna, as the plugins do in the end:
// POST {api}/payments/v1/authorizations/{token}/order. KLARNA_API is the
// test's simulated Klarna (self-signed). Returns [status, decoded body].
// The read timeout leaves a test time to hold the order
// (KlarnaApi::hold_order) while it acts.
function klarna_create_order(string $token): array {
    $api = getenv('KLARNA_API');
    if ($api === false || $api === '') {
        return [200, ['order_id' => 'local-' . bin2hex(random_bytes(4)), 'fraud_status' => 'ACCEPTED']];
    }
    $ctx = stream_context_create([
        'http' => [
            'method' => 'POST',
            'header' => "Content-Type: application/json\r\nHost: localhost\r\nConnection: close\r\n",
            'content' => '{}',
            'ignore_errors' => true,
            'timeout' => 30,
        ],
        'ssl' => ['verify_peer' => false, 'verify_peer_name' => false],
    ]);
    $body = @file_get_contents($api . '/payments/v1/authorizations/' . rawurlencode($token) . '/order', false, $ctx);
    $status = 0;
    foreach ($http_response_header ?? [] as $h) {
        if (preg_match('#^HTTP/\S+ (\d{3})#', $h, $m)) {
            $status = (int)$m[1];
        }
    }
    return [$status, json_decode((string)$body, true) ?: []];
}

// One row (or false), its statement closed at once: an open statement keeps
// a read transaction, and a later write from it fails with "database is
// locked" once another worker has written.
function fetch_one(string $sql, array $args) {
    $q = db()->prepare($sql);
    $q->execute($args);
    $row = $q->fetch();
    $q->closeCursor();
    return $row;
}

function json_answer(int $status, $data): void {
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($data);
}

// GET /__test/state: every table, for the test's assertions.
function dump_state(array $tables): void {
    $out = [];
    foreach ($tables as $t) {
        $out[$t] = db()->query("SELECT * FROM $t ORDER BY rowid")->fetchAll();
    }
    json_answer(200, $out);
}

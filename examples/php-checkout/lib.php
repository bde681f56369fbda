<?php
// Shared helpers of the example checkout: configuration from the
// environment, the order database, and authback's URL token.

function env_or_die(string $name): string {
    $v = getenv($name);
    if ($v === false || $v === '') {
        http_response_code(500);
        error_log("missing environment variable $name");
        exit;
    }
    return $v;
}

function db(): PDO {
    $pdo = new PDO('sqlite:' . env_or_die('CHECKOUT_DB'));
    $pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
    $pdo->exec('PRAGMA busy_timeout = 5000');
    $pdo->exec('CREATE TABLE IF NOT EXISTS orders (
        idempotency_key TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        reference TEXT NOT NULL,
        authorization_token TEXT NOT NULL,
        source TEXT NOT NULL,
        format TEXT NOT NULL,
        placed_at TEXT NOT NULL)');
    $pdo->exec('CREATE TABLE IF NOT EXISTS legacy_callbacks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        body TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        received_at TEXT NOT NULL)');
    return $pdo;
}

// The callback URL for merchant_urls.authorization, minted here with the
// one-liner from authback's README (no call to authback needed).
function authback_callback_url(string $publicUrl, string $route, string $ref, string $secret, int $ttl = 172800): string {
    $exp = time() + $ttl;
    $token = "v1.$exp." . rtrim(strtr(base64_encode(hash_hmac('sha256', "authback.v1|$route|$ref|$exp", $secret, true)), '+/', '-_'), '=');
    return "$publicUrl/klarna/authorization/$ref?token=$token";
}

// Authback-Signature: t={unix},v1={hex HMAC-SHA256(secret, t + "." + body)}
function authback_signature_ok(string $body, string $secret): bool {
    $header = $_SERVER['HTTP_AUTHBACK_SIGNATURE'] ?? '';
    if (!preg_match('/^t=(\d+),v1=([0-9a-f]{64})$/', $header, $m)) {
        return false;
    }
    if (abs(time() - (int)$m[1]) > 300) {
        return false;
    }
    return hash_equals(hash_hmac('sha256', $m[1] . '.' . $body, $secret), $m[2]);
}

<?php
// A generic PHP shop behind authback's `json` and `form` routes, for
// `php -S 127.0.0.1:PORT -t docroot router.php` (tests/it/fuzz.rs). The
// routes deliver to real scripts in the docroot, as on a shop whose web
// server runs `.php` files: docroot/checkout/authorized.php and
// docroot/hooks/klarna-form.php. Each answers `X-Handler-Ran: 1`; only
// authback may ever make them run.
//
// `php -S` runs this router for every request, after resolving the path
// the way it serves files: decoded (`%2F` too), dot segments resolved,
// and `x.php/anything` running `x.php` with PATH_INFO. When that found a
// real file in the docroot, the router steps aside (`return false`) and
// `php -S` runs or serves it. Everything else is the echo endpoint: 200
// with `X-Script` (SCRIPT_NAME as `php -S` resolved it, escaped as a
// path) and a JSON body of
// what PHP read: the method, the decoded path, $_GET, $_POST and $_FILES
// (names and sizes), for comparing a request sent through authback with
// the same request sent straight here.
//
// On every request, `X-Saw-Authback` names the HTTP_AUTHBACK_* variables
// PHP made of the request's headers (`Authback-Attempt`, and look-alikes
// such as `Authback_Attempt` or `Authback.Signature`, all read alike).
$saw = array_values(array_filter(array_keys($_SERVER), fn($k) => str_starts_with($k, 'HTTP_AUTHBACK_')));
if ($saw) {
    header('X-Saw-Authback: ' . implode(',', $saw));
}

$root = rtrim($_SERVER['DOCUMENT_ROOT'], '/') . '/';
if (str_starts_with($_SERVER['SCRIPT_FILENAME'], $root) && is_file($_SERVER['SCRIPT_FILENAME'])) {
    return false;
}

$files = [];
foreach ($_FILES as $name => $f) {
    $files[$name] = ['name' => $f['name'], 'size' => $f['size'], 'error' => $f['error']];
}
header('X-Script: ' . str_replace('%2F', '/', rawurlencode($_SERVER['SCRIPT_NAME'])));
header('Content-Type: application/json');
echo json_encode([
    'method' => $_SERVER['REQUEST_METHOD'],
    'script' => $_SERVER['SCRIPT_NAME'],
    'path' => rawurldecode(explode('?', $_SERVER['REQUEST_URI'], 2)[0]),
    'get' => $_GET,
    'post' => $_POST,
    'files' => $files,
    'authback' => $saw,
], JSON_INVALID_UTF8_SUBSTITUTE | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
return true;

<?php
// The generic `json` route's forward path: where authback delivers. A
// naive handler, as many are: it trusts whoever reaches it. Only authback
// may (see ../../router.php).
header('X-Handler-Ran: 1');
header('X-Script: ' . $_SERVER['SCRIPT_NAME']);
header('Content-Type: application/json');
echo '{"handled":"json"}';

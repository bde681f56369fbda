//! The URL token codec: verification never panics on any input, and a
//! minted token verifies for its own route and reference only.
#![no_main]

use authback::callback::token;
use authback::types::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let secrets = [
        Secret::new("fuzz-secret-one"),
        Secret::new("fuzz-secret-two"),
    ];
    let _ = token::verify(&text, &secrets, "klarna", "order-1", 1_700_000_000);
    let _ = token::verify_static(&text, &secrets);

    // Round trip: the input split into a secret and a reference.
    let (secret, reference) = data.split_at(data.len() / 2);
    if secret.is_empty() {
        return;
    }
    let reference = String::from_utf8_lossy(reference);
    let s = Secret::new(secret.to_vec());
    let exp = 1_800_000_000;
    let t = token::mint(&s, "klarna", &reference, exp);
    assert!(token::verify(&t, std::slice::from_ref(&s), "klarna", &reference, exp - 1).is_ok());
    assert!(token::verify(&t, std::slice::from_ref(&s), "klarna", &reference, exp).is_err());
    assert!(token::verify(&t, std::slice::from_ref(&s), "other", &reference, exp - 1).is_err());
});

//! Config parsing and validation never panic, whatever the file holds.
#![no_main]

use std::path::Path;

use authback::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(text, Path::new("."));
});

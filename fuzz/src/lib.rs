//! What the fuzz targets share: a valid config with the routes they need.

use std::path::Path;

use authback::config::Config;

/// The smallest valid config plus `routes` (TOML `[[routes]]` tables).
pub fn config(routes: &str) -> Config {
    let text = format!(
        "[server]\npublic_url = \"https://shop.example.com\"\n[server.tls]\nself_signed = true\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n{routes}"
    );
    match Config::parse(&text, Path::new(".")) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz config is valid: {e:?}"),
    }
}

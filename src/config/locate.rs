//! Finding where a problem is: the key and line of an unknown key or a value
//! of the wrong type, so that `check` names every such problem at once.

use super::file::FileConfig;
use crate::config::model::ConfigError;

/// Reads the file's structure. An unknown key or a value of the wrong type
/// is reported with its key and line, then its entry is set aside and the
/// file read again, so that one run reports every such problem rather than
/// the first. Fails at once on a TOML syntax error, or on a problem that
/// setting an entry aside cannot get past (a missing table).
pub(super) fn read_file(text: &str) -> Result<(FileConfig, Vec<ConfigError>), Vec<ConfigError>> {
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(vec![ConfigError {
            key: String::new(),
            message: e.to_string().trim_end().to_string(),
        }]);
    }
    let mut work = text.to_string();
    let mut errors = Vec::new();
    // Each round sets one entry aside; a file has finitely many.
    for _ in 0..=text.lines().count() {
        let e = match toml::from_str::<FileConfig>(&work) {
            Ok(file) => return Ok((file, errors)),
            Err(e) => e,
        };
        let entries = entries(&work);
        let at = e
            .span()
            .and_then(|span| entries.iter().find(|x| span.start < x.end));
        let whole_file = e
            .span()
            .is_some_and(|s| s.start == 0 && (s.end == 0 || s.end >= work.trim_end().len()));
        let missing = e
            .message()
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        let (key, message) = match (at, missing) {
            (_, Some(field)) if whole_file => (field.to_string(), "is required".to_string()),
            (Some(x), Some(field)) => (format!("{}.{field}", x.table), "is required".to_string()),
            (Some(x), None) => (
                x.key.clone(),
                format!("{} (line {})", plain_types(e.message()), x.line + 1),
            ),
            (None, _) => (String::new(), e.message().to_string()),
        };
        errors.push(ConfigError { key, message });
        let settable = e.message().starts_with("unknown field")
            || e.message().starts_with("invalid type")
            || e.message().starts_with("invalid value");
        match at {
            Some(x) if settable && !x.header => {
                let mut next = work.clone();
                let blank: String = work[x.start..x.end]
                    .chars()
                    .map(|c| if c == '\n' { c } else { ' ' })
                    .collect();
                next.replace_range(x.start..x.end, &blank);
                if next.parse::<toml::Table>().is_err() {
                    return Err(errors);
                }
                work = next;
            }
            _ => return Err(errors),
        }
    }
    Err(errors)
}

/// serde names Rust's types ("expected u64"); a config's reader wants words.
fn plain_types(message: &str) -> String {
    let mut m = message.to_string();
    for t in [
        "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize",
    ] {
        m = m.replace(&format!("expected {t}"), "expected an integer");
    }
    m.replace("expected f64", "expected a number")
        .replace("expected f32", "expected a number")
}

/// One table header or `key = value` entry of a TOML file, by byte range
/// (a value may run over several lines).
#[derive(Debug)]
struct Entry {
    /// Dotted: `server.tls.cert`, `routes[1].secrets`; for a header, its table.
    key: String,
    /// The table it is in.
    table: String,
    header: bool,
    /// Its first line, counted from 0.
    line: usize,
    start: usize,
    end: usize,
}

/// The file's headers and entries, in order. A light scan, good enough to
/// name what an error points at in a file that has already parsed.
fn entries(text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // Where the value being read stands: open brackets, multi-line strings.
    let mut value = ValueScan::default();
    let mut start = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        let end = start + l.len();
        let t = l.trim();
        if value.open() {
            if let Some(last) = out.last_mut() {
                last.end = end;
            }
        } else if t.starts_with('[') {
            let array = t.starts_with("[[");
            let name = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .replace(['"', '\''], "");
            table = if array {
                let n = arrays.entry(name.clone()).or_insert(0);
                *n += 1;
                format!("{name}[{}]", *n - 1)
            } else {
                // `[routes.x]` under `[[routes]]` belongs to the last route.
                match name.split_once('.') {
                    Some((head, rest)) if arrays.contains_key(head) => {
                        format!("{head}[{}].{rest}", arrays[head] - 1)
                    }
                    _ => name,
                }
            };
            out.push(Entry {
                key: table.clone(),
                table: table.clone(),
                header: true,
                line: i,
                start,
                end,
            });
            start = end;
            continue;
        } else if let Some((k, _)) = t.split_once('=').filter(|_| !t.starts_with('#')) {
            let k = k.trim().replace(['"', '\''], "");
            out.push(Entry {
                key: if table.is_empty() {
                    k
                } else {
                    format!("{table}.{k}")
                },
                table: table.clone(),
                header: false,
                line: i,
                start,
                end,
            });
        }
        value.line(l);
        start = end;
    }
    out
}

/// Follows a value over lines: brackets and braces opened and not yet
/// closed, and multi-line strings (`"""`, `'''`) not yet ended, ignoring what
/// is inside strings and comments.
#[derive(Default)]
struct ValueScan {
    depth: i32,
    /// Inside a multi-line string opened by three of these.
    multi: Option<char>,
}

impl ValueScan {
    fn open(&self) -> bool {
        self.depth > 0 || self.multi.is_some()
    }

    fn line(&mut self, line: &str) {
        let c: Vec<char> = line.chars().collect();
        let triple = |i: usize, q: char| c.get(i..i + 3).is_some_and(|w| w.iter().all(|x| *x == q));
        let (mut quote, mut escaped, mut i) = (None, false, 0);
        while i < c.len() {
            let ch = c[i];
            i += 1;
            if escaped {
                escaped = false;
                continue;
            }
            if let Some(q) = self.multi {
                if ch == '\\' && q == '"' {
                    escaped = true;
                } else if ch == q && triple(i - 1, q) {
                    self.multi = None;
                    i += 2;
                }
                continue;
            }
            if let Some(q) = quote {
                if ch == '\\' && q == '"' {
                    escaped = true;
                } else if ch == q {
                    quote = None;
                }
                continue;
            }
            match ch {
                '"' | '\'' if triple(i - 1, ch) => {
                    self.multi = Some(ch);
                    i += 2;
                }
                '"' | '\'' => quote = Some(ch),
                '#' => break,
                '[' | '{' => self.depth += 1,
                ']' | '}' => self.depth -= 1,
                _ => {}
            }
        }
    }
}

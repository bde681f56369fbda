//! Log output on stderr: JSON, or a pretty line per event in which every
//! control character is escaped, so that no value a client sent can break
//! a line and forge another.

use std::fmt::{self, Write};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; the level comes from `RUST_LOG`.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.fmt_fields(pretty_fields()).init();
    }
}

/// The pretty format's fields: `message`, then `name=value` pairs, with
/// control characters escaped.
pub(crate) fn pretty_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn fmt::Debug| {
            let mut w = Escaped(w);
            if field.name() == "message" {
                write!(w, "{value:?}")
            } else {
                write!(w, "{field}={value:?}")
            }
        },
    )
    .delimited(" ")
}

/// Writes through, turning each control character (U+0000-U+001F, U+007F)
/// into its escape (`\n`, `\u{1b}`).
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(|c: char| c.is_ascii_control()) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("lock"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_value_cannot_forge_a_log_line() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || out.clone())
            .fmt_fields(pretty_fields())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let forged = "x\n2026-11-30T00:00:00Z  INFO authback: forged\u{1b}[31m";
            tracing::info!(session_id = %forged, other = forged, "callback\r\nline");
        });
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r"session_id=x\n2026"), "{text}");
        assert!(text.contains(r"callback\r\nline"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}

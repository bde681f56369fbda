//! What an attempt keeps of the backend's answer (`Excerpt`): its
//! `Content-Type` and the first `BODY_KEPT` bytes of its body. Secrets never
//! reach the store: every configured secret and the delivery's own
//! authorization token are blotted out before the excerpt is cut, and the
//! body is read only as far as that needs.

use base64::Engine as _;
use http_body_util::BodyExt;

use crate::config::Config;
use crate::store::{Excerpt, BODY_KEPT};

/// What a secret is replaced with.
const REDACTED: &[u8] = b"[redacted]";
/// Most bytes of a `Content-Type` kept.
const CONTENT_TYPE_KEPT: usize = 256;

/// The secrets an answer must not carry into the store, longest first, so
/// one that contains another is blotted out whole.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<Vec<u8>>,
}

impl Redactor {
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// Every secret the config holds: the routes' secrets and static
    /// tokens, the upstream signing secret, the admin token and Klarna's
    /// password.
    pub(crate) fn from_config(config: &Config) -> Self {
        let routes = config
            .routes
            .iter()
            .flat_map(|r| r.secrets.iter().chain(&r.static_tokens));
        let others = [
            config.upstream.signing_secret.as_ref(),
            config.admin.token.as_ref(),
            config.klarna.as_ref().and_then(|k| k.password.as_ref()),
        ];
        Redactor::new(
            routes
                .chain(others.into_iter().flatten())
                .map(|s| s.expose()),
        )
    }

    /// How many bytes of a body to read so that whatever is kept can be
    /// redacted: the kept part, and room for a secret that starts in it.
    pub(crate) fn reach(&self, token: &[u8]) -> usize {
        let longest = self.secrets.first().map_or(0, Vec::len);
        BODY_KEPT + longest.max(token.len())
    }

    /// `data` with each secret, and `token`, replaced by `[redacted]`.
    pub(crate) fn redact(&self, data: &[u8], token: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            let hit = self
                .secrets
                .iter()
                .map(Vec::as_slice)
                .chain((!token.is_empty()).then_some(token))
                .filter(|s| rest.starts_with(s))
                .map(<[u8]>::len)
                .max();
            match hit {
                Some(n) => {
                    out.extend_from_slice(REDACTED);
                    i += n;
                }
                None => {
                    out.push(data[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// The excerpt of an answer whose body began with `read` (`whole` when
    /// that is all of it), for a delivery whose token is `token`.
    pub(crate) fn excerpt(
        &self,
        content_type: Option<&[u8]>,
        read: &[u8],
        whole: bool,
        token: &[u8],
    ) -> Excerpt {
        let reach = self.reach(token).min(read.len());
        let mut body = self.redact(&read[..reach], token);
        let truncated = !whole || reach < read.len() || body.len() > BODY_KEPT;
        body.truncate(BODY_KEPT);
        let (body, base64) = match printable(&body, truncated) {
            Some(text) => (text.to_string(), false),
            None => (
                base64::engine::general_purpose::STANDARD.encode(&body),
                true,
            ),
        };
        let content_type = content_type.map(|ct| {
            let ct = self.redact(&ct[..ct.len().min(CONTENT_TYPE_KEPT)], token);
            String::from_utf8_lossy(&ct).into_owned()
        });
        Excerpt {
            content_type,
            body,
            base64,
            truncated,
        }
    }
}

/// `body` as text, when it is UTF-8 with no control characters but tabs and
/// line breaks. A cut body may end inside a character: that end is left out.
fn printable(body: &[u8], cut: bool) -> Option<&str> {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        // An incomplete character at the very end, where the body was cut.
        Err(e) if cut && e.error_len().is_none() => {
            std::str::from_utf8(&body[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .then_some(text)
}

/// Reads `body` up to `cap` bytes: what was read, and whether that is all
/// of it. It stops at `cap`, so the rest of a long body is never read (the
/// connection then closes rather than return to the pool). A body that fails
/// midway gives what came before.
pub(crate) async fn read_prefix<B>(mut body: B, cap: usize) -> (Vec<u8>, bool)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    let mut read = Vec::new();
    while read.len() < cap {
        match body.frame().await {
            None => return (read, true),
            Some(Err(_)) => return (read, false),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
        }
    }
    let whole = read.len() <= cap && body.is_end_stream();
    read.truncate(cap);
    (read, whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new([b"s3cret-route".as_slice(), b"s3cret", b"", b"s3cret"])
    }

    #[test]
    fn secrets_and_the_token_are_blotted_out_longest_first() {
        let r = redactor();
        let out = r.redact(b"a s3cret-route, s3cret and tok-9 and s3cre", b"tok-9");
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "a [redacted], [redacted] and [redacted] and s3cre"
        );
        assert_eq!(r.redact(b"", b""), b"");
        assert_eq!(r.redact(b"nothing here", b""), b"nothing here");
    }

    #[test]
    fn a_json_answer_is_kept_as_text() {
        let e = redactor().excerpt(
            Some(b"application/json"),
            br#"{"error":"bad signature","token":"tok-0001"}"#,
            true,
            b"tok-0001",
        );
        assert_eq!(
            e,
            Excerpt {
                content_type: Some("application/json".into()),
                body: r#"{"error":"bad signature","token":"[redacted]"}"#.into(),
                base64: false,
                truncated: false,
            }
        );
    }

    #[test]
    fn a_long_answer_keeps_its_first_2_kib_redacted_to_the_end() {
        // A secret straddling the cut is redacted before the cut, so no part
        // of it is kept.
        let mut body = vec![b'x'; BODY_KEPT - 3];
        body.extend_from_slice(b"s3cret-route and more");
        let e = redactor().excerpt(None, &body, true, b"");
        assert!(e.truncated && !e.base64);
        assert_eq!(e.body.len(), BODY_KEPT);
        assert!(e.body.ends_with("[re"), "{}", &e.body[BODY_KEPT - 8..]);
        assert!(!e.body.contains("s3c"));
        // Cut inside a character: the partial character is left out.
        let mut body = vec![b'a'; BODY_KEPT - 1];
        body.extend_from_slice("é tail".as_bytes());
        let e = Redactor::default().excerpt(None, &body, true, b"");
        assert!(e.truncated && !e.base64);
        assert_eq!(e.body.len(), BODY_KEPT - 1);
        // Read only in part: truncated, whatever its length.
        let e = Redactor::default().excerpt(None, b"short", false, b"");
        assert!(e.truncated);
    }

    #[test]
    fn bytes_that_are_not_text_are_kept_as_base64() {
        let e = Redactor::default().excerpt(
            Some(b"application/octet-stream"),
            &[0xff, 0x00, 0x01],
            true,
            b"",
        );
        assert_eq!((e.body.as_str(), e.base64), ("/wAB", true));
        let e = Redactor::default().excerpt(None, b"bell\x07", true, b"");
        assert!(e.base64, "control characters are not text");
        let e = Redactor::default().excerpt(None, b"line\r\n\ttab", true, b"");
        assert!(!e.base64);
    }

    #[test]
    fn the_content_type_is_bounded_and_redacted() {
        let long = format!("text/plain; x={}", "y".repeat(1000));
        let e = Redactor::default().excerpt(Some(long.as_bytes()), b"", true, b"");
        assert_eq!(e.content_type.map(|c| c.len()), Some(CONTENT_TYPE_KEPT));
        let e = redactor().excerpt(Some(b"text/plain; s3cret"), b"", true, b"");
        assert_eq!(e.content_type.as_deref(), Some("text/plain; [redacted]"));
    }

    /// A body of endless 1000-byte frames, counting the frames read.
    struct Endless(usize);

    impl http_body::Body for Endless {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            self.0 += 1;
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(
                vec![b'z'; 1000],
            )))))
        }
    }

    #[tokio::test]
    async fn reading_stops_at_the_cap() {
        let full = http_body_util::Full::new(bytes::Bytes::from("hello"));
        let (read, whole) = read_prefix(full, 100).await;
        assert_eq!((read.as_slice(), whole), (b"hello".as_slice(), true));
        let mut endless = Endless(0);
        let (read, whole) = read_prefix(&mut endless, 2500).await;
        assert_eq!((read.len(), whole, endless.0), (2500, false, 3));
    }
}

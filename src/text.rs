//! Small text codecs used across the crate: durations and rates as the config
//! writes them, RFC 3339 and HTTP dates, `Retry-After`, base64url, hex and
//! URL encoding, and the saturating sum that turns a parsed duration into a
//! unix-ms time. Pure functions only (a caller that needs the clock passes
//! it in). The encodings are the well-kept crates' (base64, httpdate, time,
//! percent-encoding, form_urlencoded); durations and rates stay ours, for
//! our error messages and the 100-year cap.

use std::time::Duration;

/// The longest duration the config accepts: 100 years. Anything longer is a
/// typo, and bounding it keeps every deadline computed from it in range.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses a duration written as one or more `<integer><unit>` groups:
/// `250ms`, `2s`, `1m`, `48h`, `1d`, `1h30m`; at most `MAX_DURATION`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.contains(char::is_whitespace) {
        return Err(format!(
            "`{s}`: no spaces in a duration (write e.g. \"30s\", \"1h30m\")"
        ));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{s}` is not a duration (write e.g. \"250ms\", \"2s\", \"48h\")"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => return Err(format!("`{s}` needs a unit: ms, s, m, h or d")),
            other => {
                return Err(format!(
                    "`{s}`: unknown unit `{other}` (use ms, s, m, h or d)"
                ))
            }
        };
        total = total.saturating_add(part);
        if total > MAX_DURATION {
            return Err(format!("`{s}`: too large (at most 100 years)"));
        }
    }
    Ok(total)
}

/// Formats a duration the way the config writes it (`90s` -> `90s`, `3600s` -> `1h`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s != 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s != 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A rate written as `N/s`, `N/m` or `N/h`: `count` events per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let (n, unit) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not a rate (write e.g. \"20/m\")"))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: `{n}` is not a whole number"))?;
    if count == 0 {
        return Err(format!("`{s}`: the count must be at least 1"));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(format!("`{s}`: unknown unit `{other}` (use s, m or h)")),
    };
    Ok(Rate { count, per })
}

/// Unix seconds to `2026-11-23T21:00:00Z`; a time past the year 9999 (a
/// token can name one) shows as the last second of 9999.
pub fn rfc3339(unix_secs: u64) -> String {
    let last = "9999-12-31T23:59:59Z";
    let Ok(secs) = i64::try_from(unix_secs) else {
        return last.into();
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| last.into())
}

/// Unix milliseconds to `2026-11-23T21:00:00.042Z`, always three digits
/// of the second; past the year 9999, the last millisecond of 9999. Every
/// access log line has one: written digit by digit, without the formatting
/// machinery (a fifth of the line's cost went there).
pub(crate) fn rfc3339_ms(unix_ms: u64) -> String {
    const LAST: u64 = 253_402_300_799_999;
    let ms = unix_ms.min(LAST);
    let secs = ms / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    // Days to the civil date (H. Hinnant's `civil_from_days`), from 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, day_secs / 3600);
    put(14, 2, day_secs / 60 % 60);
    put(17, 2, day_secs % 60);
    put(20, 3, ms % 1000);
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, or one of the two
/// obsolete forms RFC 9110 §5.6.7 asks recipients to accept) to unix seconds.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// `Retry-After` as delta-seconds or an IMF-fixdate, the wait it asks for
/// when the time is `now_secs` (unix seconds); a date already past is no
/// wait. The value comes from the network and may be as long as
/// `u64::MAX` seconds: add it to a time only with `saturating_add_ms`.
pub fn parse_retry_after(value: &str, now_secs: u64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(Duration::from_secs(at.saturating_sub(now_secs)))
}

/// `at_ms` (unix milliseconds) plus `wait`, saturating at `u64::MAX` rather
/// than wrapping: a wrapped sum lies in the past, and work scheduled in the
/// past is done again at once, in a loop.
pub(crate) fn saturating_add_ms(at_ms: u64, wait: Duration) -> u64 {
    at_ms.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

/// base64url without padding (RFC 4648 §5), as the token format uses.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Standard base64 with padding (RFC 4648 §4), as HTTP Basic uses.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Lower-case hex. Ours, not a crate's: no hex crate is in the dependency
/// tree, and this is eight lines.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// application/x-www-form-urlencoded encoding of one value.
pub(crate) fn form_encode(out: &mut String, value: &str) {
    out.extend(form_urlencoded::byte_serialize(value.as_bytes()));
}

/// Everything but `A-Z a-z 0-9 - . _ ~` is escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment.
pub(crate) fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Percent-decodes a query value (`+` is a space), as PHP's `urldecode`
/// does: a broken escape stays as it is. `None` when the result is not
/// UTF-8.
pub fn query_decode(value: &str) -> Option<String> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The first value of `name` in a query string, both decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Redacts a secret-bearing string to its last four characters.
pub(crate) fn redact(s: &str) -> String {
    let n = s.chars().count();
    if n <= 4 {
        return "…".into();
    }
    let tail: String = s.chars().skip(n - 4).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_durations_are_refused_not_saturated() {
        // Found by the text_parsers fuzz target: this parsed to ~584 billion
        // years, which did not print back, and would overflow a deadline.
        assert!(parse_duration("2888888888881h88888888888888881h88888888888m").is_err());
        assert!(parse_duration("36501d").is_err());
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        assert!(parse_duration(&format_duration(MAX_DURATION)).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("30 s").is_err_and(|e| e.contains("no spaces")));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("48h"), Ok(Duration::from_secs(48 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten s").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("20/m"),
            Ok(Rate {
                count: 20,
                per: Duration::from_secs(60)
            })
        );
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("20").is_err());
        assert!(parse_rate("20/d").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(2_000_000_000), "2033-05-18T03:33:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_ms(2_000_000_000_042), "2033-05-18T03:33:20.042Z");
        assert_eq!(rfc3339_ms(999), "1970-01-01T00:00:00.999Z");
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(951_782_400_007), "2000-02-29T00:00:00.007Z");
        // Digit by digit, it agrees with the library to the year 9999.
        let mut secs = 0;
        while secs < 253_402_300_800 {
            let whole = rfc3339(secs);
            let want = format!("{}.123Z", whole.trim_end_matches('Z'));
            assert_eq!(rfc3339_ms(secs * 1000 + 123), want);
            secs += 7_919_993;
        }
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("soon"), None);
        // A year that would overflow the calendar arithmetic is refused, not a panic.
        assert_eq!(
            parse_http_date("Sun, 06 Nov 99999999999999 08:49:37 GMT"),
            None
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = 1_700_000_000;
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:27 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after("later", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        // Too large for u64: not a delta-seconds, not a date.
        assert_eq!(parse_retry_after("18446744073709551616", now), None);
    }

    #[test]
    fn hostile_retry_after_parses_and_saturates_when_added() {
        let now_ms = 1_700_000_000_000;
        let max = parse_retry_after("18446744073709551615", now_ms / 1000).expect("u64::MAX");
        assert_eq!(max, Duration::from_secs(u64::MAX));
        assert_eq!(saturating_add_ms(now_ms, max), u64::MAX);
        assert_eq!(saturating_add_ms(u64::MAX, max), u64::MAX);
        assert_eq!(saturating_add_ms(0, Duration::MAX), u64::MAX);
        // The latest date there is: far, but in range, and never before now.
        let far =
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now_ms / 1000).expect("a date");
        assert_eq!(far, Duration::from_secs(253_402_300_799 - 1_700_000_000));
        assert!(saturating_add_ms(now_ms, far) > now_ms);
        assert_eq!(saturating_add_ms(u64::MAX - 5, far), u64::MAX);
        // Ordinary sums are exact.
        assert_eq!(
            saturating_add_ms(now_ms, Duration::from_millis(1500)),
            now_ms + 1500
        );
        assert_eq!(
            saturating_add_ms(now_ms, Duration::from_micros(999)),
            now_ms
        );
    }

    #[test]
    fn codecs() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(
            base64(b"Aladdin:open sesame?"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZT8="
        );
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
        assert_eq!(path_segment("a b/c~d"), "a%20b%2Fc~d");
        assert_eq!(hex(&[0, 0xab]), "00ab");
        let mut s = String::new();
        form_encode(&mut s, "a b&c=d/é");
        assert_eq!(s, "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            query_param("a=1&token=v1.2%2E3&b", "token").as_deref(),
            Some("v1.2.3")
        );
        assert_eq!(query_param("a=1", "token"), None);
        assert_eq!(redact("abcdefgh"), "…efgh");
        assert_eq!(redact("abc"), "…");
    }
}

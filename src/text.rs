//! Small text codecs used across the crate: durations and rates as the config
//! writes them, RFC 3339 and HTTP dates, `Retry-After`, base64url, hex and
//! URL encoding, and the saturating sum that turns a parsed duration into a
//! unix-ms time. Pure functions only (a caller that needs the clock passes
//! it in); nothing here allocates more than its output.

use std::time::Duration;

/// The longest duration the config accepts: 100 years. Anything longer is a
/// typo, and bounding it keeps every deadline computed from it in range.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

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

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds to `2026-11-23T21:00:00Z`.
pub fn rfc3339(unix_secs: u64) -> String {
    let secs = unix_secs as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form
/// `Retry-After` uses for a date. Other obsolete HTTP date forms are refused.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let (_, rest) = s.split_once(", ")?;
    let mut it = rest.split(' ');
    let day: u32 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let se: i64 = hms.next()?.parse().ok()?;
    if it.next()? != "GMT" || it.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    let t = days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(t).ok()
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
pub fn saturating_add_ms(at_ms: u64, wait: Duration) -> u64 {
    at_ms.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

/// base64url without padding (RFC 4648 §5), as the token format uses.
pub fn base64url(bytes: &[u8]) -> String {
    base64_with(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
    )
}

/// Standard base64 with padding (RFC 4648 §4), as HTTP Basic uses.
pub fn base64(bytes: &[u8]) -> String {
    base64_with(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true,
    )
}

fn base64_with(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            for _ in chars..4 {
                out.push('=');
            }
        }
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// application/x-www-form-urlencoded encoding of one value.
pub fn form_encode(out: &mut String, value: &str) {
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push_str(&hex(&[b]).to_ascii_uppercase());
            }
        }
    }
}

/// Percent-encodes one path segment: everything but `A-Z a-z 0-9 - . _ ~`.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push_str(&hex(&[b]).to_ascii_uppercase());
        }
    }
    out
}

/// Percent-decodes a query value (`+` is a space). `None` when the result is
/// not UTF-8 or an escape is broken.
pub fn query_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = (*bytes.get(i + 1)? as char).to_digit(16)?;
                let lo = (*bytes.get(i + 2)? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The first value of `name` in a query string, decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| query_decode(v)).flatten()
    })
}

/// Redacts a secret-bearing string to its last four characters.
pub fn redact(s: &str) -> String {
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

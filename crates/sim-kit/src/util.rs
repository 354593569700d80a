//! Small helpers every server model needs.

use std::sync::{Mutex, MutexGuard};

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

/// Locks `m`, going on after a panic in another holder (a test that panicked must not wedge the
/// simulator for the others).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Percent-decodes a URL component; `+` stays `+` (paths, and Basic credentials as RFC 7617
/// reads them). An invalid escape is kept as it is.
pub fn percent_decode(s: &str) -> String {
    decode(s, false)
}

/// `application/x-www-form-urlencoded` decoding of one component: `+` is a space, then
/// percent-decoding (RFC 6749 §2.3.1 client credentials, query strings).
pub fn form_decode(s: &str) -> String {
    decode(s, true)
}

/// [`form_decode`] that refuses what a strict decoder (JavaScript's `decodeURIComponent`)
/// throws on: a `%` not followed by two hex digits, or escapes that are not UTF-8.
pub fn form_decode_strict(s: &str) -> Option<String> {
    String::from_utf8(decode_bytes(s, true, true)?).ok()
}

fn decode(s: &str, plus_is_space: bool) -> String {
    let out = decode_bytes(s, plus_is_space, false).unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes `s`; a bad escape is kept as it is, or makes it `None` when `strict`.
fn decode_bytes(s: &str, plus_is_space: bool, strict: bool) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3);
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None if strict => return None,
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

/// The token of `Authorization: Bearer <token>` (trimmed), if the header has that form: the
/// scheme exactly `Bearer` and one space. Servers differ here (case, whitespace), so a simulator
/// uses this only when it models its server's own reading (see its fidelity ledger).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Whether `Content-Type` names `application/json` (any parameters, any case).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Adds `Retry-After: <secs>` to `resp` when `secs` is given.
pub fn set_retry_after(resp: &mut Response, secs: Option<u64>) {
    if let Some(secs) = secs
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

/// One page of `items`: at most `limit` of them (all when `None`) after skipping `offset`.
pub fn window<T>(
    items: impl IntoIterator<Item = T>,
    offset: usize,
    limit: Option<usize>,
) -> Vec<T> {
    items
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// Checks every recorded item with `check`; `Ok` with how many were checked, or one line per
/// problem, each prefixed with `label(item)` and `": "`.
pub fn validate_all<T>(
    items: &[T],
    label: impl Fn(&T) -> String,
    check: impl Fn(&T) -> Result<(), Vec<String>>,
) -> Result<usize, Vec<String>> {
    let mut errors = Vec::new();
    for item in items {
        if let Err(e) = check(item) {
            let label = label(item);
            errors.extend(e.into_iter().map(|e| format!("{label}: {e}")));
        }
    }
    if errors.is_empty() {
        Ok(items.len())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b+c%zz%4");
        assert_eq!(form_decode("a%2Bb+c"), "a+b c");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(form_decode("%4"), "%4");
        assert_eq!(
            form_decode_strict("a%2Bb%25c%3Ad+%C3%A9").as_deref(),
            Some("a+b%c:d é")
        );
        for bad in ["%zz", "%4", "%", "%C3"] {
            assert_eq!(form_decode_strict(bad), None, "{bad}");
        }
    }

    #[test]
    fn headers() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        assert!(!is_json(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  abc "),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        assert!(is_json(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn windows() {
        assert_eq!(window(1..=5, 1, Some(2)), vec![2, 3]);
        assert_eq!(window(1..=5, 3, None), vec![4, 5]);
        assert_eq!(window(1..=5, 9, Some(2)), Vec::<i32>::new());
    }

    #[test]
    fn validate_all_labels_each_problem() {
        let items = [1, 2, 3];
        let r = validate_all(
            &items,
            |i| format!("item {i}"),
            |i| {
                if i % 2 == 1 {
                    Ok(())
                } else {
                    Err(vec!["even".into()])
                }
            },
        );
        assert_eq!(r, Err(vec!["item 2: even".to_string()]));
        assert_eq!(
            validate_all(&items[..1], |_| String::new(), |_| Ok(())),
            Ok(1)
        );
    }
}

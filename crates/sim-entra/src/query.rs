//! OData query options as Microsoft Graph's directory endpoints accept them: `$filter` (the
//! simple subset Graph supports without advanced query parameters), `$select`, `$top`,
//! `$skiptoken` and `$count`.

use serde_json::{Map, Value};

/// One `$filter` clause.
#[derive(Clone, Debug, PartialEq)]
pub enum Clause {
    /// `prop eq literal`.
    Eq(String, Value),
    /// `startswith(prop,'text')`.
    StartsWith(String, String),
}

/// Why a `$filter` was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterError {
    /// Not OData at all (400 `BadRequest`).
    Syntax(String),
    /// Valid OData Graph does not support here (400 `Request_UnsupportedQuery`).
    Unsupported(String),
}

/// Splits on ` and ` outside quotes (case-insensitive).
fn split_outside_quotes(s: &str, sep: &str) -> Vec<String> {
    let lower = s.to_ascii_lowercase();
    let mut parts = Vec::new();
    let mut in_quote = false;
    let mut start = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            in_quote = !in_quote;
        } else if !in_quote && lower[i..].starts_with(sep) {
            parts.push(s[start..i].to_string());
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(s[start..].to_string());
    parts
}

fn literal(raw: &str) -> Result<Value, FilterError> {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Ok(Value::String(inner.replace("''", "'")));
    }
    match raw {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        "null" => Ok(Value::Null),
        _ => raw.parse::<i64>().map(Value::from).map_err(|_| {
            FilterError::Syntax(format!("Invalid filter clause: '{raw}' is not a literal."))
        }),
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/')
}

/// Parses a `$filter` into clauses joined by `and`.
pub fn parse_filter(filter: &str) -> Result<Vec<Clause>, FilterError> {
    let f = filter.trim();
    if f.is_empty() {
        return Err(FilterError::Syntax(
            "Invalid filter clause: the filter is empty.".into(),
        ));
    }
    if split_outside_quotes(f, " or ").len() > 1 {
        return Err(FilterError::Unsupported("Unsupported Query.".into()));
    }
    let mut out = Vec::new();
    for part in split_outside_quotes(f, " and ") {
        let mut c = part.trim();
        while let Some(inner) = c.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
            c = inner.trim();
        }
        let lower = c.to_ascii_lowercase();
        if lower.starts_with("startswith(") {
            let args = c["startswith(".len()..]
                .strip_suffix(')')
                .ok_or_else(|| FilterError::Syntax(format!("Invalid filter clause: {c}")))?;
            let (prop, text) = args
                .split_once(',')
                .ok_or_else(|| FilterError::Syntax(format!("Invalid filter clause: {c}")))?;
            let Value::String(text) = literal(text)? else {
                return Err(FilterError::Syntax(format!("Invalid filter clause: {c}")));
            };
            out.push(Clause::StartsWith(prop.trim().to_string(), text));
            continue;
        }
        if let Some(open) = c.find('(') {
            let func = &c[..open];
            return Err(FilterError::Unsupported(format!(
                "Unsupported query function '{}'.",
                func.trim()
            )));
        }
        let tokens: Vec<&str> = c.splitn(3, ' ').collect();
        let [prop, op, value] = tokens.as_slice() else {
            return Err(FilterError::Syntax(format!("Invalid filter clause: {c}")));
        };
        if !is_ident(prop) {
            return Err(FilterError::Syntax(format!("Invalid filter clause: {c}")));
        }
        match op.to_ascii_lowercase().as_str() {
            "eq" => out.push(Clause::Eq(prop.to_string(), literal(value)?)),
            "ne" => {
                return Err(FilterError::Unsupported(
                    "Unsupported property filter clause operator 'NotEqualsMatch'.".into(),
                ));
            }
            "ge" | "le" | "gt" | "lt" | "in" | "has" => {
                return Err(FilterError::Unsupported("Unsupported Query.".into()));
            }
            _ => return Err(FilterError::Syntax(format!("Invalid filter clause: {c}"))),
        }
    }
    Ok(out)
}

impl Clause {
    /// The property the clause reads.
    pub fn property(&self) -> &str {
        match self {
            Clause::Eq(p, _) | Clause::StartsWith(p, _) => p,
        }
    }

    /// Whether an object matches (string comparisons ignore case, as the directory's do).
    pub fn matches(&self, obj: &Map<String, Value>) -> bool {
        match self {
            Clause::Eq(p, v) => match (obj.get(p).unwrap_or(&Value::Null), v) {
                (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
                (a, b) => a == b,
            },
            Clause::StartsWith(p, t) => obj
                .get(p)
                .and_then(Value::as_str)
                .is_some_and(|s| s.to_lowercase().starts_with(&t.to_lowercase())),
        }
    }
}

/// `$skiptoken` for an offset: opaque to clients, as Graph's are.
pub fn skiptoken(offset: usize) -> String {
    format!("RFNwdAIAAQAAAB{offset:08x}")
}

/// The offset a `$skiptoken` holds, if it is one of ours.
pub fn parse_skiptoken(token: &str) -> Option<usize> {
    let hex = token.strip_prefix("RFNwdAIAAQAAAB")?;
    if hex.len() != 8 {
        return None;
    }
    usize::from_str_radix(hex, 16).ok()
}

/// `$top`: an integer from 1 to 999.
pub fn parse_top(raw: &str) -> Option<usize> {
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=999).contains(n))
}

/// Percent-encodes a query key or value (spaces as `%20`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',' | b'$') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_parse_like_graph() {
        assert_eq!(
            parse_filter("clientId eq 'abc' and consentType eq 'AllPrincipals'").unwrap(),
            vec![
                Clause::Eq("clientId".into(), json!("abc")),
                Clause::Eq("consentType".into(), json!("AllPrincipals"))
            ]
        );
        assert_eq!(
            parse_filter("startswith(displayName,'Co der')").unwrap(),
            vec![Clause::StartsWith("displayName".into(), "Co der".into())]
        );
        assert_eq!(
            parse_filter("displayName eq 'a and b'").unwrap(),
            vec![Clause::Eq("displayName".into(), json!("a and b"))]
        );
        assert!(matches!(
            parse_filter("appId ne 'x'"),
            Err(FilterError::Unsupported(_))
        ));
        assert!(matches!(
            parse_filter("appId eq 'x' or appId eq 'y'"),
            Err(FilterError::Unsupported(_))
        ));
        assert!(matches!(
            parse_filter("endswith(displayName,'x')"),
            Err(FilterError::Unsupported(_))
        ));
        assert!(matches!(parse_filter("appId"), Err(FilterError::Syntax(_))));
        let obj = json!({"displayName": "Coder", "isOrganizationDefault": false});
        let obj = obj.as_object().unwrap();
        assert!(Clause::Eq("displayName".into(), json!("coder")).matches(obj));
        assert!(Clause::Eq("isOrganizationDefault".into(), json!(false)).matches(obj));
        assert!(Clause::StartsWith("displayName".into(), "co".into()).matches(obj));
    }

    #[test]
    fn paging_tokens() {
        assert_eq!(parse_skiptoken(&skiptoken(42)), Some(42));
        assert_eq!(parse_skiptoken("garbage"), None);
        assert_eq!(parse_top("999"), Some(999));
        assert_eq!(parse_top("0"), None);
        assert_eq!(parse_top("1000"), None);
        assert_eq!(parse_top("x"), None);
        assert_eq!(encode("clientId eq 'a'"), "clientId%20eq%20%27a%27");
    }
}

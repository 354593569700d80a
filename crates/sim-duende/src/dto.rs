//! `ClientApiDto` of the Skoruba admin API (`contracts/ClientApiDto.cs`, `contracts/IClientApiDto.d.ts`):
//! every field in declaration order with its kind and its default, model binding as ASP.NET Core's
//! System.Text.Json web defaults do it (case-insensitive names, numbers also from strings, unknown
//! properties ignored, omitted properties at the DTO default), and the strict contract check the
//! tests apply to what the operator sends.

use serde_json::{Map, Value, json};

/// The kind of a DTO property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `int`.
    Int,
    /// `int?`.
    NullableInt,
    /// `bool`.
    Bool,
    /// `string` (nullable reference).
    Str,
    /// `List<string>`.
    StrList,
    /// `List<ClientClaimApiDto>` (`{id, type, value}`).
    Claims,
    /// `List<ClientPropertyApiDto>` (`{id, key, value}`).
    Properties,
    /// `DateTime?`.
    DateTime,
    /// `TimeSpan` (`"hh:mm:ss"`).
    TimeSpan,
}

/// One property: camelCase name, kind, default (the DTO's initializer).
pub struct Field {
    /// camelCase JSON name.
    pub name: &'static str,
    /// Kind.
    pub kind: Kind,
    /// Default when the property is omitted.
    pub default: fn() -> Value,
}

macro_rules! fields {
    ($( $name:literal : $kind:ident = $default:tt ),* $(,)?) => {
        /// Every `ClientApiDto` property, in declaration order (the order the API serializes).
        pub const FIELDS: &[Field] = &[ $( Field { name: $name, kind: Kind::$kind, default: || json!($default) } ),* ];
    };
}

fields! {
    "absoluteRefreshTokenLifetime": Int = 2592000,
    "accessTokenLifetime": Int = 3600,
    "consentLifetime": NullableInt = null,
    "accessTokenType": Int = 0,
    "allowAccessTokensViaBrowser": Bool = false,
    "allowOfflineAccess": Bool = false,
    "allowPlainTextPkce": Bool = false,
    "allowRememberConsent": Bool = true,
    "alwaysIncludeUserClaimsInIdToken": Bool = false,
    "alwaysSendClientClaims": Bool = false,
    "authorizationCodeLifetime": Int = 300,
    "frontChannelLogoutUri": Str = null,
    "frontChannelLogoutSessionRequired": Bool = true,
    "backChannelLogoutUri": Str = null,
    "backChannelLogoutSessionRequired": Bool = true,
    "clientId": Str = null,
    "clientName": Str = null,
    "clientUri": Str = null,
    "description": Str = null,
    "enabled": Bool = true,
    "enableLocalLogin": Bool = true,
    "id": Int = 0,
    "identityTokenLifetime": Int = 300,
    "includeJwtId": Bool = false,
    "logoUri": Str = null,
    "clientClaimsPrefix": Str = "client_",
    "pairWiseSubjectSalt": Str = null,
    "protocolType": Str = "oidc",
    "refreshTokenExpiration": Int = 1,
    "refreshTokenUsage": Int = 1,
    "slidingRefreshTokenLifetime": Int = 1296000,
    "requireClientSecret": Bool = true,
    "requireConsent": Bool = true,
    "requirePkce": Bool = false,
    "updateAccessTokenClaimsOnRefresh": Bool = false,
    "postLogoutRedirectUris": StrList = [],
    "identityProviderRestrictions": StrList = [],
    "redirectUris": StrList = [],
    "allowedCorsOrigins": StrList = [],
    "allowedGrantTypes": StrList = [],
    "allowedScopes": StrList = [],
    "claims": Claims = [],
    "properties": Properties = [],
    "updated": DateTime = null,
    "lastAccessed": DateTime = null,
    "userSsoLifetime": NullableInt = null,
    "userCodeType": Str = null,
    "deviceCodeLifetime": Int = 300,
    "requireRequestObject": Bool = false,
    "cibaLifetime": NullableInt = null,
    "pollingInterval": NullableInt = null,
    "coordinateLifetimeWithUserSession": Bool = false,
    "requireDPoP": Bool = false,
    "dPoPValidationMode": Int = 0,
    "dPoPClockSkew": TimeSpan = "00:05:00",
    "pushedAuthorizationLifetime": NullableInt = null,
    "requirePushedAuthorization": Bool = false,
    "initiateLoginUri": Str = null,
    "allowedIdentityTokenSigningAlgorithms": StrList = [],
    "nonEditable": Bool = false,
}

/// The field named `name` (case-insensitive, as System.Text.Json's web defaults match).
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// A client at every default (`clientId`/`clientName` still null).
pub fn defaults() -> Map<String, Value> {
    FIELDS
        .iter()
        .map(|f| (f.name.to_string(), (f.default)()))
        .collect()
}

/// A model-binding or validation error: the key of `errors` and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindError {
    /// `$.accessTokenLifetime`, `ClientId`…
    pub key: String,
    /// The message.
    pub message: String,
}

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Int => "System.Int32",
        Kind::NullableInt => "System.Nullable`1[System.Int32]",
        Kind::Bool => "System.Boolean",
        Kind::Str => "System.String",
        Kind::StrList => "System.Collections.Generic.List`1[System.String]",
        Kind::Claims => {
            "System.Collections.Generic.List`1[Skoruba.Duende.IdentityServer.Admin.UI.Api.Dtos.Clients.ClientClaimApiDto]"
        }
        Kind::Properties => {
            "System.Collections.Generic.List`1[Skoruba.Duende.IdentityServer.Admin.UI.Api.Dtos.Clients.ClientPropertyApiDto]"
        }
        Kind::DateTime => "System.Nullable`1[System.DateTime]",
        Kind::TimeSpan => "System.TimeSpan",
    }
}

/// An `int` as System.Text.Json reads it with `AllowReadingFromString`.
fn int32(v: &Value) -> Option<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    (i64::from(i32::MIN)..=i64::from(i32::MAX))
        .contains(&n)
        .then_some(n)
}

/// `hh:mm:ss` or `d.hh:mm:ss` (with optional fraction).
fn timespan_ok(s: &str) -> bool {
    let rest = match s.split_once('.') {
        Some((d, r)) if d.chars().all(|c| c.is_ascii_digit()) && r.contains(':') => r,
        _ => s,
    };
    let parts: Vec<&str> = rest.split(':').collect();
    parts.len() == 3
        && parts[..2]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && parts[2]
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// An ISO 8601 date-time as the server stores and shows it: System.Text.Json reads it (a `Z` or
/// an offset makes it UTC, converted), Npgsql's legacy timestamp mode stores it in a
/// `timestamp without time zone` column (microseconds), and it is written back without a zone,
/// trailing zeros of the fraction trimmed: `2026-01-05T09:30:00`, `2026-01-05T09:30:00.25`.
pub fn normalize_datetime(s: &str) -> Option<String> {
    let civil = match s.parse::<jiff::Timestamp>() {
        Ok(t) => t.to_zoned(jiff::tz::TimeZone::UTC).datetime(),
        Err(_) => s.parse::<jiff::civil::DateTime>().ok()?,
    };
    if s.len() < 19 || s.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let micros = civil.subsec_nanosecond() / 1000;
    let mut out = civil.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if micros > 0 {
        let frac = format!("{micros:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    Some(out)
}

/// One property's value, converted as model binding would, or the binding error.
fn bind_value(f: &Field, v: &Value) -> Result<Value, String> {
    let bad = || {
        format!(
            "The JSON value could not be converted to {}. Path: $.{}",
            type_name(f.kind),
            f.name
        )
    };
    let entries = |key_name: &str| -> Result<Value, String> {
        match v {
            Value::Null => Ok(json!([])),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    let o = i.as_object().ok_or_else(bad)?;
                    let get = |k: &str| {
                        o.iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(k))
                            .map(|(_, v)| v)
                    };
                    let s = |k: &str| match get(k) {
                        None | Some(Value::Null) => Ok(Value::Null),
                        Some(Value::String(s)) => Ok(json!(s)),
                        Some(_) => Err(bad()),
                    };
                    Ok(
                        json!({"id": get("id").map(int32).unwrap_or(Some(0)).ok_or_else(bad)?,
                              key_name: s(key_name)?, "value": s("value")?}),
                    )
                })
                .collect::<Result<Vec<_>, String>>()
                .map(Value::Array),
            _ => Err(bad()),
        }
    };
    match f.kind {
        Kind::Int => int32(v).map(|n| json!(n)).ok_or_else(bad),
        Kind::NullableInt if v.is_null() => Ok(Value::Null),
        Kind::NullableInt => int32(v).map(|n| json!(n)).ok_or_else(bad),
        Kind::Bool => v.as_bool().map(Value::Bool).ok_or_else(bad),
        Kind::Str => match v {
            Value::Null | Value::String(_) => Ok(v.clone()),
            _ => Err(bad()),
        },
        // A null list is mapped to an empty one when the entity is built.
        Kind::StrList => match v {
            Value::Null => Ok(json!([])),
            Value::Array(a) if a.iter().all(Value::is_string) => Ok(v.clone()),
            _ => Err(bad()),
        },
        Kind::Claims => entries("type"),
        Kind::Properties => entries("key"),
        Kind::DateTime => match v {
            Value::Null => Ok(Value::Null),
            Value::String(s) => normalize_datetime(s).map(Value::String).ok_or_else(bad),
            _ => Err(bad()),
        },
        Kind::TimeSpan => match v {
            Value::String(s) if timespan_ok(s) => Ok(v.clone()),
            _ => Err(bad()),
        },
    }
}

/// Binds a request body to a `ClientApiDto` as ASP.NET Core would: omitted properties take their
/// defaults, unknown ones are ignored, then `[Required]` is checked on `clientId` and
/// `clientName`. Errors come back all at once, as the automatic 400 lists them.
pub fn bind(body: &Value) -> Result<Map<String, Value>, Vec<BindError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![
            BindError {
                key: "$".into(),
                message: "The JSON value could not be converted to Skoruba.Duende.IdentityServer.Admin.UI.Api.Dtos.Clients.ClientApiDto. Path: $".into(),
            },
            BindError {
                key: "client".into(),
                message: "The client field is required.".into(),
            },
        ]);
    };
    let mut out = defaults();
    let mut errors = Vec::new();
    for (k, v) in obj {
        let Some(f) = field(k) else { continue };
        match bind_value(f, v) {
            Ok(v) => {
                out.insert(f.name.to_string(), v);
            }
            Err(message) => errors.push(BindError {
                key: format!("$.{k}"),
                message,
            }),
        }
    }
    if !errors.is_empty() {
        // A property that cannot be converted stops deserialization: the parameter is null too.
        errors.truncate(1);
        errors.push(BindError {
            key: "client".into(),
            message: "The client field is required.".into(),
        });
        return Err(errors);
    }
    for (name, key) in [("clientId", "ClientId"), ("clientName", "ClientName")] {
        if out
            .get(name)
            .and_then(Value::as_str)
            .is_none_or(|s| s.is_empty())
        {
            errors.push(BindError {
                key: key.into(),
                message: format!("The {key} field is required."),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Strict contract check of a body an API client sends for a full replace: a JSON object with
/// every `ClientApiDto` property (anything left out would be reset to its default), each of its
/// type, and nothing else.
pub fn validate_strict(body: &Value) -> Result<(), Vec<String>> {
    let Some(obj) = body.as_object() else {
        return Err(vec!["the body is not a JSON object".into()]);
    };
    let mut issues = Vec::new();
    for f in FIELDS {
        match obj.get(f.name) {
            None => issues.push(format!(
                "{} is missing: the API would reset it to {}",
                f.name,
                (f.default)()
            )),
            Some(v) => {
                if let Err(e) = bind_value(f, v) {
                    issues.push(e);
                } else if matches!(f.kind, Kind::Int | Kind::NullableInt) && v.is_string() {
                    issues.push(format!("{} is a string, not a number", f.name));
                }
            }
        }
    }
    for k in obj.keys() {
        if !FIELDS.iter().any(|f| f.name == k) {
            issues.push(format!("{k} is not a ClientApiDto property"));
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitted_fields_take_the_dto_defaults() {
        let c = bind(
            &json!({"ClientID": "x", "clientName": "X", "accessTokenLifetime": "60", "nope": 1}),
        )
        .unwrap();
        assert_eq!(c["clientId"], json!("x"));
        assert_eq!(c["accessTokenLifetime"], json!(60));
        assert_eq!(c["requireConsent"], json!(true));
        assert_eq!(c["requirePkce"], json!(false));
        assert_eq!(c["refreshTokenUsage"], json!(1));
        assert!(!c.contains_key("nope"));
        assert_eq!(c.len(), FIELDS.len());
    }

    #[test]
    fn binding_errors() {
        let e = bind(&json!({"clientId": "x", "clientName": "X", "enabled": "yes"})).unwrap_err();
        assert_eq!(e[0].key, "$.enabled");
        assert_eq!(e[1].key, "client");
        let e = bind(&json!({"clientId": "", "accessTokenLifetime": 1})).unwrap_err();
        assert_eq!(
            e.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["ClientId", "ClientName"]
        );
        assert!(
            bind(&json!({"clientId": "x", "clientName": "X", "id": 4_294_967_296u64})).is_err()
        );
        assert!(bind(&json!({"clientId": "x", "clientName": "X", "dPoPClockSkew": null})).is_err());
    }

    #[test]
    fn date_times_are_stored_as_the_server_shows_them() {
        assert_eq!(
            normalize_datetime("2026-01-05T09:30:00.000Z").as_deref(),
            Some("2026-01-05T09:30:00")
        );
        assert_eq!(
            normalize_datetime("2026-01-05T11:30:00.2500001+02:00").as_deref(),
            Some("2026-01-05T09:30:00.25")
        );
        assert_eq!(
            normalize_datetime("2026-01-05T09:30:00").as_deref(),
            Some("2026-01-05T09:30:00")
        );
        assert_eq!(normalize_datetime("2026-01-05"), None);
        assert_eq!(normalize_datetime("yesterday"), None);
    }

    #[test]
    fn strict_check_wants_the_whole_dto() {
        let mut c = defaults();
        c.insert("clientId".into(), json!("x"));
        c.insert("clientName".into(), json!("X"));
        assert_eq!(validate_strict(&Value::Object(c.clone())), Ok(()));
        c.remove("requirePkce");
        c.insert("extra".into(), json!(1));
        assert_eq!(validate_strict(&Value::Object(c)).unwrap_err().len(), 2);
    }
}

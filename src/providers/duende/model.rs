//! The pure part of the Duende provider, shared by both backends: the refresh columns of a
//! client (`Clients` row or `ClientApiDto`), their effective meaning in Duende, findings, and the
//! plan (the new values of the columns the operator owns).
//!
//! Duende semantics (`DefaultRefreshTokenService`, `Models.Client`):
//! - `AllowOfflineAccess` enables the implicit `offline_access` scope and the refresh-token grant;
//!   an authorization request with `offline_access` fails `invalid_scope` without it.
//! - `RefreshTokenExpiration` `Absolute` (1): a token lives `AbsoluteRefreshTokenLifetime` seconds
//!   from issue; `0` means it is expired at once. `Sliding` (0): each use extends it by
//!   `SlidingRefreshTokenLifetime`, capped at `AbsoluteRefreshTokenLifetime` unless that is `0`
//!   (no cap). The sliding lifetime is the idle timeout.
//! - `RefreshTokenUsage` `ReUse` (0) or `OneTimeOnly` (1, rotation on every use, with no reuse
//!   window).

use std::time::Duration;

use super::KIND;
use crate::crd::Rotation;
use crate::providers::{
    Change, CoderNeeds, DesiredSettings, Finding, IdpSettings, Observation, ProviderError,
    show_duration,
};

/// `TokenUsage.ReUse`.
pub const REUSE: i64 = 0;
/// `TokenUsage.OneTimeOnly`.
pub const ONE_TIME_ONLY: i64 = 1;
/// `TokenExpiration.Sliding`.
pub const SLIDING: i64 = 0;
/// `TokenExpiration.Absolute`.
pub const ABSOLUTE: i64 = 1;
/// The largest lifetime a column holds (`int`, seconds).
pub const MAX_SECONDS: u64 = i32::MAX as u64;

/// Finding: refresh tokens rotate on every use (`OneTimeOnly`) with no reuse window (the reason
/// every provider gives strict one-time refresh tokens).
pub const ONE_TIME_ONLY_REASON: &str = "StrictRefreshTokenRotation";
/// Finding: Absolute expiration with a lifetime of 0 (refresh tokens are expired when issued).
pub const EXPIRED_AT_ISSUE: &str = "DuendeRefreshTokensExpireAtIssue";
/// Finding: the sliding lifetime is longer than the absolute cap.
pub const SLIDING_CAPPED: &str = "DuendeSlidingLifetimeCapped";

/// The refresh settings of a Duende client: the columns the operator reads and owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refresh {
    /// `AllowOfflineAccess`.
    pub allow_offline_access: bool,
    /// `AbsoluteRefreshTokenLifetime` (seconds).
    pub absolute: i64,
    /// `SlidingRefreshTokenLifetime` (seconds).
    pub sliding: i64,
    /// `RefreshTokenUsage`.
    pub usage: i64,
    /// `RefreshTokenExpiration`.
    pub expiration: i64,
    /// `AccessTokenLifetime` (seconds).
    pub access_token_lifetime: i64,
}

/// What a plan decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Settings, changes, findings and what Coder must send.
    pub observation: Observation,
    /// The columns to write, when something differs.
    pub next: Option<Refresh>,
}

fn seconds(field: &str, d: Duration) -> Result<i64, ProviderError> {
    if d.subsec_nanos() != 0 || d.is_zero() || d.as_secs() > MAX_SECONDS {
        return Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "{field} must be a whole number of seconds from 1s to {MAX_SECONDS}s (Duende stores it as an int of \
                 seconds), got {}; the operator never rounds it",
                show_duration(Some(d))
            ),
        });
    }
    Ok(d.as_secs() as i64)
}

/// Settings Duende cannot honour, checked before any call.
pub fn check_desired(desired: &DesiredSettings) -> Result<(), ProviderError> {
    if let Some(l) = desired.lifetime {
        seconds("spec.refreshTokens.lifetime", l)?;
    }
    if let Some(i) = desired.idle_timeout {
        seconds("spec.refreshTokens.idleTimeout", i)?;
    }
    if let Some(a) = desired.access_token_lifetime {
        seconds("spec.refreshTokens.accessTokenLifetime", a)?;
    }
    Ok(())
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}

fn usage_name(u: i64) -> String {
    match u {
        REUSE => "ReUse".into(),
        ONE_TIME_ONLY => "OneTimeOnly".into(),
        n => format!("unknown ({n})"),
    }
}

fn expiration_name(e: i64) -> String {
    match e {
        SLIDING => "Sliding".into(),
        ABSOLUTE => "Absolute".into(),
        n => format!("unknown ({n})"),
    }
}

fn show_secs(n: i64) -> String {
    format!("{n} ({})", show_duration(Some(secs(n))))
}

/// The effective settings of `r`, as Duende applies them.
pub fn settings(r: &Refresh) -> IdpSettings {
    let sliding = r.expiration == SLIDING;
    IdpSettings {
        refresh_token_grant: Some(r.allow_offline_access),
        offline_access: Some(r.allow_offline_access),
        // Sliding with an absolute lifetime of 0 has no cap; Absolute with 0 expires at issue.
        lifetime: (!(sliding && r.absolute == 0)).then(|| secs(r.absolute)),
        idle_timeout: sliding.then(|| {
            if r.absolute > 0 {
                secs(r.sliding.min(r.absolute))
            } else {
                secs(r.sliding)
            }
        }),
        rotation: Some(if r.usage == REUSE {
            Rotation::Reuse
        } else {
            Rotation::RotateStrict
        }),
        access_token_lifetime: Some(secs(r.access_token_lifetime)),
        // OneTimeOnly has no reuse window.
        rotation_window: (r.usage == ONE_TIME_ONLY).then(|| "0s".to_string()),
    }
}

/// The plan for client `current`, shown to people as `target`.
pub fn plan(
    current: &Refresh,
    desired: &DesiredSettings,
    target: &str,
) -> Result<Plan, ProviderError> {
    check_desired(desired)?;
    let mut next = *current;
    let mut changes = Vec::new();
    if desired.offline_access && !current.allow_offline_access {
        next.allow_offline_access = true;
        changes.push(Change::new(
            target,
            "AllowOfflineAccess",
            "false",
            "true",
            "Duende issues refresh tokens only to clients that allow offline access, and refuses offline_access (invalid_scope) otherwise",
        ));
    }
    // Sets one column of `next` to `want` when it differs, noting the change (values shown by `show`).
    let mut set =
        |column: &mut i64, want: i64, setting: &str, show: fn(i64) -> String, why: &str| {
            if *column != want {
                changes.push(Change::new(target, setting, show(*column), show(want), why));
                *column = want;
            }
        };
    if let Some(l) = desired.lifetime {
        let want = seconds("spec.refreshTokens.lifetime", l)?;
        set(
            &mut next.absolute,
            want,
            "AbsoluteRefreshTokenLifetime",
            show_secs,
            "spec.refreshTokens.lifetime",
        );
    }
    if let Some(i) = desired.idle_timeout {
        let want = seconds("spec.refreshTokens.idleTimeout", i)?;
        set(
            &mut next.expiration,
            SLIDING,
            "RefreshTokenExpiration",
            expiration_name,
            "spec.refreshTokens.idleTimeout: Duende's idle timeout is its sliding expiration",
        );
        set(
            &mut next.sliding,
            want,
            "SlidingRefreshTokenLifetime",
            show_secs,
            "spec.refreshTokens.idleTimeout",
        );
    }
    if let Some(r) = desired.rotation {
        let want = if r == Rotation::Reuse {
            REUSE
        } else {
            ONE_TIME_ONLY
        };
        set(
            &mut next.usage,
            want,
            "RefreshTokenUsage",
            usage_name,
            "spec.refreshTokens.rotation",
        );
    }
    if let Some(a) = desired.access_token_lifetime {
        let want = seconds("spec.refreshTokens.accessTokenLifetime", a)?;
        set(
            &mut next.access_token_lifetime,
            want,
            "AccessTokenLifetime",
            show_secs,
            "spec.refreshTokens.accessTokenLifetime",
        );
    }
    let findings = findings(&next, desired, target);
    let mut coder = CoderNeeds::default();
    if desired.offline_access {
        coder.add_scopes.push("offline_access".into());
    }
    let write = !changes.is_empty();
    Ok(Plan {
        observation: Observation {
            settings: settings(current),
            changes,
            findings,
            coder,
        },
        next: write.then_some(next),
    })
}

fn finding(reason: &'static str, message: String) -> Finding {
    Finding {
        reason,
        message,
        blocking: false,
        expires_at: None,
    }
}

/// What is worth telling about the client once the plan is applied.
fn findings(next: &Refresh, desired: &DesiredSettings, target: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    if next.usage == ONE_TIME_ONLY {
        let asked = match desired.rotation {
            Some(Rotation::Rotate) => {
                " spec.refreshTokens.rotation: Rotate asks for a reuse window, which Duende does not have;"
            }
            Some(Rotation::RotateStrict) => "",
            _ => " This is the default of Duende's database and of the admin API;",
        };
        out.push(finding(
            ONE_TIME_ONLY_REASON,
            format!(
                "{target} uses RefreshTokenUsage OneTimeOnly: every refresh consumes the token and Duende has no reuse \
                 window, so two of Coder's concurrent refreshes (the requests of one page load, several replicas) sign \
                 the user out.{asked} Duende recommends ReUse for confidential clients such as Coder, whose refresh \
                 tokens are useless without its client secret: set spec.refreshTokens.rotation: Reuse"
            ),
        ));
    }
    if next.expiration == ABSOLUTE && next.absolute == 0 {
        out.push(finding(
            EXPIRED_AT_ISSUE,
            format!(
                "{target} has RefreshTokenExpiration Absolute with AbsoluteRefreshTokenLifetime 0: Duende treats its \
                 refresh tokens as expired when issued. Set spec.refreshTokens.lifetime"
            ),
        ));
    }
    if next.expiration == SLIDING && next.absolute > 0 && next.sliding > next.absolute {
        out.push(finding(
            SLIDING_CAPPED,
            format!(
                "{target}: SlidingRefreshTokenLifetime {}s is longer than AbsoluteRefreshTokenLifetime {}s, which caps \
                 it: the idle timeout in force is {}s. Set spec.refreshTokens.lifetime to at least the idle timeout",
                next.sliding, next.absolute, next.absolute
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults of Duende's EF entity and of the admin API's DTO.
    fn stock() -> Refresh {
        Refresh {
            allow_offline_access: false,
            absolute: 2_592_000,
            sliding: 1_296_000,
            usage: ONE_TIME_ONLY,
            expiration: ABSOLUTE,
            access_token_lifetime: 3600,
        }
    }

    #[test]
    fn the_whole_mapping() {
        let d = DesiredSettings {
            offline_access: true,
            lifetime: Some(Duration::from_secs(7 * 86_400)),
            idle_timeout: Some(Duration::from_secs(86_400)),
            rotation: Some(Rotation::Reuse),
            access_token_lifetime: Some(Duration::from_secs(900)),
        };
        let p = plan(&stock(), &d, "client").unwrap();
        assert_eq!(
            p.next,
            Some(Refresh {
                allow_offline_access: true,
                absolute: 604_800,
                sliding: 86_400,
                usage: REUSE,
                expiration: SLIDING,
                access_token_lifetime: 900,
            })
        );
        assert_eq!(p.observation.changes.len(), 6);
        assert_eq!(p.observation.coder.add_scopes, ["offline_access"]);
        assert!(p.observation.findings.is_empty());
        // Converged: nothing to write.
        let again = plan(&p.next.unwrap(), &d, "client").unwrap();
        assert!(again.next.is_none() && again.observation.changes.is_empty());
        assert_eq!(
            again.observation.settings.idle_timeout,
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(again.observation.settings.rotation, Some(Rotation::Reuse));
    }

    #[test]
    fn zero_means_what_it_means_in_duende() {
        let mut r = stock();
        r.absolute = 0;
        r.expiration = SLIDING;
        let s = settings(&r);
        assert_eq!(s.lifetime, None, "Sliding with 0: no absolute cap");
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(1_296_000)));
        r.expiration = ABSOLUTE;
        assert_eq!(settings(&r).lifetime, Some(Duration::ZERO));
        let p = plan(&r, &DesiredSettings::default(), "c").unwrap();
        assert!(
            p.observation
                .findings
                .iter()
                .any(|f| f.reason == EXPIRED_AT_ISSUE)
        );
        // Only whole, non-zero seconds within an int are written.
        for bad in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(MAX_SECONDS + 1),
        ] {
            let d = DesiredSettings {
                lifetime: Some(bad),
                ..Default::default()
            };
            assert!(matches!(
                check_desired(&d),
                Err(ProviderError::Unsupported { .. })
            ));
        }
    }

    #[test]
    fn one_time_only_is_reported_and_rotate_maps_to_it() {
        for rotation in [Rotation::Rotate, Rotation::RotateStrict] {
            let d = DesiredSettings {
                rotation: Some(rotation),
                ..Default::default()
            };
            let mut r = stock();
            r.usage = REUSE;
            let p = plan(&r, &d, "c").unwrap();
            assert_eq!(p.next.unwrap().usage, ONE_TIME_ONLY);
            let f = p
                .observation
                .findings
                .iter()
                .find(|f| f.reason == ONE_TIME_ONLY_REASON)
                .expect("the OneTimeOnly finding");
            assert!(f.message.contains("ReUse") && !f.blocking);
        }
        // Untouched OneTimeOnly (the stock default) is reported too.
        let p = plan(&stock(), &DesiredSettings::default(), "c").unwrap();
        assert!(p.next.is_none());
        assert_eq!(
            p.observation.settings.rotation_window.as_deref(),
            Some("0s")
        );
        assert_eq!(p.observation.findings.len(), 1);
    }

    #[test]
    fn a_sliding_lifetime_above_the_cap_is_reported() {
        let d = DesiredSettings {
            idle_timeout: Some(Duration::from_secs(40 * 86_400)),
            rotation: Some(Rotation::Reuse),
            ..Default::default()
        };
        let p = plan(&stock(), &d, "c").unwrap();
        assert!(
            p.observation
                .findings
                .iter()
                .any(|f| f.reason == SLIDING_CAPPED)
        );
    }
}

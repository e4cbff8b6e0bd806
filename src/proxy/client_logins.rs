//! Client logins (`server.client_logins = "answer"`): an app written
//! against Oracle directly logs in by itself; kmproxy answers those two
//! login calls with placeholder tokens ([`crate::callers::placeholder`])
//! instead of refusing them, sends nothing upstream, and never logs or
//! forwards the password the app sent.
//!
//! - `POST /km/api/{ver}/auth/integration/authorize`: a placeholder
//!   integration token. When `login` is a caller's `name` and `password`
//!   that caller's key, it stands for the caller key on later calls
//!   (sent back in `kmauthtoken`'s `integrationUserToken`); any other login
//!   gets one that identifies nobody. A caller key header, when present,
//!   decides.
//! - `POST /km/api/{ver}/auth/authorize`: a placeholder user token when the
//!   form's `userName` and `userExternalType` match a principal the caller
//!   may use (its own or one in its `act_as`); a later call carrying it as
//!   `userToken` acts as that principal.
//!
//! A placeholder that is expired, forged, or from before a restart is
//! answered like Oracle's expired session (`OK-SESSION0003`), so the
//! client's own re-login code runs.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method};
use subtle::ConstantTimeEq;

use super::ProxyError;
use crate::callers::placeholder::{Binding, Placeholders, Stale};
use crate::callers::{self, Caller, Refusal};
use crate::config::{Config, PrincipalId, PrincipalKind};
use crate::kmauthtoken;

/// Largest login body read (a login form or JSON body is tiny).
pub const MAX_BODY: usize = 64 * 1024;

/// The login calls kmproxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `auth/integration/authorize`: the API user's login.
    Integration,
    /// `auth/authorize`: a console or web user's login.
    User,
}

/// Which login call this is, if it is one (a `POST` to the plain
/// spelling: odd spellings of `/auth/` stay refused).
pub fn endpoint(method: &Method, path: &str) -> Option<Endpoint> {
    if method != Method::POST {
        return None;
    }
    let segments: Vec<&str> = path.strip_prefix("/km/api/")?.split('/').collect();
    match segments.as_slice() {
        [_, "auth", "integration", "authorize"] => Some(Endpoint::Integration),
        [_, "auth", "authorize"] => Some(Endpoint::User),
        _ => None,
    }
}

/// The two token fields of a caller's `kmauthtoken`.
#[derive(serde::Deserialize, Default)]
struct TokenFields<'a> {
    #[serde(rename = "integrationUserToken", borrow, default)]
    integration: Option<Cow<'a, str>>,
    #[serde(rename = "userToken", borrow, default)]
    user: Option<Cow<'a, str>>,
}

fn token_fields(headers: &HeaderMap) -> TokenFields<'_> {
    headers
        .get(&kmauthtoken::HEADER)
        .filter(|v| v.len() <= kmauthtoken::MAX_CALLER_LEN)
        .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())
        .unwrap_or_default()
}

/// Identifies a call that may carry placeholders: the caller key header
/// decides when present; else an integration placeholder naming a caller;
/// else the default principal. A user placeholder of the same caller then
/// picks the principal.
pub fn identify(
    config: &Config,
    placeholders: &Placeholders,
    headers: &HeaderMap,
) -> Result<(Caller, Result<PrincipalId, Refusal>), Stale> {
    let fields = token_fields(headers);
    let check = |t: &Option<Cow<'_, str>>| match t.as_deref() {
        Some(t) => placeholders.check(config, t),
        None => Ok(None),
    };
    let (integration, user) = (check(&fields.integration)?, check(&fields.user)?);
    let (mut caller, mut principal) = callers::identify(config, headers);
    match (caller, integration) {
        // A key that matches no caller is refused, placeholders or not.
        (Caller::Unknown, _) => return Ok((caller, principal)),
        (Caller::None, Some(Binding::Caller(c))) => {
            caller = Caller::Known(c);
            principal = callers::principal(config, headers, caller);
        }
        _ => {}
    }
    match user {
        // Bound to this caller, and a principal it may still use (a reload
        // may have taken it away).
        Some(Binding::User {
            caller: bound,
            principal: p,
        }) if bound == caller.known() && allowed(config, caller, headers).contains(&p) => principal = Ok(p),
        Some(_) => return Err(Stale),
        None => {}
    }
    Ok((caller, principal))
}

/// The principals `caller` may use: its own and those in its `act_as`;
/// without a key, the default principal.
fn allowed(config: &Config, caller: Caller, headers: &HeaderMap) -> Vec<PrincipalId> {
    match caller {
        Caller::Known(c) => std::iter::once(config.callers[c].principal)
            .chain(config.callers[c].act_as.iter().copied())
            .collect(),
        Caller::None => callers::principal(config, headers, caller).ok().into_iter().collect(),
        Caller::Unknown => Vec::new(),
    }
}

/// Answers a client's own login call.
pub fn answer(
    config: &Config,
    placeholders: &Placeholders,
    endpoint: Endpoint,
    caller: Caller,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ProxyError> {
    let lifetime = config.tokens.lifetime;
    match endpoint {
        Endpoint::Integration => {
            let binding = match caller {
                Caller::Known(c) => Binding::Caller(c),
                Caller::Unknown => return Err(Refusal::UnknownCaller.into()),
                Caller::None => integration_caller(config, body).map_or(Binding::Nobody, Binding::Caller),
            };
            let token = placeholders.mint(config, binding, lifetime);
            Ok(axum::Json(serde_json::json!({ "authenticationToken": token })).into_response())
        }
        Endpoint::User => {
            let form: UserForm = serde_urlencoded::from_bytes(body).map_err(|_| ProxyError::ClientLogin(None))?;
            let principal = user_principal(config, caller, headers, &form)
                .ok_or_else(|| ProxyError::ClientLogin(Some(form.user_name.chars().take(64).collect())))?;
            let binding = Binding::User {
                caller: caller.known(),
                principal,
            };
            Ok(user_answer(
                config,
                &placeholders.mint(config, binding, lifetime),
                &form,
            ))
        }
    }
}

/// The caller an integration login names: its `login` is the caller's
/// name and its `password` the caller's key (compared as digests, in
/// constant time).
fn integration_caller(config: &Config, body: &[u8]) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct Login<'a> {
        #[serde(borrow)]
        login: Cow<'a, str>,
        #[serde(borrow)]
        password: Cow<'a, str>,
    }
    let login: Login<'_> = serde_json::from_slice(body).ok()?;
    let digest = callers::digest(login.password.as_bytes());
    let c = config.callers.iter().position(|c| c.name == login.login)?;
    bool::from(config.callers[c].key_sha256.ct_eq(&digest)).then_some(c)
}

#[derive(serde::Deserialize)]
struct UserForm {
    #[serde(rename = "userName")]
    user_name: String,
    #[serde(rename = "userExternalType", default)]
    user_external_type: String,
}

/// The principal a user login names, among those the caller may use.
fn user_principal(config: &Config, caller: Caller, headers: &HeaderMap, form: &UserForm) -> Option<PrincipalId> {
    allowed(config, caller, headers).into_iter().find(|&p| {
        matches!(&config.principals[p].kind, PrincipalKind::User { external_type, user, .. }
            if *user == form.user_name && external_type.as_str().eq_ignore_ascii_case(&form.user_external_type))
    })
}

/// Oracle's user login answer: `authenticationToken` is a JSON object
/// serialised as a string, with the user token in it.
fn user_answer(config: &Config, token: &str, form: &UserForm) -> Response {
    let session = serde_json::json!({
        "siteName": config.upstream.site_name,
        "localeId": config.upstream.locale,
        "userToken": token,
    })
    .to_string();
    axum::Json(serde_json::json!({
        "authenticationToken": session,
        "user": {
            "login": form.user_name,
            "externalType": form.user_external_type.to_ascii_uppercase(),
            "isActive": true,
            "isLocked": false,
        },
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_plain_login_posts_are_answered() {
        let post = Method::POST;
        assert_eq!(
            endpoint(&post, "/km/api/latest/auth/integration/authorize"),
            Some(Endpoint::Integration)
        );
        assert_eq!(endpoint(&post, "/km/api/v1/auth/authorize"), Some(Endpoint::User));
        assert_eq!(endpoint(&Method::GET, "/km/api/v1/auth/authorize"), None);
        assert_eq!(endpoint(&post, "/srt/api/v1/auth/authorize"), None);
        assert_eq!(endpoint(&post, "/km/api/v1/auth/authorize/x"), None);
        assert_eq!(endpoint(&post, "/km/api/v1/AUTH/authorize"), None);
    }
}

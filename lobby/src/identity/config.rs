//! Identity providers from configuration: `rally lobby --oidc`/`--oauth2`
//! specs (also one a line in `--identity-providers FILE`) and the options
//! shared by every provider.

use std::path::Path;
use std::time::Duration;

/// Every external identity provider and the checks common to them.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The providers, by unique name.
    pub providers: Vec<ProviderConfig>,
    /// Clock skew allowed on an ID token's `exp` (and the provider's clocks generally).
    pub clock_skew: Duration,
    /// Longest wait for one HTTP exchange with a provider.
    pub http_timeout: Duration,
    /// How long a started login (its state, nonce and PKCE verifier) stays redeemable.
    pub attempt_ttl: Duration,
    /// How often a provider's signing keys are fetched again regardless of
    /// rotation (an unknown key id fetches them at once, at most every
    /// [`IdentityConfig::jwks_min_refetch`]).
    pub jwks_max_age: Duration,
    /// The shortest time between two fetches of one provider's keys.
    pub jwks_min_refetch: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            clock_skew: Duration::from_secs(30),
            http_timeout: Duration::from_secs(10),
            attempt_ttl: Duration::from_secs(600),
            jwks_max_age: Duration::from_secs(3600),
            jwks_min_refetch: Duration::from_secs(5),
        }
    }
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// What clients name it by: 1–32 of `[a-z0-9_-]` (not `guest` or `password`).
    pub name: String,
    /// For people; defaults to the name.
    pub display_name: String,
    /// OpenID Connect or plain OAuth2.
    pub kind: ProviderKind,
    /// The client id the provider issued to this lobby.
    pub client_id: String,
    /// The client secret; None for a public client (PKCE alone). Read from
    /// [`ProviderConfig::secret_file`] when the lobby starts
    /// ([`ProviderConfig::load_secret`]).
    pub client_secret: Option<String>,
    /// Where the client secret is (`secret-file=PATH`).
    pub secret_file: Option<std::path::PathBuf>,
    /// Scopes to ask for (OpenID Connect always includes `openid`).
    pub scopes: Vec<String>,
    /// Where the person's name is: an ID-token or userinfo claim, dotted for
    /// nested objects (`user.login`). The first present of these is used.
    pub name_claims: Vec<String>,
    /// Redirect URIs StartLogin accepts; a `http://127.0.0.1/…` or
    /// `http://[::1]/…` entry without a port accepts any port (RFC 8252 §7.3).
    pub redirect_uris: Vec<String>,
}

/// How the provider is spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenID Connect: endpoints and keys from `<issuer>/.well-known/openid-configuration`.
    Oidc {
        /// The issuer URL, exactly as the ID tokens' `iss`.
        issuer: String,
    },
    /// OAuth2 with a userinfo endpoint naming the person (the 42 intranet, GitHub).
    OAuth2 {
        /// The authorization endpoint.
        authorization_url: String,
        /// The token endpoint.
        token_url: String,
        /// The endpoint answering the access token's owner as JSON.
        userinfo_url: String,
        /// The device authorization endpoint (RFC 8628), when the provider has one.
        device_authorization_url: Option<String>,
        /// Where the person's stable id is in the userinfo JSON (dotted; a
        /// number or a string).
        id_claim: String,
    },
}

/// A provider spec that cannot be used, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identity provider {spec:?}: {reason}")]
pub struct ProviderSpecError {
    spec: String,
    reason: String,
}

impl ProviderConfig {
    /// Parses `NAME=ISSUER,CLIENT_ID[,OPTION=VALUE…]` (`rally lobby --oidc`).
    /// Options: `secret-file=PATH`, `scopes=a+b`, `name-claim=c` (repeatable,
    /// first present wins), `redirect-uri=URI` (repeatable), `display-name=TEXT`.
    pub fn parse_oidc(spec: &str) -> Result<Self, ProviderSpecError> {
        let (name, positional, options) = split_spec(spec, 2)?;
        let kind = ProviderKind::Oidc { issuer: positional[0].clone() };
        let mut config = Self::base(spec, name, kind, positional[1].clone(), &["openid", "profile"])?;
        config.name_claims = vec!["preferred_username".into(), "name".into(), "email".into()];
        config.apply_options(spec, options, &[])?;
        if !config.scopes.iter().any(|scope| scope == "openid") {
            config.scopes.insert(0, "openid".into());
        }
        config.check(spec)?;
        Ok(config)
    }

    /// Parses `NAME=AUTHORIZATION_URL,TOKEN_URL,USERINFO_URL,CLIENT_ID[,OPTION=VALUE…]`
    /// (`rally lobby --oauth2`). Options as [`ProviderConfig::parse_oidc`], and
    /// `device-url=URL`, `id-claim=PATH` (default `id`; `name-claim` defaults to `login`).
    pub fn parse_oauth2(spec: &str) -> Result<Self, ProviderSpecError> {
        let (name, positional, options) = split_spec(spec, 4)?;
        let kind = ProviderKind::OAuth2 {
            authorization_url: positional[0].clone(),
            token_url: positional[1].clone(),
            userinfo_url: positional[2].clone(),
            device_authorization_url: None,
            id_claim: "id".into(),
        };
        let mut config = Self::base(spec, name, kind, positional[3].clone(), &[])?;
        config.name_claims = vec!["login".into()];
        config.apply_options(spec, options, &["device-url", "id-claim"])?;
        config.check(spec)?;
        Ok(config)
    }

    /// Parses a file of specs, one a line: `oidc NAME=…` or `oauth2 NAME=…`;
    /// blank lines and `#` comments are skipped.
    pub fn parse_file(path: &Path) -> Result<Vec<Self>, ProviderSpecError> {
        let text = std::fs::read_to_string(path).map_err(|err| ProviderSpecError {
            spec: path.display().to_string(),
            reason: format!("cannot read the file: {err}"),
        })?;
        let mut providers = Vec::new();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
            let provider = match line.split_once(char::is_whitespace) {
                Some(("oidc", spec)) => Self::parse_oidc(spec.trim())?,
                Some(("oauth2", spec)) => Self::parse_oauth2(spec.trim())?,
                _ => {
                    return Err(ProviderSpecError {
                        spec: line.into(),
                        reason: "each line is `oidc NAME=…` or `oauth2 NAME=…`".into(),
                    });
                }
            };
            providers.push(provider);
        }
        Ok(providers)
    }

    /// Reads the client secret from `secret-file`, if one was given (when the
    /// lobby starts, not when the spec is parsed, so a spec can be checked
    /// without the secret at hand).
    pub fn load_secret(&mut self) -> Result<(), ProviderSpecError> {
        let Some(path) = &self.secret_file else { return Ok(()) };
        let shown = path.display().to_string();
        let secret = std::fs::read_to_string(path).map_err(|err| ProviderSpecError {
            spec: self.name.clone(),
            reason: format!("cannot read secret-file {shown}: {err}"),
        })?;
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(ProviderSpecError { spec: self.name.clone(), reason: format!("secret-file {shown} is empty") });
        }
        self.client_secret = Some(secret.to_owned());
        Ok(())
    }

    fn base(
        spec: &str,
        name: String,
        kind: ProviderKind,
        client_id: String,
        scopes: &[&str],
    ) -> Result<Self, ProviderSpecError> {
        if client_id.is_empty() {
            return Err(error(spec, "the client id is empty"));
        }
        Ok(Self {
            display_name: name.clone(),
            name,
            kind,
            client_id,
            client_secret: None,
            secret_file: None,
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            name_claims: Vec::new(),
            redirect_uris: Vec::new(),
        })
    }

    fn apply_options(
        &mut self,
        spec: &str,
        options: Vec<(String, String)>,
        kind_options: &[&str],
    ) -> Result<(), ProviderSpecError> {
        let mut name_claims = Vec::new();
        for (key, value) in options {
            match key.as_str() {
                "secret-file" => self.secret_file = Some(value.into()),
                "scopes" => self.scopes = value.split('+').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                "name-claim" => name_claims.push(value),
                "redirect-uri" => self.redirect_uris.push(value),
                "display-name" => self.display_name = value,
                "device-url" if kind_options.contains(&"device-url") => {
                    if let ProviderKind::OAuth2 { device_authorization_url, .. } = &mut self.kind {
                        *device_authorization_url = Some(value);
                    }
                }
                "id-claim" if kind_options.contains(&"id-claim") => {
                    if let ProviderKind::OAuth2 { id_claim, .. } = &mut self.kind {
                        *id_claim = value;
                    }
                }
                other => {
                    let mut known = vec!["secret-file", "scopes", "name-claim", "redirect-uri", "display-name"];
                    known.extend_from_slice(kind_options);
                    return Err(error(spec, format!("unknown option {other:?}; known: {}", known.join(", "))));
                }
            }
        }
        if !name_claims.is_empty() {
            self.name_claims = name_claims;
        }
        Ok(())
    }

    fn check(&self, spec: &str) -> Result<(), ProviderSpecError> {
        check_provider_name(&self.name).map_err(|reason| error(spec, reason))?;
        let mut urls: Vec<(&str, &str)> = Vec::new();
        match &self.kind {
            ProviderKind::Oidc { issuer } => urls.push(("issuer", issuer)),
            ProviderKind::OAuth2 { authorization_url, token_url, userinfo_url, device_authorization_url, .. } => {
                urls.push(("authorization url", authorization_url));
                urls.push(("token url", token_url));
                urls.push(("userinfo url", userinfo_url));
                if let Some(device) = device_authorization_url {
                    urls.push(("device url", device));
                }
            }
        }
        for redirect in &self.redirect_uris {
            urls.push(("redirect-uri", redirect));
        }
        for (what, url) in urls {
            url::Url::parse(url).map_err(|err| error(spec, format!("the {what} {url:?} is not a URL: {err}")))?;
        }
        if self.redirect_uris.is_empty() {
            return Err(error(
                spec,
                "no redirect-uri: add the ones registered at the provider, e.g. \
                 redirect-uri=http://127.0.0.1/callback for `rally play` (any port)",
            ));
        }
        Ok(())
    }
}

/// Provider names: 1–32 of `[a-z0-9_-]`, and not the built-in methods.
pub fn check_provider_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err(format!("the name must be 1 to 32 characters (got {})", name.len()));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!("the name may only hold a-z, 0-9, '_' and '-' (found {bad:?})"));
    }
    if name == "guest" || name == "password" {
        return Err(format!("{name:?} names a built-in login method; choose another name"));
    }
    Ok(())
}

fn error(spec: &str, reason: impl Into<String>) -> ProviderSpecError {
    // A secret never sits in a spec (it comes from secret-file), so the spec is safe to show.
    ProviderSpecError { spec: spec.into(), reason: reason.into() }
}

type SplitSpec = (String, Vec<String>, Vec<(String, String)>);

/// `NAME=a,b,key=value,…` into the name, `n_positional` values and the options.
fn split_spec(spec: &str, n_positional: usize) -> Result<SplitSpec, ProviderSpecError> {
    let Some((name, rest)) = spec.split_once('=') else {
        return Err(error(spec, "expected NAME=… (the provider's name, then '=')"));
    };
    let mut positional = Vec::new();
    let mut options = Vec::new();
    for (idx, part) in rest.split(',').enumerate() {
        if idx < n_positional {
            positional.push(part.trim().to_owned());
            continue;
        }
        let Some((key, value)) = part.split_once('=') else {
            return Err(error(spec, format!("{part:?} is not OPTION=VALUE")));
        };
        options.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    if positional.len() < n_positional {
        return Err(error(spec, format!("expected {n_positional} comma-separated values after NAME=")));
    }
    Ok((name.trim().to_owned(), positional, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oidc_spec_parses_with_defaults_and_options() {
        let config = ProviderConfig::parse_oidc(
            "google=https://accounts.google.com,abc.apps.googleusercontent.com,redirect-uri=http://127.0.0.1/callback,scopes=email",
        )
        .expect("parses");
        assert_eq!(config.name, "google");
        assert_eq!(config.kind, ProviderKind::Oidc { issuer: "https://accounts.google.com".into() });
        assert_eq!(config.scopes, ["openid", "email"], "openid is always asked for");
        assert_eq!(config.redirect_uris, ["http://127.0.0.1/callback"]);
        assert_eq!(config.client_secret, None);
    }

    #[test]
    fn the_42_intranet_parses_as_oauth2() {
        let dir = tempfile::tempdir().expect("dir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t\n").expect("write");
        let spec = format!(
            "42=https://api.intra.42.fr/oauth/authorize,https://api.intra.42.fr/oauth/token,https://api.intra.42.fr/v2/me,\
             u-s4t2ud-x,secret-file={},scopes=public,redirect-uri=http://127.0.0.1:7190/callback,display-name=42 intranet",
            secret.display()
        );
        let mut config = ProviderConfig::parse_oauth2(&spec).expect("parses");
        assert_eq!(config.client_secret, None, "read when the lobby starts");
        config.load_secret().expect("the secret file reads");
        assert_eq!(config.client_secret.as_deref(), Some("s3cr3t"));
        assert_eq!(config.name_claims, ["login"]);
        assert_eq!(config.display_name, "42 intranet");
        let ProviderKind::OAuth2 { id_claim, userinfo_url, .. } = &config.kind else { panic!("oauth2") };
        assert_eq!(id_claim, "id");
        assert_eq!(userinfo_url, "https://api.intra.42.fr/v2/me");
    }

    #[test]
    fn bad_specs_say_what_to_change() {
        let cases = [
            ("google", "expected NAME="),
            ("google=https://accounts.google.com", "expected 2"),
            ("Google=https://a.example,id,redirect-uri=http://127.0.0.1/cb", "may only hold"),
            ("guest=https://a.example,id,redirect-uri=http://127.0.0.1/cb", "built-in"),
            ("g=not a url,id,redirect-uri=http://127.0.0.1/cb", "not a URL"),
            ("g=https://a.example,id", "no redirect-uri"),
            ("g=https://a.example,id,colour=blue", "unknown option \"colour\""),
        ];
        for (spec, expected) in cases {
            let err = ProviderConfig::parse_oidc(spec).expect_err(spec).to_string();
            assert!(err.contains(expected), "{spec}: {err}");
        }
        let mut missing = ProviderConfig::parse_oidc(
            "g=https://a.example,id,secret-file=/nonexistent/secret,redirect-uri=http://127.0.0.1/cb",
        )
        .expect("the file is read at start");
        let err = missing.load_secret().expect_err("no such file").to_string();
        assert!(err.contains("cannot read secret-file /nonexistent/secret"), "{err}");
    }
}

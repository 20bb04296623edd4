//! LDAP source (OpenLDAP, Active Directory). Not built yet: the config is accepted so
//! that the shape is reserved, and reading fails with a clear error.

use std::path::Path;

use serde::Deserialize;

use crate::model::Directory;

/// The `[source]` table with `kind = "ldap"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLdap {
    pub url: String,
}

/// Validated LDAP source settings.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    pub url: String,
}

impl LdapConfig {
    pub fn from_raw(raw: RawLdap, _base: &Path) -> Result<LdapConfig, (String, String)> {
        Ok(LdapConfig { url: raw.url })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("ldap {url}: {message}")]
pub struct LdapError {
    pub url: String,
    pub message: String,
}

pub async fn read(config: &LdapConfig) -> Result<Directory, LdapError> {
    Err(LdapError {
        url: config.url.clone(),
        message: "the LDAP source is not available in this build".into(),
    })
}

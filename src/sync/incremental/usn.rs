//! The read of an Active Directory source by update sequence numbers
//! (`source::ldap::usn`), as `token::decide_usn` chooses: nothing more when the
//! domain controller's USN is the stored one, every entry when the stored USN is in
//! doubt, else the objects changed since, applied to the entry cache.

use crate::source::SourceError;
use crate::source::ldap::cache::{Delta, Kind};
use crate::source::ldap::{LdapConfig, dn, usn};
use crate::source::token::{self, Decision, Facts, ReadMode, Token, UsnPoint, UsnRead};
use crate::store::Store;

use super::{CachedRead, Entries};
use crate::sync::SyncError;

/// Reads an Active Directory source by USN as `token::decide_usn` says. A failure
/// part way commits nothing; the caller marks the next read full.
pub(super) async fn read(
    store: &Store,
    config: &LdapConfig,
    stored: Option<&token::Stored>,
    facts: Facts<'_>,
    warm: Option<&super::Warm>,
) -> Result<CachedRead, SyncError> {
    let read = match usn::Controller::open(config).await {
        Ok(mut controller) => {
            let read = read_on(&mut controller, store, config, stored, facts, warm).await;
            controller.close().await;
            read
        }
        Err(e) => Err(SourceError::from(e).into()),
    };
    if let Err(e) = &read {
        tracing::warn!(
            error = %e,
            "The Active Directory read failed; nothing of it is committed and the next run reads every entry."
        );
    }
    read
}

async fn read_on(
    controller: &mut usn::Controller,
    store: &Store,
    config: &LdapConfig,
    stored: Option<&token::Stored>,
    facts: Facts<'_>,
    warm: Option<&super::Warm>,
) -> Result<CachedRead, SyncError> {
    let dc = &controller.dc;
    let point = UsnPoint {
        usn: dc.usn,
        invocation_id: dc.invocation_id.clone(),
        ds_service_name: dc.ds_service_name.clone(),
    };
    let usn = point.usn;
    let token = Some(Token::ActiveDirectory(point.clone()));
    let since = match token::decide_usn(stored, facts, &point) {
        UsnRead::Unchanged => {
            return Ok(CachedRead {
                decision: usn_unchanged(usn),
                token,
                entries: Entries::Stored,
                delta: Delta::default(),
            });
        }
        UsnRead::Full { reason } => return full(controller, config, token, reason).await,
        UsnRead::Since(since) => since,
    };
    if let Some(base) = usn::base_outside(config, &dc.naming_context) {
        let reason = format!(
            "the search base `{}` is outside the domain controller's default naming context `{}`, \
             the only partition whose changes it names",
            crate::text::visible(base),
            crate::text::visible(&dc.naming_context)
        );
        return full(controller, config, token, reason).await;
    }
    if let Some(reason) = config.back_link_reason() {
        return full(controller, config, token, reason).await;
    }
    if !controller
        .sees_deleted_objects()
        .await
        .map_err(SourceError::from)?
    {
        let reason = usn::deletions_unseen(&controller.dc.naming_context);
        tracing::warn!("Reading the whole directory: {reason}.");
        return full(controller, config, token, reason).await;
    }
    let found = controller
        .changed_since(config, since)
        .await
        .map_err(SourceError::from)?;
    // The USN also moves for objects that are neither users nor groups (a DNS
    // record, a policy): then the cache is not even loaded.
    if found.is_empty() && !found.has_containers() {
        return Ok(CachedRead {
            decision: usn_unchanged(usn),
            token,
            entries: Entries::Stored,
            delta: Delta::default(),
        });
    }
    let mut cache = super::kept(store, warm, stored).await?;
    for (dn, held) in found.containers(&cache) {
        let container = crate::text::visible(dn);
        let reason = match held {
            None => controller
                .moved_with(config, dn, &cache, &found)
                .await
                .map_err(SourceError::from)?
                .then(|| {
                    format!(
                        "the organizational unit or container `{container}` changed and moved with \
                         entries the searches return, which keep their USN"
                    )
                }),
            // Edited in place, or it took the name of one that moved: the entry
            // under it says which.
            Some(held) => {
                let now = controller
                    .dn_of(config, held.guid)
                    .await
                    .map_err(SourceError::from)?;
                let was = crate::text::visible(held.dn);
                match now {
                    Some(now) if dn::normalize(&now) == dn::normalize(held.dn) => None,
                    Some(now) => Some(format!(
                        "the organizational unit or container `{container}` changed and `{was}` is \
                         now `{}`: containers renamed, moved or swapped move the entries under \
                         them, which keep their USN",
                        crate::text::visible(&now)
                    )),
                    None => Some(format!(
                        "the organizational unit or container `{container}` changed and `{was}` \
                         is no longer found"
                    )),
                }
            }
        };
        if let Some(reason) = reason {
            return full(controller, config, token, reason).await;
        }
    }
    if found.is_empty() {
        return Ok(CachedRead {
            decision: usn_unchanged(usn),
            token,
            entries: Entries::Cache(cache),
            delta: Delta::default(),
        });
    }
    let changes = controller
        .changes(config, found, &cache)
        .await
        .map_err(SourceError::from)?;
    tracing::debug!(
        since,
        usn,
        changed = changes.changed,
        tombstones = changes.tombstones,
        "Read the objects changed since the stored USN."
    );
    let mut delta = Delta::default();
    cache.apply(Kind::User, changes.users, &mut delta);
    cache.apply(Kind::Group, changes.groups, &mut delta);
    let decision = if delta.is_empty() {
        usn_unchanged(usn)
    } else {
        Decision {
            mode: ReadMode::Incremental,
            reason: format!(
                "the domain controller names {} changed and {} removed entries between USN {since} and {usn}",
                delta.upserted.len(),
                delta.removed.len()
            ),
            changed: true,
        }
    };
    Ok(CachedRead {
        decision,
        token,
        entries: Entries::Cache(cache),
        delta,
    })
}

/// Every entry of the source, for `reason`.
async fn full(
    controller: &mut usn::Controller,
    config: &LdapConfig,
    token: Option<Token>,
    reason: String,
) -> Result<CachedRead, SyncError> {
    tracing::info!(
        reason,
        usn = controller.dc.usn,
        "Reading every entry of the source."
    );
    let cache = controller.full(config).await.map_err(SourceError::from)?;
    Ok(CachedRead {
        decision: Decision {
            mode: ReadMode::Full,
            reason,
            changed: true,
        },
        token,
        entries: Entries::Cache(cache),
        delta: Delta::default(),
    })
}

fn usn_unchanged(usn: u64) -> Decision {
    Decision {
        mode: ReadMode::Unchanged,
        reason: format!("the domain controller names no change up to its USN {usn}"),
        changed: false,
    }
}

//! A group's members read back from its target, for `dirsync verify`: a SCIM
//! service's `GET /Groups/{id}` (in `scim`), or the `read_group` endpoint a target
//! describes, whose answer lists the members where `response_members` points.

use std::collections::{BTreeMap, BTreeSet};

use crate::mapping::DesiredGroup;
use crate::model::Attrs;
use crate::target::http::{HttpTarget, PushError};
use crate::target::request::{self, MembersError, Secrets};
use crate::target::spec::EndpointKind;

/// Why a group's members could not be read. Messages are free of secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Request(#[from] PushError),
    #[error("cannot build the request: {0}")]
    Build(String),
    #[error("the answer does not match `endpoints.read_group.response_members`: {0}")]
    Answer(#[from] MembersError),
}

impl HttpTarget {
    /// Whether `read_group` can read this target's groups back.
    pub(crate) fn can_read_groups(&self) -> bool {
        self.reads_groups() || self.offers(EndpointKind::ReadGroup)
    }

    /// The members group `id` (named `name`) holds in the target, by the target user
    /// ids the snapshot records; `None` when the target has no such group (404).
    pub(crate) async fn read_group(
        &self,
        id: &str,
        name: &str,
    ) -> Result<Option<BTreeSet<String>>, ReadError> {
        if self.reads_groups() {
            return Ok(self.read_members(id).await?);
        }
        let ep = self
            .endpoint(EndpointKind::ReadGroup)
            .map_err(|e| ReadError::Build(self.redact(&e.0)))?;
        // The snapshot keeps a group's id and name only: the templates see those.
        let group = DesiredGroup {
            id: id.to_owned(),
            name: name.to_owned(),
            source_id: String::new(),
            source_name: String::new(),
            members: BTreeSet::new(),
            attrs: Attrs::new(),
        };
        let req = self
            .group_request_to(
                EndpointKind::ReadGroup,
                &group,
                &BTreeSet::new(),
                &BTreeMap::new(),
                Secrets::Real,
            )
            .map_err(|e| ReadError::Build(self.redact(&e.0)))?;
        let mut body = String::new();
        let outcome = self
            .send_with_retries(ep, &req, request::Sent::default(), Some(&mut body))
            .await;
        if outcome.status == Some(404) {
            return Ok(None);
        }
        outcome.result?;
        let Some(rm) = &ep.response_members else {
            return Err(ReadError::Build(
                "`endpoints.read_group` has no `response_members`".into(),
            ));
        };
        Ok(Some(request::read_members(rm, &body)?))
    }
}

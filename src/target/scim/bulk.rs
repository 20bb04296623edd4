//! Group member changes in SCIM `/Bulk` requests (RFC 7644 §3.7), for a target with
//! `scim.bulk = true` whose service's `/ServiceProviderConfig` says it takes them.
//!
//! Each operation is resolved to the service's ids and rendered exactly as it would
//! be sent alone; a bulk request carries at most the service's `maxOperations` of
//! them and `maxPayloadSize` bytes. The service's answer for each operation is that
//! operation's outcome: a 2xx confirms it, anything else is judged as the same answer
//! to the operation sent alone would be. Only group member changes go in bulk: they
//! are idempotent (a bulk request retried whole applies nothing twice) and their
//! endpoints declare no echo that a bulk answer might leave out.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{Ids, Kind, Resolved};
use crate::mapping::DesiredUser;
use crate::plan::Operation;
use crate::target::http::{HttpTarget, Pause, PushError, PushOutcome, endpoint_of};
use crate::target::request::{self, Failure, Secrets, Verdict};
use crate::target::spec::EndpointKind;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";

/// What a service takes in one bulk request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Limits {
    pub(super) operations: usize,
    pub(super) bytes: usize,
}

impl Limits {
    /// From `/ServiceProviderConfig`'s `bulk`: `None` unless it is supported for more
    /// than one operation.
    pub(super) fn of(config: &Value) -> Option<Limits> {
        let bulk = config.get("bulk")?;
        if bulk.get("supported").and_then(Value::as_bool) != Some(true) {
            return None;
        }
        let number = |key: &str| bulk.get(key).and_then(Value::as_u64).map(|n| n as usize);
        let operations = number("maxOperations").filter(|n| *n > 1)?;
        Some(Limits {
            operations,
            bytes: number("maxPayloadSize").filter(|n| *n > 0).unwrap_or(usize::MAX),
        })
    }
}

/// One operation ready for a bulk request.
struct Entry {
    /// Its place among the operations pushed together.
    index: usize,
    /// The group's key, forgotten when the service no longer knows its id.
    group: String,
    /// The operation as sent (a delta to a service without PATCH is the whole list).
    sent: Operation,
    sent_as: Option<&'static str>,
    /// The bulk operation, without its `bulkId`.
    operation: Value,
}

impl HttpTarget {
    /// How many group member operations may go in one request: the service's
    /// `maxOperations` for a SCIM target with `scim.bulk` whose service takes bulk
    /// requests, else 1.
    pub(crate) async fn bulk_operations(&self) -> usize {
        match &self.scim {
            Some(ids) if ids.settings.bulk && self.group_endpoints_fit_bulk() => {
                self.features(ids).await.bulk.map_or(1, |l| l.operations)
            }
            _ => 1,
        }
    }

    /// Whether the group endpoints ask nothing of a request or its answer that a bulk
    /// operation leaves out: query parameters, headers, success conditions, echoes.
    fn group_endpoints_fit_bulk(&self) -> bool {
        [EndpointKind::GroupMembers, EndpointKind::AddMembers, EndpointKind::RemoveMembers]
            .into_iter()
            .filter_map(|kind| self.endpoint(kind).ok())
            .all(|ep| {
                let plain = ep.query.is_empty()
                    && ep.headers.is_empty()
                    && ep.success.conditions.is_empty()
                    && ep.response_members.is_none()
                    && ep.response_echo.is_none();
                if !plain {
                    tracing::warn!(target_name = %self.name, endpoint = ep.kind.key(), "`scim.bulk` is set, but the endpoint has query parameters, headers, success conditions or an echo that a bulk request cannot carry or check; sending a request per group.");
                }
                plain
            })
    }

    /// Sends group member operations in as few bulk requests as the service's limits
    /// allow. One outcome per operation, in order.
    pub(crate) async fn push_bulk(
        &self,
        ops: &[&Operation],
        users: &BTreeMap<String, DesiredUser>,
    ) -> Vec<PushOutcome> {
        let limits = match &self.scim {
            Some(ids) => self.features(ids).await.bulk.map(|l| (ids, l)),
            None => None,
        };
        let Some((ids, limits)) = limits else {
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.push(self.push(op, users).await);
            }
            return out;
        };
        let mut outcomes: Vec<Option<PushOutcome>> = ops.iter().map(|_| None).collect();
        // Resolved as many at a time as the target takes requests (the lookups and
        // creations are requests of their own, paced like the rest).
        let mut pending = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            pending.push(self.bulk_entry(ids, index, op, users));
        }
        let resolved: Vec<Result<Entry, PushOutcome>> = futures_util::stream::iter(pending)
            .buffered(self.spec().concurrency.max(1))
            .collect()
            .await;
        let mut entries = Vec::new();
        for (index, entry) in resolved.into_iter().enumerate() {
            match entry {
                Ok(entry) => entries.push(entry),
                Err(outcome) => outcomes[index] = Some(outcome),
            }
        }
        let mut rest = entries.as_slice();
        while let Some(first) = rest.first() {
            let stops = |o: &PushOutcome| o.stop_target || matches!(&o.result, Err(e) if e.is_auth());
            // One the service's bulk limit cannot carry goes as a plain request, which
            // that limit does not bound (RFC 7644 §3.7.4), found again after a 404 as
            // any plain request is.
            if batch_bytes(first.operation.to_string().len()) > limits.bytes {
                let outcome = self.push(ops[first.index], users).await;
                let stop = stops(&outcome);
                outcomes[first.index] = Some(outcome);
                if stop {
                    break;
                }
                rest = &rest[1..];
                continue;
            }
            let take = batch_len(rest.iter().map(|e| e.operation.to_string().len()), limits);
            let (batch, tail) = rest.split_at(take);
            let mut stop = false;
            for (entry, outcome) in batch.iter().zip(self.send_bulk(ids, batch).await) {
                stop |= stops(&outcome);
                outcomes[entry.index] = Some(outcome);
            }
            if stop {
                break;
            }
            rest = tail;
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    PushOutcome::with(Err(PushError::Transient(
                        "not sent: the target stopped taking requests earlier in this run".into(),
                    )))
                })
            })
            .collect()
    }

    /// The operation resolved and rendered for a bulk request, or its outcome when
    /// nothing is left to send (or it cannot be built).
    async fn bulk_entry(
        &self,
        ids: &Ids,
        index: usize,
        op: &Operation,
        users: &BTreeMap<String, DesiredUser>,
    ) -> Result<Entry, PushOutcome> {
        let sent = match self.resolve(ids, op, users, false).await {
            Ok(Resolved::Send(sent)) => sent,
            Ok(Resolved::Done(outcome)) => return Err(outcome),
            Err(e) => return Err(ids.failed(e)),
        };
        let req = self
            .op_request(&sent, users, Secrets::Real)
            .map_err(|e| PushOutcome::with(Err(PushError::Build(self.redact(&e.0)))))?;
        let mut operation = json!({ "method": req.method.as_str(), "path": req.path_and_query });
        if !req.body.is_empty() {
            let data: Value = serde_json::from_str(&req.body).map_err(|e| {
                PushOutcome::with(Err(PushError::Build(format!(
                    "the request body is not JSON: {e}"
                ))))
            })?;
            operation["data"] = data;
        }
        Ok(Entry {
            index,
            group: op.entity_id().to_owned(),
            sent_as: Some(sent.kind()).filter(|k| *k != op.kind()),
            sent,
            operation,
        })
    }

    /// One bulk request; one outcome per entry, in order.
    async fn send_bulk(&self, ids: &Ids, batch: &[Entry]) -> Vec<PushOutcome> {
        let operations: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(n, e)| {
                let mut op = e.operation.clone();
                op["bulkId"] = json!(n.to_string());
                op
            })
            .collect();
        let body = json!({ "schemas": [BULK_REQUEST], "Operations": operations }).to_string();
        let (whole, answer) = self.call(ids, reqwest::Method::POST, "/Bulk".into(), body).await;
        if whole.result.is_err() {
            // Nothing of the batch is known to be applied: every operation failed as
            // the request did; the pause, the stop and the 429s count once.
            return batch
                .iter()
                .enumerate()
                .map(|(n, e)| {
                    let mut o = PushOutcome::with(whole.result.clone());
                    o.status = whole.status;
                    o.attempts = whole.attempts;
                    o.sent_as = e.sent_as;
                    o.same_request = n > 0;
                    if n == 0 {
                        o.stop_target = whole.stop_target;
                        // A bulk request carries several endpoints' operations: the
                        // pause it asks for holds the whole target.
                        o.pause = whole.pause.map(|p| Pause { endpoint: None, ..p });
                        o.throttled = whole.throttled;
                    }
                    o
                })
                .collect();
        }
        let answered = answer
            .as_ref()
            .and_then(|a| a.get("Operations"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::with_capacity(batch.len());
        for (n, entry) in batch.iter().enumerate() {
            let mut outcome = self.bulk_outcome(entry, answer_for(&answered, n));
            outcome.attempts = whole.attempts;
            outcome.sent_as = entry.sent_as;
            if outcome.status == Some(404) {
                // The service lost the group (deleted by hand, say): the next run finds
                // it again.
                tracing::warn!(target_name = %self.name, key = %entry.group, "The target no longer knows the id kept for this group; it is looked up again next run.");
                if let Err(e) = self.forget(ids, Kind::Group, &entry.group).await {
                    outcome.result = Err(e);
                }
            }
            out.push(outcome);
        }
        out
    }

    /// The outcome of one operation from its part of the bulk answer.
    fn bulk_outcome(&self, entry: &Entry, answered: Option<&Value>) -> PushOutcome {
        let Some(answered) = answered else {
            return PushOutcome::with(Err(PushError::Transient(
                "the bulk answer says nothing of this operation".into(),
            )));
        };
        // RFC 7644 writes the status as a string; some services write a number.
        let status = match answered.get("status") {
            Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        };
        let Some(status) = status else {
            return PushOutcome::with(Err(PushError::Transient(
                "the bulk answer gives this operation no status".into(),
            )));
        };
        let mut outcome = PushOutcome::with(Ok(None));
        outcome.status = Some(status);
        if (200..300).contains(&status) {
            return outcome;
        }
        // Judged as the same answer to the operation sent alone.
        let body = answered.get("response").map(Value::to_string).unwrap_or_default();
        let body = self.redact(&body);
        let verdict = match self.endpoint(endpoint_of(&entry.sent)) {
            Ok(ep) => request::judge(
                ep,
                &request::Answer {
                    status,
                    content_type: Some(super::MEDIA),
                    body: &body,
                },
                request::Sent::default(),
            ),
            Err(e) => Verdict::Failure {
                kind: Failure::Rejected,
                message: e.0,
            },
        };
        outcome.throttled = u32::from(status == 429);
        outcome.result = Err(match verdict {
            Verdict::Success { .. } => PushError::Rejected(format!("HTTP {status}")),
            Verdict::Failure { kind, message } => {
                let message = self.redact(&message);
                match kind {
                    Failure::Auth => PushError::Auth {
                        target: self.name.clone(),
                        message,
                    },
                    Failure::Rejected => PushError::Rejected(message),
                    Failure::Retryable => PushError::Transient(message),
                }
            }
        });
        outcome
    }
}

/// The answer to the `n`th operation of a bulk request: the one with its `bulkId`,
/// else the `n`th when that one names no `bulkId` (it is optional but for POST);
/// never another operation's.
fn answer_for(answered: &[Value], n: usize) -> Option<&Value> {
    let id = n.to_string();
    answered
        .iter()
        .find(|a| a.get("bulkId").and_then(Value::as_str) == Some(id.as_str()))
        .or_else(|| answered.get(n).filter(|a| a.get("bulkId").is_none()))
}

/// How many of the operations of these sizes (in bytes) the next bulk request
/// carries: at most the service's operations, and no more bytes than it takes (but
/// always one).
fn batch_len(sizes: impl Iterator<Item = usize>, limits: Limits) -> usize {
    let mut bytes = ENVELOPE;
    let mut n = 0;
    for size in sizes.take(limits.operations) {
        bytes += size + PER_OPERATION;
        if n > 0 && bytes > limits.bytes {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// The envelope of a bulk request and the bulkId of each operation, generously.
const ENVELOPE: usize = 200;
const PER_OPERATION: usize = 32;

/// The bytes of a bulk request carrying one operation of `size` bytes.
fn batch_bytes(size: usize) -> usize {
    ENVELOPE + size + PER_OPERATION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_need_bulk_supported_for_more_than_one_operation() {
        let of = |bulk: Value| Limits::of(&json!({ "bulk": bulk }));
        assert_eq!(
            of(json!({"supported": true, "maxOperations": 50, "maxPayloadSize": 1048576})),
            Some(Limits {
                operations: 50,
                bytes: 1_048_576
            })
        );
        assert_eq!(of(json!({"supported": false, "maxOperations": 50})), None);
        assert_eq!(of(json!({"supported": true, "maxOperations": 1})), None);
        assert_eq!(of(json!({"supported": true})), None);
        assert_eq!(
            of(json!({"supported": true, "maxOperations": 9})).map(|l| l.bytes),
            Some(usize::MAX)
        );
        assert_eq!(Limits::of(&json!({})), None);
    }

    #[test]
    fn each_operation_gets_its_own_answer_or_none() {
        let answered = [
            json!({"bulkId": "2", "status": "201"}),
            json!({"bulkId": "0", "status": "200"}),
            json!({"status": "409"}),
        ];
        assert_eq!(answer_for(&answered, 0), Some(&answered[1]));
        // The answer in its place names another operation: none is its own.
        assert_eq!(answer_for(&answered, 1), None);
        assert_eq!(answer_for(&answered, 2), Some(&answered[0]));
        let unnamed = [json!({"status": "200"}), json!({"status": "404"})];
        assert_eq!(answer_for(&unnamed, 1), Some(&unnamed[1]));
        assert_eq!(answer_for(&unnamed, 2), None);
    }

    #[test]
    fn a_batch_keeps_to_the_operations_and_bytes_the_service_takes() {
        let ten = || std::iter::repeat_n(100, 10);
        let limits = |operations, bytes| Limits { operations, bytes };
        assert_eq!(batch_len(ten(), limits(4, usize::MAX)), 4);
        assert_eq!(batch_len(ten(), limits(100, usize::MAX)), 10);
        // Each operation is 132 bytes with its bulkId, after a 200-byte envelope.
        assert_eq!(batch_len(ten(), limits(100, 700)), 3);
        // One operation larger than the limit still goes, alone.
        assert_eq!(batch_len(std::iter::once(5000), limits(100, 700)), 1);
    }
}

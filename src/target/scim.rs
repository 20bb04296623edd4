//! A SCIM 2.0 service (RFC 7643/7644) as a target: it assigns the ids.
//!
//! The plan, the fingerprints and the snapshot use the keys the mapping gives (the
//! `userName`, `displayName` or `externalId` of each entity). As an operation is
//! sent, each key is replaced by the service's id: kept in the state database, else
//! found with a filtered, paged search, else (when allowed) created. A 404 on a kept
//! id forgets it and finds the entity again. `/ServiceProviderConfig` is read once,
//! the first time a search or a delta needs it: a service without PATCH gets the
//! group's whole list instead, and one without filters is searched by listing its
//! users or groups page by page to the end (no create or deletion in flight while
//! it pages), every id seen kept for the rest of the run. One entity is found or
//! created by one operation at a time. A user
//! who left is deleted by the service's id, and a user the service does not have
//! (404, or not found) is already deleted. Every request goes through
//! `send_with_retries` (auth, retries, pace), like the planned ones, but a create:
//! it is sent again only after a search finds no entity it made before its answer
//! was lost, or after a 429 (which made nothing), the only retry a service without
//! filters gets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, PoisonError};

mod bulk;

use serde_json::{Value, json};

use crate::mapping::DesiredUser;
use crate::plan::{Delta, Operation};
use crate::store::Store;
use crate::target::http::{HttpTarget, Pause, PushError, PushOutcome};
use crate::target::request::{self, Request, Secrets};
use crate::target::spec::{BodyFormat, Endpoint, EndpointKind, Scim, SuccessRule};

const MEDIA: &str = "application/scim+json";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// Users or groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Group,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
        }
    }

    fn resources(self) -> &'static str {
        match self {
            Kind::User => "/Users",
            Kind::Group => "/Groups",
        }
    }

    /// The attribute entities of this kind are found by.
    fn attribute(self, ids: &Ids) -> &str {
        match self {
            Kind::User => &ids.settings.user_filter,
            Kind::Group => &ids.settings.group_filter,
        }
    }

    /// Whether keys of this kind are compared with case: `externalId` is (RFC 7643
    /// §3.1), `userName` and `displayName` are not.
    fn case_exact(self, ids: &Ids) -> bool {
        self.attribute(ids) == "externalId"
    }

    /// A listed resource's (key, id), when it has both.
    fn id_by_key<'r>(self, ids: &Ids, resource: &'r Value) -> Option<(&'r str, &'r str)> {
        let key = resource.get(self.attribute(ids))?.as_str()?;
        Some((key, resource.get("id")?.as_str()?))
    }
}

/// The id of the entity whose key is `key`, else of one whose key differs only in
/// case (SCIM compares `userName` case-insensitively, RFC 7643 §4.1.1).
fn pick<'a>(found: impl Iterator<Item = (&'a str, &'a str)> + Clone, key: &str) -> Option<String> {
    let exact = found.clone().find(|(k, _)| *k == key);
    exact
        .or_else(|| found.into_iter().find(|(k, _)| fold(k) == fold(key)))
        .map(|(_, id)| id.to_owned())
}

/// A key as a service that compares without case sees it (any script, not only
/// ASCII: `Ünal` is `ünal`).
fn fold(key: &str) -> String {
    key.to_lowercase()
}

/// Keys by how a service that compares without case sees them.
#[derive(Debug, Default)]
struct Spellings(HashMap<String, Vec<String>>);

impl Spellings {
    fn of<'k>(keys: impl Iterator<Item = &'k String>) -> Spellings {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for key in keys {
            out.entry(fold(key)).or_default().push(key.clone());
        }
        Spellings(out)
    }

    /// Whether a key other than `key` differs from it only in case.
    fn other_than(&self, key: &str) -> bool {
        self.0
            .get(&fold(key))
            .is_some_and(|keys| keys.iter().any(|k| k != key))
    }
}

/// Whether `key`, which the run no longer wants (or wants disabled), names in the
/// service an entity that another `wanted` key still names: a key that differs only
/// in case, where the service compares without case (a userName renamed `carl` →
/// `Carl`). Deleting, disabling or removing it would take the wanted one.
fn lives_on_as(ids: &Ids, kind: Kind, key: &str, wanted: &Spellings) -> bool {
    !kind.case_exact(ids) && wanted.other_than(key)
}

/// What a search of a service without filters has listed of one kind so far.
#[derive(Debug)]
struct Listing {
    /// (key, id) of every entity listed, by the key in lower case.
    seen: BTreeMap<String, Vec<(String, String)>>,
    /// Where the next page starts; `None` once the last was read.
    next: Option<usize>,
    /// Why a page could not be read: the searches of the rest of the run fail with
    /// it rather than list again from the start.
    failed: Option<String>,
}

/// Held by the one operation finding or creating an entity.
type OneAtATime = Arc<tokio::sync::Mutex<()>>;

/// The ids a SCIM service gave the entities of one target, and what it supports.
#[derive(Debug)]
pub(crate) struct Ids {
    settings: Scim,
    /// Where found and created ids are kept; none in a dry run.
    store: OnceLock<Store>,
    /// (kind, key) → the service's id; loaded from the store on first use.
    known: tokio::sync::Mutex<Option<BTreeMap<(String, String), String>>>,
    /// What the service supports, read once from `/ServiceProviderConfig`.
    features: tokio::sync::OnceCell<Features>,
    /// Per kind, what the searches of a service without filters have listed.
    listed: tokio::sync::Mutex<BTreeMap<&'static str, Listing>>,
    /// Held for writing while a listing pages, for reading while a create or a
    /// deletion is in flight: neither moves an entity across a page boundary of a
    /// listing under way.
    listing: tokio::sync::RwLock<()>,
    /// One lock per (kind, key) being found or created: a member of two groups is
    /// created once, and the second finds the id the first kept.
    resolving: std::sync::Mutex<BTreeMap<(&'static str, String), OneAtATime>>,
    /// How searches, creates and the configuration read are judged.
    endpoint: Endpoint,
    /// A search, create or configuration read the service asked to wait after for
    /// longer than the run waits (its pause, if it named one): every operation that
    /// fails from then on stops the target's run and keeps the pause, as one whose
    /// own request got that answer does.
    asked_to_stop: std::sync::Mutex<Option<Option<Pause>>>,
    /// The keys of the users this run wants, as the service compares them (one
    /// users map a run).
    wanted_users: OnceLock<Spellings>,
}

impl Ids {
    pub(crate) fn new(settings: Scim) -> Ids {
        Ids {
            settings,
            store: OnceLock::new(),
            known: tokio::sync::Mutex::new(None),
            features: tokio::sync::OnceCell::new(),
            listed: tokio::sync::Mutex::new(BTreeMap::new()),
            listing: tokio::sync::RwLock::new(()),
            resolving: std::sync::Mutex::new(BTreeMap::new()),
            asked_to_stop: std::sync::Mutex::new(None),
            wanted_users: OnceLock::new(),
            endpoint: Endpoint {
                kind: EndpointKind::UpdateUser,
                method: reqwest::Method::GET,
                query: vec![],
                headers: vec![],
                format: BodyFormat::Json,
                content_type: MEDIA.into(),
                accept: Some(MEDIA.into()),
                success: SuccessRule {
                    status: 200..=299,
                    conditions: vec![],
                    body: Some(BodyFormat::Json),
                    content_type: None,
                },
                error_message: vec!["/scimType".into(), "/detail".into()],
                response_members: None,
                response_echo: None,
                validations: vec![],
                uses_member_users: false,
            },
        }
    }
}

/// What a service's `/ServiceProviderConfig` says it supports, as far as dirsync's
/// requests adapt to it.
#[derive(Debug, Clone, Copy)]
struct Features {
    patch: bool,
    filter: bool,
    /// What one bulk request may carry, when the service takes them.
    bulk: Option<bulk::Limits>,
}

impl Features {
    /// A service that does not answer gets what every service takes: whole lists, and
    /// filtered searches (the only way to find an entity without listing them all).
    const UNKNOWN: Features = Features {
        patch: false,
        filter: true,
        bulk: None,
    };

    fn of(config: &Value) -> Option<Features> {
        let supported = |key: &str| {
            config
                .pointer(&format!("/{key}/supported"))
                .and_then(Value::as_bool)
        };
        Some(Features {
            patch: supported("patch")?,
            // A service that does not say whether it filters is taken to filter.
            filter: supported("filter").unwrap_or(true),
            bulk: bulk::Limits::of(config),
        })
    }
}

/// An operation with the service's ids, or its outcome when nothing is left to send.
enum Resolved {
    Send(Operation),
    Done(PushOutcome),
}

impl Ids {
    /// [`Ids::wanted_users`], made from `users` the first time.
    fn wanted(&self, users: &BTreeMap<String, DesiredUser>) -> &Spellings {
        self.wanted_users.get_or_init(|| Spellings::of(users.keys()))
    }

    /// The outcome of an operation that failed before or without its own request:
    /// after a lookup the service asked to wait after, it stops the target's run.
    pub(super) fn failed(&self, e: PushError) -> PushOutcome {
        let mut outcome = PushOutcome::with(Err(e));
        if let Some(pause) = *self.asked_to_stop.lock().unwrap_or_else(PoisonError::into_inner) {
            outcome.stop_target = true;
            outcome.pause = pause;
        }
        outcome
    }
}

impl HttpTarget {
    /// Whether `read_members` can read this target's groups back.
    pub(crate) fn reads_groups(&self) -> bool {
        self.scim.is_some()
    }

    /// Keeps the ids found and created from here on in `store`.
    pub(crate) fn keep_ids_in(&self, store: &Store) {
        if let Some(ids) = &self.scim {
            let _ = ids.store.set(store.clone());
        }
    }

    pub(super) async fn push_scim(
        &self,
        ids: &Ids,
        op: &Operation,
        users: &BTreeMap<String, DesiredUser>,
    ) -> PushOutcome {
        let mut requests = 0;
        for attempt in 0..2 {
            // After a 404 the entity is found again in no known state.
            let resolved = match self.resolve(ids, op, users, attempt > 0).await {
                Ok(r) => r,
                Err(e) => return ids.failed(e),
            };
            let sent = match resolved {
                Resolved::Done(mut outcome) => {
                    // A request sent before the entity was found gone counts.
                    outcome.attempts += requests;
                    return outcome;
                }
                Resolved::Send(sent) => sent,
            };
            let mut outcome = {
                let _listing = match sent {
                    Operation::DeleteUser(_) => Some(ids.listing.read().await),
                    _ => None,
                };
                self.push_as_planned(&sent, users).await
            };
            requests += outcome.attempts;
            outcome.attempts = requests;
            // The audit says what went out: a delta to a service without PATCH is
            // sent as the group's whole list.
            outcome.sent_as = Some(sent.kind()).filter(|k| *k != op.kind());
            let (kind, key) = match op {
                Operation::ReplaceMembers(g) => (Kind::Group, &g.group.id),
                Operation::UpdateUser(u) | Operation::DeleteUser(u) => (Kind::User, &u.user.id),
            };
            if outcome.status == Some(404) && attempt == 0 {
                // The service lost the entity (deleted by hand, say): find it again.
                tracing::warn!(target_name = %self.name, kind = kind.key(), key = %key, "The target no longer knows the id kept for this entity; looking it up again.");
                if let Err(e) = self.forget(ids, kind, key).await {
                    return PushOutcome::with(Err(e));
                }
                continue;
            }
            if matches!(op, Operation::DeleteUser(_)) && outcome.result.is_ok() {
                // The kept id goes with the user's snapshot row, when it is recorded.
                if let Some(known) = ids.known.lock().await.as_mut() {
                    known.remove(&(kind.key().to_owned(), key.clone()));
                }
            }
            return outcome;
        }
        PushOutcome::with(Err(PushError::Rejected("the target answered 404 twice".into())))
    }

    /// The operation with the service's ids in place of the keys; with `found_again`
    /// (after a 404 for the id kept), a group change goes as the whole list.
    async fn resolve(
        &self,
        ids: &Ids,
        op: &Operation,
        users: &BTreeMap<String, DesiredUser>,
        found_again: bool,
    ) -> Result<Resolved, PushError> {
        match op {
            Operation::UpdateUser(u)
                if !u.user.user.enabled && lives_on_as(ids, Kind::User, &u.user.id, ids.wanted(users)) =>
            {
                Ok(Resolved::Done(nothing_sent()))
            }
            Operation::UpdateUser(u) if !u.user.user.enabled => {
                // A user being disabled is never created: one the service does not
                // have (deleted by hand, or never created) has nothing to disable.
                match self.find_or_create(ids, Kind::User, &u.user.id, None).await? {
                    Some((id, _)) => {
                        let mut sent = u.clone();
                        sent.user.id = id;
                        Ok(Resolved::Send(Operation::UpdateUser(sent)))
                    }
                    None => Ok(Resolved::Done(nothing_sent())),
                }
            }
            Operation::UpdateUser(u) => {
                // A user is created with the very body an update sends: the creation
                // confirms it.
                let create = match ids.settings.create_users {
                    true => Some(self.user_body(&u.user)?),
                    false => None,
                };
                let (id, created) = self.id_of(ids, Kind::User, &u.user.id, create).await?;
                if created {
                    let mut outcome = PushOutcome::with(Ok(None));
                    outcome.status = Some(201);
                    outcome.attempts = 1;
                    return Ok(Resolved::Done(outcome));
                }
                let mut sent = u.clone();
                sent.user.id = id;
                Ok(Resolved::Send(Operation::UpdateUser(sent)))
            }
            Operation::DeleteUser(u) if lives_on_as(ids, Kind::User, &u.user.id, ids.wanted(users)) => {
                Ok(Resolved::Done(nothing_sent()))
            }
            Operation::DeleteUser(u) => match self.find_or_create(ids, Kind::User, &u.user.id, None).await? {
                Some((id, _)) => {
                    let mut sent = u.clone();
                    sent.user.id = id;
                    Ok(Resolved::Send(Operation::DeleteUser(sent)))
                }
                // Not in the service (deleted by hand, or never created): nothing to send.
                None => Ok(Resolved::Done(nothing_sent())),
            },
            Operation::ReplaceMembers(g) => {
                let mut sent = g.clone();
                if g.delta.is_some() && !self.features(ids).await.patch {
                    // The list the group holds once this delta is applied, whole.
                    sent.delta = None;
                }
                let create = ids.settings.create_groups.then(|| {
                    let mut body = json!({ "schemas": [GROUP_SCHEMA], "displayName": g.group.name });
                    if ids.settings.group_filter == "externalId" {
                        body["externalId"] = json!(g.group.id);
                    }
                    body.to_string()
                });
                let (id, created) = self.id_of(ids, Kind::Group, &g.group.id, create).await?;
                sent.group.id = id;
                if created || found_again {
                    // A group created just now is empty, and one found again after a
                    // 404 (deleted and made again by hand, say) holds who knows
                    // what: a delta would leave either without the members confirmed
                    // before; it gets the whole list.
                    sent.delta = None;
                }
                match sent.delta {
                    None => sent.group.members = self.member_ids(ids, &g.group.members, users, true).await?,
                    Some(Delta::Add) => sent.added = self.member_ids(ids, &g.added, users, true).await?,
                    Some(Delta::Remove) => {
                        // A member the service does not have is already not in the group;
                        // one the group still names by another case is still in it.
                        let kept = Spellings::of(g.group.members.iter());
                        let removed: BTreeSet<String> = g
                            .removed
                            .iter()
                            .filter(|k| !lives_on_as(ids, Kind::User, k, &kept))
                            .cloned()
                            .collect();
                        sent.removed = self.member_ids(ids, &removed, users, false).await?;
                        if sent.removed.is_empty() {
                            return Ok(Resolved::Done(nothing_sent()));
                        }
                    }
                }
                Ok(Resolved::Send(Operation::ReplaceMembers(sent)))
            }
        }
    }

    /// The members a group holds in the service, by the keys dirsync knows them by
    /// (a member dirsync never mapped, by the service's id); `None` when the service
    /// has no such group.
    pub(crate) async fn read_members(&self, group: &str) -> Result<Option<BTreeSet<String>>, PushError> {
        let Some(ids) = &self.scim else {
            return Err(PushError::Rejected(
                "the target cannot read a group's members".into(),
            ));
        };
        let Some((id, _)) = self.find_or_create(ids, Kind::Group, group, None).await? else {
            return Ok(None);
        };
        let (outcome, answer) = self
            .call(
                ids,
                reqwest::Method::GET,
                format!("/Groups/{}", encode(&id)),
                String::new(),
            )
            .await;
        if outcome.status == Some(404) {
            self.forget(ids, Kind::Group, group).await?;
            return Ok(None);
        }
        outcome.result?;
        let keys: BTreeMap<String, String> = ids
            .known
            .lock()
            .await
            .iter()
            .flatten()
            .filter(|((kind, _), _)| kind == Kind::User.key())
            .map(|((_, key), id)| (id.clone(), key.clone()))
            .collect();
        let members = answer
            .as_ref()
            .and_then(|a| a.get("members"))
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|m| m.get("value").and_then(Value::as_str))
                    .map(|id| keys.get(id).cloned().unwrap_or_else(|| id.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(members))
    }

    /// The service's ids of `keys`. With `required`, every member must be found (or
    /// created, when allowed); otherwise the ones not found are left out.
    async fn member_ids(
        &self,
        ids: &Ids,
        keys: &BTreeSet<String>,
        users: &BTreeMap<String, DesiredUser>,
        required: bool,
    ) -> Result<BTreeSet<String>, PushError> {
        let mut out = BTreeSet::new();
        let mut missing = Vec::new();
        for key in keys {
            // A disabled member is created disabled (`active: false`): the group
            // names it, and a member the service lacks fails the whole group.
            let create = match users.get(key) {
                Some(u) if required && ids.settings.create_users => Some(self.user_body(u)?),
                _ => None,
            };
            match self.find_or_create(ids, Kind::User, key, create).await? {
                Some((id, _)) => {
                    out.insert(id);
                }
                None => missing.push(key.as_str()),
            }
        }
        if required && !missing.is_empty() {
            let names = crate::text::first_few(missing.iter().map(|k| format!("{k:?}")));
            return Err(PushError::Rejected(self.redact(&format!(
                "member(s) {names} not found in the target by `{}`; set `scim.create_users = true` to create them",
                ids.settings.user_filter
            ))));
        }
        Ok(out)
    }

    /// The body that creates or updates a user: the update endpoint's own.
    fn user_body(&self, user: &DesiredUser) -> Result<String, PushError> {
        self.user_request(user, Secrets::Real)
            .map(|r| r.body)
            .map_err(|e| PushError::Build(self.redact(&e.0)))
    }

    /// The service's id for `key`, and whether it was created just now.
    async fn id_of(
        &self,
        ids: &Ids,
        kind: Kind,
        key: &str,
        create: Option<String>,
    ) -> Result<(String, bool), PushError> {
        let may_create = create.is_some();
        match self.find_or_create(ids, kind, key, create).await? {
            Some(found) => Ok(found),
            None => {
                let (attr, switch) = match kind {
                    Kind::User => (&ids.settings.user_filter, "create_users"),
                    Kind::Group => (&ids.settings.group_filter, "create_groups"),
                };
                let allowed = match kind {
                    Kind::User => ids.settings.create_users,
                    Kind::Group => ids.settings.create_groups,
                };
                let hint = match may_create || allowed {
                    true => String::new(),
                    false => format!("; set `scim.{switch} = true` to create it"),
                };
                Err(PushError::Rejected(self.redact(&format!(
                    "no {} with {attr} {key:?} in the target{hint}",
                    kind.key()
                ))))
            }
        }
    }

    async fn find_or_create(
        &self,
        ids: &Ids,
        kind: Kind,
        key: &str,
        create: Option<String>,
    ) -> Result<Option<(String, bool)>, PushError> {
        if let Some(id) = self.kept_id(ids, kind, key).await? {
            return Ok(Some((id, false)));
        }
        let one = Arc::clone(
            ids.resolving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((kind.key(), key.to_owned()))
                .or_default(),
        );
        let _resolving = one.lock().await;
        // Found or created meanwhile by another operation (a member of two groups).
        if let Some(id) = self.kept_id(ids, kind, key).await? {
            return Ok(Some((id, false)));
        }
        if let Some(id) = self.search(ids, kind, key).await? {
            self.keep(ids, kind, key, &id).await?;
            return Ok(Some((id, false)));
        }
        let Some(body) = create else { return Ok(None) };
        self.findable(ids, kind, key, &body)?;
        // A create is never sent again blind: the service may have made the entity
        // before its answer was lost (a timeout, a proxy's 502), and a second POST
        // would make another (`displayName` need not be unique). Before each retry
        // the service is searched again, but after a 429, which made nothing. A
        // service without filters, whose listing this run has read already, is sent
        // the create again only after a 429: the next run lists it afresh.
        let filters = self.features(ids).await.filter;
        let mut attempt = 1;
        let (outcome, answer) = loop {
            let (outcome, answer) = {
                let _listing = ids.listing.read().await;
                let path = kind.resources().to_owned();
                self.call_attempts(ids, reqwest::Method::POST, path, body.clone(), 1)
                    .await
            };
            let transient = matches!(outcome.result, Err(PushError::Transient(_))) && !outcome.stop_target;
            let made_nothing = outcome.status == Some(429);
            if !transient || !(made_nothing || filters) || !self.wait_to_retry(attempt).await {
                break (outcome, answer);
            }
            attempt += 1;
            if made_nothing {
                continue;
            }
            if let Some(id) = self.search(ids, kind, key).await? {
                tracing::info!(target_name = %self.name, kind = kind.key(), key = %key, id = %id, "Found the entity a create made before its answer was lost.");
                self.keep(ids, kind, key, &id).await?;
                return Ok(Some((id, made_now(kind))));
            }
        };
        match outcome.result {
            Ok(_) => {
                let id = answer
                    .as_ref()
                    .and_then(|a| a.get("id"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        PushError::Rejected(format!(
                            "the target created the {} but answered no `id`",
                            kind.key()
                        ))
                    })?
                    .to_owned();
                tracing::info!(target_name = %self.name, kind = kind.key(), key = %key, id = %id, "Created the entity in the target.");
                self.keep(ids, kind, key, &id).await?;
                Ok(Some((id, true)))
            }
            // The service has it, though a search did not show it: made by a create
            // whose answer was lost, or not yet in the service's search results.
            Err(_) if outcome.status == Some(409) => match self.search(ids, kind, key).await? {
                Some(id) => {
                    self.keep(ids, kind, key, &id).await?;
                    Ok(Some((id, made_now(kind))))
                }
                None => Err(outcome
                    .result
                    .err()
                    .unwrap_or_else(|| PushError::Rejected("HTTP 409".into()))),
            },
            Err(e) => Err(e),
        }
    }

    /// Refuses a create that no search would find again: one whose lookup attribute
    /// (`userName`, `displayName` or `externalId`) is not `key`. It would be made on
    /// every run that lost its kept id, and an entity already in the service under
    /// the key would never be found.
    fn findable(&self, ids: &Ids, kind: Kind, key: &str, body: &str) -> Result<(), PushError> {
        let attr = kind.attribute(ids);
        let made = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|b| b.get(attr).and_then(Value::as_str).map(str::to_owned));
        let found = made
            .as_deref()
            .is_some_and(|v| v == key || (!kind.case_exact(ids) && fold(v) == fold(key)));
        if found {
            return Ok(());
        }
        let made = made.map_or_else(|| format!("no {attr}"), |v| format!("{attr} {v:?}"));
        let fix = match kind {
            Kind::Group => {
                "make the group's target_id what it is found by (`target_id = \"{{ group.name }}\"` with `displayName`), or set `scim.group_filter = \"externalId\"`"
            }
            Kind::User => "make `users.id_template` give what the update body sends as that attribute",
        };
        Err(PushError::Rejected(self.redact(&format!(
            "not created: the {} would be made with {made}, but is found by {attr} {key:?}, so no later search would find it; {fix}",
            kind.key()
        ))))
    }

    /// The id kept for `key`, from the store the first time.
    async fn kept_id(&self, ids: &Ids, kind: Kind, key: &str) -> Result<Option<String>, PushError> {
        let mut known = ids.known.lock().await;
        if known.is_none() {
            let loaded = match ids.store.get() {
                Some(store) => store
                    .target_ids(&self.name)
                    .await
                    .map_err(|e| PushError::Transient(format!("cannot read the kept ids: {e}")))?,
                None => BTreeMap::new(),
            };
            *known = Some(loaded);
        }
        Ok(known
            .as_ref()
            .and_then(|k| k.get(&(kind.key().to_owned(), key.to_owned())))
            .cloned())
    }

    /// Searches the service for the entity whose filter attribute is `key`, page by
    /// page (`startIndex`, `count`).
    async fn search(&self, ids: &Ids, kind: Kind, key: &str) -> Result<Option<String>, PushError> {
        if !self.features(ids).await.filter {
            return self.search_listing(ids, kind, key).await;
        }
        let attr = kind.attribute(ids);
        let quoted = serde_json::to_string(key).unwrap_or_default();
        let filter = format!("filter={}&", encode(&format!("{attr} eq {quoted}")));
        let mut start = 1usize;
        loop {
            let (resources, next) = self.page(ids, kind, &filter, start).await?;
            // Filters compare `userName` case-insensitively (RFC 7643 §4.1.1); the
            // key is the value dirsync sends, so an exact match is preferred.
            let found = pick(resources.iter().filter_map(|r| kind.id_by_key(ids, r)), key);
            if found.is_some() {
                return Ok(found);
            }
            match next {
                Some(n) => start = n,
                None => return Ok(None),
            }
        }
    }

    /// A search of a service without filters: the kind's entities listed page by
    /// page to the end, once a run (one listing at a time), what it shows kept for
    /// the searches after.
    async fn search_listing(&self, ids: &Ids, kind: Kind, key: &str) -> Result<Option<String>, PushError> {
        let mut listings = ids.listed.lock().await;
        let listing = listings.entry(kind.key()).or_insert_with(|| Listing {
            seen: BTreeMap::new(),
            next: Some(1),
            failed: None,
        });
        if let Some(why) = &listing.failed {
            return Err(PushError::Transient(why.clone()));
        }
        let folded = fold(key);
        loop {
            let same = listing.seen.get(&folded).map_or(&[][..], Vec::as_slice);
            // The exact key wins, however far on it is listed.
            if let Some((_, id)) = same.iter().find(|(k, _)| k == key) {
                return Ok(Some(id.clone()));
            }
            let Some(mut start) = listing.next else {
                if kind.case_exact(ids) {
                    return Ok(None);
                }
                return Ok(same.first().map(|(_, id)| id.clone()));
            };
            // Read to the end with no create or deletion in flight: one sent between
            // two pages would shift the later ones, and an entity on the boundary
            // would be missed, then taken as deleted or created again.
            let _listing = ids.listing.write().await;
            loop {
                let (resources, next) = match self.page(ids, kind, "", start).await {
                    Ok(page) => page,
                    Err(e) => {
                        // Not listed again from a page that may have shifted since,
                        // nor from the start by every search that follows.
                        listing.failed =
                            Some(format!("the {} listing failed at item {start}: {e}", kind.key()));
                        return Err(e);
                    }
                };
                for (k, id) in resources.iter().filter_map(|r| kind.id_by_key(ids, r)) {
                    let same = listing.seen.entry(fold(k)).or_default();
                    same.push((k.to_owned(), id.to_owned()));
                }
                listing.next = next;
                match next {
                    Some(n) => start = n,
                    None => break,
                }
            }
        }
    }

    /// One page of `kind` from `start`, with the start of the next page if any.
    async fn page(
        &self,
        ids: &Ids,
        kind: Kind,
        filter: &str,
        start: usize,
    ) -> Result<(Vec<Value>, Option<usize>), PushError> {
        let count = ids.settings.page_size;
        let path = format!("{}?{filter}startIndex={start}&count={count}", kind.resources());
        let (outcome, answer) = self.call(ids, reqwest::Method::GET, path, String::new()).await;
        outcome.result?;
        let answer = answer.unwrap_or(Value::Null);
        let resources = answer
            .get("Resources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let total = answer.get("totalResults").and_then(Value::as_u64).unwrap_or(0) as usize;
        let next =
            (!resources.is_empty() && start - 1 + resources.len() < total).then(|| start + resources.len());
        Ok((resources, next))
    }

    /// What the service supports, from `/ServiceProviderConfig` (read once).
    async fn features(&self, ids: &Ids) -> Features {
        *ids.features
            .get_or_init(|| async {
                let (outcome, answer) = self
                    .call(ids, reqwest::Method::GET, "/ServiceProviderConfig".into(), String::new())
                    .await;
                match (&outcome.result, answer.as_ref().and_then(Features::of)) {
                    (Ok(_), Some(features)) => features,
                    _ => {
                        tracing::warn!(target_name = %self.name, "The target's /ServiceProviderConfig does not say what it supports; sending whole member lists, searching with filters, and no bulk requests.");
                        Features::UNKNOWN
                    }
                }
            })
            .await
    }

    async fn keep(&self, ids: &Ids, kind: Kind, key: &str, id: &str) -> Result<(), PushError> {
        if let Some(store) = ids.store.get() {
            store
                .set_target_id(&self.name, kind.key(), key, id)
                .await
                .map_err(|e| PushError::Transient(format!("cannot keep the target's id: {e}")))?;
        }
        let mut known = ids.known.lock().await;
        known
            .get_or_insert_with(BTreeMap::new)
            .insert((kind.key().to_owned(), key.to_owned()), id.to_owned());
        Ok(())
    }

    async fn forget(&self, ids: &Ids, kind: Kind, key: &str) -> Result<(), PushError> {
        if let Some(store) = ids.store.get() {
            store
                .forget_target_id(&self.name, kind.key(), key)
                .await
                .map_err(|e| PushError::Transient(format!("cannot forget the target's id: {e}")))?;
        }
        if let Some(known) = ids.known.lock().await.as_mut() {
            known.remove(&(kind.key().to_owned(), key.to_owned()));
        }
        Ok(())
    }

    /// One SCIM request of dirsync's own (search, create, configuration), with its
    /// parsed answer.
    async fn call(
        &self,
        ids: &Ids,
        method: reqwest::Method,
        path: String,
        body: String,
    ) -> (PushOutcome, Option<Value>) {
        let attempts = self.spec().retry.max_attempts;
        self.call_attempts(ids, method, path, body, attempts).await
    }

    /// `call` with at most `max_attempts` attempts.
    async fn call_attempts(
        &self,
        ids: &Ids,
        method: reqwest::Method,
        path: String,
        body: String,
        max_attempts: u32,
    ) -> (PushOutcome, Option<Value>) {
        let req = Request {
            method,
            path_and_query: path,
            headers: vec![],
            content_type: MEDIA.into(),
            accept: Some(MEDIA.into()),
            body,
        };
        let mut answer = String::new();
        let outcome = self
            .send_attempts(
                &ids.endpoint,
                &req,
                request::Sent::default(),
                Some(&mut answer),
                max_attempts,
            )
            .await;
        if outcome.stop_target {
            // Every operation looks entities up first: the pause holds the whole target.
            let pause = outcome.pause.map(|p| Pause { endpoint: None, ..p });
            *ids.asked_to_stop.lock().unwrap_or_else(PoisonError::into_inner) = Some(pause);
        }
        (outcome, serde_json::from_str(&answer).ok())
    }
}

/// Whether an entity found after a create that may have made it counts as created
/// now: a group made by the create is empty and gets its whole list; a user gets
/// the update, whatever body made it.
fn made_now(kind: Kind) -> bool {
    kind == Kind::Group
}

/// An operation confirmed with no request: what it asks of the service is so already.
fn nothing_sent() -> PushOutcome {
    let mut outcome = PushOutcome::with(Ok(None));
    outcome.attempts = 0;
    outcome
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_quoted_and_encoded() {
        let quoted = serde_json::to_string("a \"b\"\\c").unwrap_or_default();
        assert_eq!(
            encode(&format!("userName eq {quoted}")),
            "userName%20eq%20%22a%20%5C%22b%5C%22%5C%5Cc%22"
        );
    }
}

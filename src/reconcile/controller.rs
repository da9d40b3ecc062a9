//! The reconciler: one Pod and one claim per WhatsAppSession, and the session's status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::k8s::crd::{ReclaimPolicy, WhatsAppSession, WhatsAppSessionStatus};
use crate::k8s::names::{
    MANAGED_BY, MANAGED_BY_LABEL, SESSION_LABEL, is_controlled_by, pod_name, pod_spec_hash, pvc_name,
};
use crate::k8s::session_state::PodFacts;
use crate::k8s::status::{PairingMethod, StoredStatus};
use crate::k8s::tolerated::{CONFLICT, NOT_FOUND, tolerating};
use crate::k8s::worker_pod::WorkerPod;
use crate::reconcile::changes_that_matter;
use crate::reconcile::decisions::{
    DeleteReason, NameConflict, PlanInput, PodAction, StatusInput, desired_status, facts_after, plan_pod,
};
use crate::reconcile::desired::{PodDefaults, desired_pod, desired_pvc, reclaim_policy};
use crate::reconcile::error::{Error, Result};
use crate::reconcile::event_recorder::{Event, EventQueue, EventType};
use crate::reconcile::id_counter::IdAllocator;
use crate::reconcile::leader_election::Leadership;
use crate::reconcile::session_memory::Memory;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "whatsapp-operator";
/// Finalizer that lets the operator decide the fate of the pairing data on deletion.
pub const FINALIZER: &str = "whatsapp-operator.dev/cleanup";
/// A safety net: even without events every session is looked at about this often. The watches
/// deliver every change and a relist reconciles everything, so this only bounds how long a
/// missed event could go unnoticed; at 10,000 sessions five minutes cost 33 reconciles a
/// second for nothing (controller-runtime's default is ten hours).
const RESYNC: Duration = Duration::from_secs(3600);
/// Each session's resync is put off by up to this much, by its uid, so that a fleet created
/// in a burst does not resync in one.
const RESYNC_SPREAD: Duration = Duration::from_secs(600);
/// A session's status (and the Events that come with it) is written at most this often.
const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    pub client: Client,
    pub sessions: Store<WhatsAppSession>,
    pub pods: Store<WorkerPod>,
    pub defaults: PodDefaults,
    pub ids: IdAllocator,
    pub events: EventQueue,
    /// Only the leader writes; the others keep their stores warm and serve reads.
    pub leader: Leadership,
    pub memory: Memory,
    pub metrics: Arc<crate::telemetry::operator_metrics::Metrics>,
}

/// Runs the controller until `shutdown` resolves. Triggers come from the objects the stores'
/// watches announce (`store::reflectors`), so the controller adds no watch of its own;
/// updates that change nothing a reconcile reads do not trigger it (`changes_that_matter`).
pub fn run(
    ctx: Arc<Context>,
    sessions: impl Stream<Item = Arc<WhatsAppSession>> + Send + 'static,
    pods: impl Stream<Item = Arc<WorkerPod>> + Send + 'static,
    pod_deletions: impl Stream<Item = ObjectRef<WhatsAppSession>> + Send + 'static,
    reconcile_all: impl Stream<Item = ()> + Send + 'static,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let sessions = changes_that_matter::sessions_that_matter(sessions, ctx.sessions.clone(), ctx.clone());
    let pods = changes_that_matter::pods_that_matter(pods, ctx.pods.clone());
    Controller::for_shared_stream(sessions, ctx.sessions.clone())
        .owns_shared_stream(pods)
        .reconcile_on(pod_deletions)
        .reconcile_all_on(reconcile_all)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "reconcile failed");
            }
        })
}

impl changes_that_matter::OwnWrites for Context {
    fn is_own(&self, uid: &str, status: Option<&WhatsAppSessionStatus>) -> bool {
        self.memory.is_own_status(uid, status)
    }
}

async fn reconcile(session: Arc<WhatsAppSession>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.leader.is_leader() {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile_timer();
    let ns = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = session.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let api: Api<WhatsAppSession> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, session, |event| async {
        match event {
            Finalizer::Apply(s) => apply(&s, &ctx).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    // Leadership lapsed in the middle: the next leader takes the session over.
    if result.as_ref().is_err_and(Error::is_not_leader) {
        return Ok(Action::await_change());
    }
    ctx.metrics
        .reconciled(result.as_ref().err().map(|e| e.category().as_str()));
    if result.is_ok() {
        ctx.memory.reset_errors(&uid);
    }
    result
}

fn error_policy(session: Arc<WhatsAppSession>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(
        session = %ObjectRef::from_obj(session.as_ref()),
        category = error.category().as_str(),
        error = %error,
        "reconcile failed"
    );
    if error.is_permanent() {
        return Action::await_change();
    }
    Action::requeue(ctx.memory.record_error(&session.uid().unwrap_or_default()))
}

async fn apply(cached: &WhatsAppSession, ctx: &Context) -> Result<Action> {
    let ns = cached
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = cached.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let version = cached.resource_version().unwrap_or_default();
    // Until the watch delivers our last status write, that write is the current status.
    let session = &WhatsAppSession {
        status: ctx
            .memory
            .pending_status(&uid, &version)
            .or_else(|| cached.status.clone()),
        ..cached.clone()
    };
    let id = session_id_number(session, &uid, ctx).await?;

    let mut conflict = None;
    let mut pod = ctx.pods.get(&ObjectRef::new(&pod_name(session)).within(&ns));
    if let Some(p) = pod.as_deref().filter(|p| !is_controlled_by(*p, &uid)) {
        // A Pod of an earlier session with the same name: wait for the garbage collector.
        if controlled_by_a_session(p) {
            debug!(pod = %p.name_any(), "Pod belongs to an earlier session; waiting");
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        // Anything else is not ours to manage, restart or point the status at.
        conflict = Some(NameConflict::Pod(p.name_any()));
        pod = None;
    }
    let facts = pod.as_deref().map(PodFacts::from_pod);
    let desired = desired_pod(session, &ctx.defaults);
    let now = Instant::now();
    let mut action = match conflict {
        Some(_) => PodAction::Keep,
        None => plan_pod(
            session,
            &PlanInput {
                pod: pod.as_deref(),
                facts: facts.as_ref(),
                desired_hash: pod_spec_hash(&desired).unwrap_or_default(),
                backoff_left: ctx.memory.backoff_left(&uid, now),
            },
        ),
    };

    let stored_restarts = session.status.as_ref().and_then(|s| s.restarts).unwrap_or(0);
    let mut restarts = stored_restarts.max(ctx.memory.restarts(&uid));
    let mut claim_uid = None;
    if matches!(action, PodAction::Create { .. }) {
        match ensure_pvc(session, &ns, ctx).await? {
            Claim::Ready(uid) => claim_uid = Some(uid),
            Claim::Terminating => {
                debug!(session = %session.name_any(), %ns, "claim is being deleted; waiting");
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            Claim::Foreign => {
                conflict = Some(NameConflict::Claim(pvc_name(session)));
                action = PodAction::Keep;
            }
        }
    }
    match &action {
        PodAction::Keep | PodAction::Backoff(_) => {}
        PodAction::Create { restart } => match create_pod(&desired, &ns, &uid, ctx).await? {
            Created::New => {
                if *restart {
                    restarts += 1;
                    ctx.memory.record_restart(&uid, now, restarts);
                }
                info!(session = %session.name_any(), %ns, restart, restarts, "created Pod");
            }
            Created::AlreadyOurs => {
                debug!(session = %session.name_any(), %ns, "Pod already exists; the cache was behind");
            }
            // Not in the cache (it only holds the operator's labelled Pods): found by its name.
            Created::Foreign => {
                conflict = Some(NameConflict::Pod(pod_name(session)));
                action = PodAction::Keep;
            }
        },
        PodAction::Delete { uid: pod_uid, reason } => {
            delete_pod(&pod_name(session), pod_uid, &ns, ctx).await?;
            info!(session = %session.name_any(), %ns, ?reason, "deleted Pod");
        }
    }

    let facts = facts_after(&action, facts.as_ref());
    let status = desired_status(
        session,
        facts.as_ref(),
        &StatusInput {
            id,
            restarts,
            now: Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH),
            claim_uid,
            conflict: conflict.clone(),
        },
    );

    if status.status.is_some_and(StoredStatus::is_connected) {
        ctx.memory.connected(&uid);
    }
    let wait = ctx.memory.write_pace(&uid, Instant::now(), WRITE_INTERVAL);
    if !wait.is_zero() && session.status.clone().unwrap_or_default() != status {
        debug!(session = %session.name_any(), ?wait, "status changed again soon; writing it later");
        return Ok(Action::requeue(wait));
    }
    write_status(session, status, ctx).await?;
    if let Some(conflict) = &conflict {
        warn!(session = %session.name_any(), %ns, reason = conflict.reason(), "name conflict");
        let event = Event {
            type_: EventType::Warning,
            reason: "NameConflict".into(),
            note: Some(conflict.message()),
            action: "Reconcile".into(),
            secondary: None,
        };
        publish(event, session, ctx);
    }
    Ok(next_look(&action, &uid))
}

/// When to look at the session again without an event: when its restart backoff ends; soon
/// after a finished Pod was deleted, to start the next one; otherwise at the resync.
fn next_look(action: &PodAction, uid: &str) -> Action {
    match action {
        PodAction::Backoff(left) => Action::requeue(*left),
        PodAction::Delete {
            reason: DeleteReason::Finished,
            ..
        } => Action::requeue(Duration::from_secs(1)),
        _ => Action::requeue(resync(uid)),
    }
}

/// The session's resync period: `RESYNC`, plus a share of `RESYNC_SPREAD` fixed by its uid.
fn resync(uid: &str) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    RESYNC + Duration::from_millis(h.finish() % RESYNC_SPREAD.as_millis() as u64)
}

/// The session's numeric id: the stored one, else one we wrote and the cache has not caught
/// up with, else a new one.
async fn session_id_number(session: &WhatsAppSession, uid: &str, ctx: &Context) -> Result<i64> {
    if let Some(id) = session.status.as_ref().and_then(|s| s.id) {
        return Ok(id);
    }
    if let Some(id) = ctx.memory.id(uid) {
        return Ok(id);
    }
    fence(ctx)?;
    let id = ctx.ids.allocate(|| highest_id(&ctx.sessions) + 1).await?;
    ctx.memory.set_id(uid, id);
    Ok(id)
}

fn highest_id(sessions: &Store<WhatsAppSession>) -> i64 {
    sessions
        .state()
        .iter()
        .filter_map(|s| s.status.as_ref()?.id)
        .max()
        .unwrap_or(0)
}

/// The claim for the session's pairing data, as found (or created).
#[derive(Debug, PartialEq)]
enum Claim {
    /// The session's own claim (created now, or retained from an earlier session of the same
    /// name, which holds that session's pairing: exactly what we want), with its uid.
    Ready(String),
    /// Being deleted: a Pod created now would mount a claim about to vanish.
    Terminating,
    /// Of the same name but without the session's label: never adopted.
    Foreign,
}

async fn ensure_pvc(session: &WhatsAppSession, ns: &str, ctx: &Context) -> Result<Claim> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    // Create only: a claim's spec is mostly immutable.
    let found = match api.get_opt(&pvc_name(session)).await? {
        Some(found) => found,
        None => {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            fence(ctx)?;
            match tolerating(api.create(&params, &desired_pvc(session)).await, &[CONFLICT])? {
                Some(created) => created,
                // Created meanwhile by someone else: judge it like any claim found.
                None => api.get(&pvc_name(session)).await?,
            }
        }
    };
    Ok(judge_claim(session, &found))
}

fn judge_claim(session: &WhatsAppSession, claim: &PersistentVolumeClaim) -> Claim {
    if claim.metadata.deletion_timestamp.is_some() {
        return Claim::Terminating;
    }
    if !is_sessions_claim(session, claim) {
        return Claim::Foreign;
    }
    claim.uid().map_or(Claim::Foreign, Claim::Ready)
}

/// Labelled by the operator for a session of this name.
fn is_sessions_claim(session: &WhatsAppSession, claim: &PersistentVolumeClaim) -> bool {
    let labels = claim.labels();
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(SESSION_LABEL) == Some(&session.name_any())
}

/// Owned (as controller) by some WhatsAppSession: an earlier session of the same name.
fn controlled_by_a_session<K: Resource>(obj: &K) -> bool {
    obj.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.kind == WhatsAppSession::kind(&())
            && o.api_version == WhatsAppSession::api_version(&())
    })
}

/// What creating the session's Pod found.
enum Created {
    New,
    /// The session's Pod was there already: the cache had not seen it yet (the deterministic
    /// name keeps it to one Pod).
    AlreadyOurs,
    /// A Pod of that name that is not the session's.
    Foreign,
}

async fn create_pod(pod: &Pod, ns: &str, session_uid: &str, ctx: &Context) -> Result<Created> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    fence(ctx)?;
    if tolerating(api.create(&params, pod).await, &[CONFLICT])?.is_some() {
        return Ok(Created::New);
    }
    let name = pod.name_any();
    Ok(match api.get_opt(&name).await? {
        Some(found) if !is_controlled_by(&found, session_uid) && !controlled_by_a_session(&found) => {
            Created::Foreign
        }
        _ => Created::AlreadyOurs,
    })
}

async fn delete_pod(name: &str, uid: &str, ns: &str, ctx: &Context) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let params = DeleteParams {
        // Never delete a newer Pod of the same name than the one we decided about.
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    fence(ctx)?;
    // Gone already, or replaced by a newer Pod (the precondition failed): nothing to delete.
    tolerating(api.delete(name, &params).await, &[NOT_FOUND, CONFLICT])?;
    Ok(())
}

/// Writes the status with server-side apply, only when it differs from what is stored, and
/// records an Event when the stored status moved.
async fn write_status(session: &WhatsAppSession, status: WhatsAppSessionStatus, ctx: &Context) -> Result<()> {
    let prev = session.status.clone().unwrap_or_default();
    if prev == status {
        debug!(session = %session.name_any(), version = ?session.resource_version(), "status unchanged");
        return Ok(());
    }
    let uid = session.uid().unwrap_or_default();
    let version = session.resource_version().unwrap_or_default();
    let api: Api<WhatsAppSession> =
        Api::namespaced(ctx.client.clone(), &session.namespace().unwrap_or_default());
    let mut patch = serde_json::json!({
        "apiVersion": WhatsAppSession::api_version(&()),
        "kind": WhatsAppSession::kind(&()),
        "status": status,
    });
    if prev.id.is_none() {
        // The first write carries the new id: make it conditional on the object we read, so a
        // stale cache can never give a session a second id.
        patch["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    fence(ctx)?;
    // Before sending: the watch may deliver the write before its answer arrives.
    ctx.memory.record_intent(&uid, &status);
    let written = api
        .patch_status(
            &session.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.metrics.status_written();
    debug!(session = %session.name_any(), status = ?status.status, restarts = ?status.restarts, read = %version, produced = ?written.resource_version(), "status written");
    if prev.status != status.status {
        publish_transition(session, prev.status, &status, ctx);
    }
    publish_pairing(session, &prev, &status, ctx);
    let produced = written.resource_version().unwrap_or_default();
    ctx.memory.record_write(&uid, version, produced, status);
    Ok(())
}

fn publish_transition(
    session: &WhatsAppSession,
    from: Option<StoredStatus>,
    status: &WhatsAppSessionStatus,
    ctx: &Context,
) {
    let Some(to) = status.status else { return };
    let type_ = match to {
        StoredStatus::Disconnected | StoredStatus::LoggedOut => EventType::Warning,
        _ => EventType::Normal,
    };
    let from = from.map_or("new".to_string(), |s| s.to_string());
    let mut note = format!("status {from} -> {to}");
    if let (StoredStatus::Disconnected | StoredStatus::LoggedOut, Some(why)) =
        (to, &status.last_disconnect_reason)
    {
        note.push_str(&format!(": {why}"));
    }
    let event = Event {
        type_,
        reason: pascal(to),
        note: Some(note),
        action: "UpdateStatus".into(),
        secondary: None,
    };
    publish(event, session, ctx);
}

/// An Event when a person is first asked to pair the device, and one when the pairing
/// succeeded; a refreshed code is not news.
fn publish_pairing(
    session: &WhatsAppSession,
    prev: &WhatsAppSessionStatus,
    status: &WhatsAppSessionStatus,
    ctx: &Context,
) {
    let (reason, note) = match (&prev.pairing, &status.pairing) {
        (None, Some(p)) => {
            let id = session.session_id();
            let note = match p.method {
                PairingMethod::QrCode => format!(
                    "waiting for a QR code scan: WhatsApp > Linked devices > Link a device (GET /sessions/{id}/qr)"
                ),
                PairingMethod::PairCode => format!(
                    "waiting for the pair code: WhatsApp > Linked devices > Link with phone number (GET /sessions/{id}/pairing-code)"
                ),
            };
            ("PairingStarted", note)
        }
        (Some(_), None) if status.is_authenticated == Some(true) => {
            ("Paired", "the device was paired with a phone".to_string())
        }
        _ => return,
    };
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: "Pair".into(),
        secondary: None,
    };
    publish(event, session, ctx);
}

/// Queues an Event about `session`, unless leadership lapsed (`EventQueue`).
fn publish(event: Event, session: &WhatsAppSession, ctx: &Context) {
    if fence(ctx).is_err() {
        return;
    }
    ctx.events.send(event, session.object_ref(&()));
}

/// Every write checks leadership again: a reconcile that started as leader may outlive it.
fn fence(ctx: &Context) -> Result<()> {
    if ctx.leader.is_leader() {
        Ok(())
    } else {
        Err(Error::NotLeader)
    }
}

fn pascal(s: StoredStatus) -> String {
    match s {
        StoredStatus::Connecting => "Connecting",
        StoredStatus::Connected => "Connected",
        StoredStatus::Authenticated => "Authenticated",
        StoredStatus::Disconnected => "Disconnected",
        StoredStatus::LoggedOut => "LoggedOut",
    }
    .into()
}

/// Deletes the session's claim: the one whose uid the status recorded, else one labelled as the
/// session's (recorded before claims were), never another of the same name. True when it is
/// gone (also when it was already).
async fn delete_claim(session: &WhatsAppSession, ns: &str, ctx: &Context) -> Result<bool> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let recorded = session.status.as_ref().and_then(|s| s.claim_uid.clone());
    let uid = match recorded {
        Some(uid) => uid,
        None => match api.get_opt(&pvc_name(session)).await? {
            None => return Ok(true),
            Some(claim) if is_sessions_claim(session, &claim) => claim.uid().unwrap_or_default(),
            Some(_) => return Ok(false),
        },
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    fence(ctx)?;
    // A conflict: the claim of that name is another one now (the precondition failed).
    match api.delete(&pvc_name(session), &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == NOT_FOUND => Ok(true),
        Err(kube::Error::Api(s)) if s.code == CONFLICT => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletion: the Pod goes; the pairing data goes only under `reclaimPolicy: Delete`.
async fn cleanup(session: &WhatsAppSession, ctx: &Context) -> Result<Action> {
    let ns = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(pod) = pods.get_opt(&pod_name(session)).await?
        && is_controlled_by(&pod, &session.uid().unwrap_or_default())
    {
        delete_pod(&pod.name_any(), &pod.uid().unwrap_or_default(), &ns, ctx).await?;
    }
    let policy = reclaim_policy(session);
    let note = match policy {
        ReclaimPolicy::Delete => match delete_claim(session, &ns, ctx).await? {
            true => format!(
                "deleted Pod and PersistentVolumeClaim {} (reclaimPolicy Delete)",
                pvc_name(session)
            ),
            false => format!(
                "deleted Pod; kept PersistentVolumeClaim {}: it is not the claim this session created or adopted",
                pvc_name(session)
            ),
        },
        ReclaimPolicy::Retain => format!(
            "deleted Pod; kept PersistentVolumeClaim {} with the pairing data (reclaimPolicy Retain)",
            pvc_name(session)
        ),
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Cleanup".into(),
        note: Some(note),
        action: "Delete".into(),
        secondary: None,
    };
    publish(event, session, ctx);
    ctx.memory.forget(&session.uid().unwrap_or_default());
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests;

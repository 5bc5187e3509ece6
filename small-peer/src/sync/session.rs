//! The client's task: sessions with the big peer, and the reconnection loop around them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bigpeer_schema::wire::{Cursor, DocChange, Msg, PushResult, SubStatus, MINOR};
use bigpeer_schema::{DocId, VersionVector};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::connect::{Target, Ws};
use super::{
    add_pending, lock, Command, Denial, SharedStore, Subscription, SubscriptionPhase, SyncConfig,
    SyncStatus,
};
use crate::error::{PeerError, SyncFailure};
use crate::{MergeOutcome, Store};

/// Bytes of deltas per `Push` at most (well under the big peer's frame limit).
const PUSH_BYTES: usize = 1024 * 1024;
/// How long a goodbye may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Messages read and decoded ahead while a batch is being written to the store. They are handled
/// in arrival order once it is committed; reading stops (the socket and the big peer's credit
/// push back) when this many wait.
const READ_AHEAD: usize = 4;

/// What the client's task works with.
pub(crate) struct Ctx {
    pub store: SharedStore,
    pub config: SyncConfig,
    pub target: Target,
    pub status: Arc<watch::Sender<SyncStatus>>,
    pub local_writes: watch::Receiver<u64>,
}

/// How a session ended.
enum End {
    /// Stopped on request.
    Stopped,
    /// Failed; `opened` when it got as far as `Welcome`.
    Failed { failure: SyncFailure, opened: bool },
}

/// What applying a batch gives: the changes applied, and the documents whose delta did not fit
/// what this store has (to ask for with `Want`).
type Applied = crate::Result<(u64, Vec<(String, DocId, VersionVector)>)>;

/// A batch being applied in the blocking pool; its `Want`s and `Ack` are sent when it is done.
struct Applying {
    batch: u64,
    received: u64,
    task: tokio::task::JoinHandle<Applied>,
}

/// The outcome of the batch being applied (never ready when there is none).
async fn applied(applying: &mut Option<Applying>) -> Result<Applied, tokio::task::JoinError> {
    match applying {
        Some(a) => (&mut a.task).await,
        None => std::future::pending().await,
    }
}

/// Errors a retry cannot cure.
fn terminal(code: &str) -> bool {
    // The authentication webhook failing is the server's trouble: retry.
    (code.starts_with("auth/") && code != "auth/webhook-failed")
        || code.starts_with("protocol/")
        || code.starts_with("crdt/")
        || matches!(
            code,
            "sync/refused" | "sync/invalid-url" | "sync/invalid-ca" | "store/corrupt"
        )
}

fn failure_of(e: PeerError) -> SyncFailure {
    match e {
        PeerError::Sync(f) => f,
        other => SyncFailure::new(other.code(), other.to_string()),
    }
}

/// Runs `f` on the store in the blocking pool.
async fn with_store<T: Send + 'static>(
    store: &SharedStore,
    f: impl FnOnce(&mut Store) -> crate::Result<T> + Send + 'static,
) -> Result<T, SyncFailure> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&mut lock(&store)))
        .await
        .map_err(|e| SyncFailure::new("internal", format!("store task failed: {e}")))?
        .map_err(failure_of)
}

/// Jittered exponential backoff.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// A delay between half and all of the current step; the step doubles up to `max`.
    fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let ms = u64::try_from(step.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(rand::random_range(ms / 2..=ms))
    }
}

/// The client's task: sessions until stopped or a terminal error.
pub(crate) async fn drive(
    mut ctx: Ctx,
    mut subs: Vec<Subscription>,
    mut cmds: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Backoff::new(ctx.config.backoff_min, ctx.config.backoff_max);
    let finished = loop {
        let end = Session::run(&mut ctx, &mut subs, &mut cmds).await;
        ctx.status.send_modify(|s| {
            s.connected = false;
            s.session = None;
            for sub in &mut s.subscriptions {
                if !matches!(sub.phase, SubscriptionPhase::Failed(_)) {
                    sub.phase = SubscriptionPhase::Pending;
                }
            }
        });
        let (failure, opened) = match end {
            End::Stopped => {
                break SyncFailure::new("sync/stopped", "the sync client was stopped");
            }
            End::Failed { failure, opened } => (failure, opened),
        };
        tracing::debug!(code = %failure.code, message = %failure.message, "sync session ended");
        ctx.status
            .send_modify(|s| s.last_error = Some(failure.clone()));
        if terminal(&failure.code) {
            break failure;
        }
        if opened {
            backoff.reset();
        }
        let wake = Instant::now() + backoff.delay();
        // Wait, still taking commands.
        let stop = loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => break false,
                cmd = cmds.recv() => match cmd {
                    None | Some(Command::Stop) => break true,
                    Some(c) => apply_offline(&ctx, &mut subs, c),
                },
            }
        };
        if stop {
            break SyncFailure::new("sync/stopped", "the sync client was stopped");
        }
    };
    ctx.status.send_modify(|s| s.finished = Some(finished));
}

/// A subscription change while not connected.
fn apply_offline(ctx: &Ctx, subs: &mut Vec<Subscription>, cmd: Command) {
    match cmd {
        Command::Subscribe(s) => {
            add_subscription(ctx, subs, s);
        }
        Command::Unsubscribe(key) => remove_subscription(ctx, subs, &key),
        Command::Stop => {}
    }
}

/// Adds a subscription unless it is there; true when added.
fn add_subscription(ctx: &Ctx, subs: &mut Vec<Subscription>, s: Subscription) -> bool {
    if subs.iter().any(|x| x.key() == s.key()) {
        return false;
    }
    add_pending(&ctx.status, &s);
    subs.push(s);
    true
}

fn remove_subscription(ctx: &Ctx, subs: &mut Vec<Subscription>, key: &str) {
    subs.retain(|s| s.key() != key);
    ctx.status
        .send_modify(|st| st.subscriptions.retain(|s| s.subscription.key() != key));
}

/// One session with the big peer.
struct Session<'a> {
    ctx: &'a mut Ctx,
    ws: Ws,
    /// The subscriptions of this session by id, with their keys.
    sub_ids: BTreeMap<u32, String>,
    next_sub: u32,
    /// Pushes awaiting their `PushAck`, and which of them carries the outbox.
    in_flight: BTreeMap<u64, Vec<DocChange>>,
    outbox_push: Option<u64>,
    next_push: u64,
    window: u32,
    heartbeat: Duration,
    max_frame: usize,
    last_sent: Instant,
    last_received: Instant,
    nonce: u64,
}

impl<'a> Session<'a> {
    async fn run(
        ctx: &'a mut Ctx,
        subs: &mut Vec<Subscription>,
        cmds: &mut mpsc::UnboundedReceiver<Command>,
    ) -> End {
        let timeout = ctx.config.connect_timeout;
        let ws = {
            let connect = ctx.target.connect(timeout);
            tokio::pin!(connect);
            loop {
                tokio::select! {
                    r = &mut connect => match r {
                        Ok(ws) => break ws,
                        Err(failure) => return End::Failed { failure, opened: false },
                    },
                    cmd = cmds.recv() => match cmd {
                        None | Some(Command::Stop) => return End::Stopped,
                        Some(c) => apply_offline(ctx, subs, c),
                    },
                }
            }
        };
        let now = Instant::now();
        let mut s = Session {
            ctx,
            ws,
            sub_ids: BTreeMap::new(),
            next_sub: 1,
            in_flight: BTreeMap::new(),
            outbox_push: None,
            next_push: 1,
            window: 1,
            heartbeat: Duration::from_secs(30),
            max_frame: 8 * 1024 * 1024,
            last_sent: now,
            last_received: now,
            nonce: 0,
        };
        let opened = match s.hello().await {
            Ok(()) => true,
            Err(failure) => {
                s.close_with_error(&failure).await;
                return End::Failed {
                    failure,
                    opened: false,
                };
            }
        };
        match s.serve(subs, cmds).await {
            Ok(()) => {
                s.goodbye("the client stops").await;
                End::Stopped
            }
            Err(failure) => {
                s.close_with_error(&failure).await;
                End::Failed { failure, opened }
            }
        }
    }

    async fn send(&mut self, msg: &Msg) -> Result<(), SyncFailure> {
        self.ws
            .send(Message::Binary(msg.encode().into()))
            .await
            .map_err(|e| disconnected(&e.to_string()))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The next protocol message; WebSocket pings and pongs are handled by the transport.
    async fn recv(&mut self) -> Result<Msg, SyncFailure> {
        loop {
            let frame = self.ws.next().await;
            if let Some(msg) = self.on_frame(frame)? {
                return Ok(msg);
            }
        }
    }

    /// A frame from the socket as a protocol message (`None` for WebSocket control frames).
    fn on_frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<Option<Msg>, SyncFailure> {
        let frame = match frame {
            None => return Err(disconnected("the big peer closed the connection")),
            Some(Err(e)) => return Err(disconnected(&e.to_string())),
            Some(Ok(f)) => f,
        };
        self.last_received = Instant::now();
        match frame {
            Message::Binary(bytes) => Msg::decode(&bytes).map(Some).map_err(|e| {
                SyncFailure::new(
                    "protocol/malformed",
                    format!("a frame from the big peer does not decode: {e}"),
                )
            }),
            Message::Text(_) => Err(SyncFailure::new(
                "protocol/malformed",
                "the big peer sent a text message",
            )),
            Message::Close(frame) => Err(disconnected(&match frame {
                Some(f) => format!(
                    "the big peer closed the connection ({} {})",
                    f.code, f.reason
                ),
                None => "the big peer closed the connection".into(),
            })),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(None),
        }
    }

    /// `Hello`, then `Welcome` (or the big peer's error).
    async fn hello(&mut self) -> Result<(), SyncFailure> {
        let site = lock(&self.ctx.store).site();
        self.send(&Msg::Hello {
            minor: MINOR,
            site,
            token: self.ctx.config.token.clone(),
            features: Vec::new(),
            last_sync_ms: 0,
        })
        .await?;
        let timeout = self.ctx.config.connect_timeout;
        let msg = match tokio::time::timeout(timeout, self.recv()).await {
            Err(_) => {
                return Err(SyncFailure::new(
                    "sync/timeout",
                    format!("no welcome within {} ms", timeout.as_millis()),
                ))
            }
            Ok(m) => m?,
        };
        match msg {
            Msg::Welcome {
                session,
                max_frame,
                window,
                heartbeat_ms,
                user,
                ..
            } => {
                self.window = window.max(1);
                self.heartbeat = Duration::from_millis(heartbeat_ms.max(100));
                self.max_frame = usize::try_from(max_frame).unwrap_or(usize::MAX);
                tracing::debug!(%session, %user, "sync session open");
                self.ctx.status.send_modify(|s| {
                    s.connected = true;
                    s.session = Some(session);
                    s.user = Some(user);
                    s.client_info = None;
                    s.stats.sessions += 1;
                });
                Ok(())
            }
            Msg::Error { code, message, .. } => Err(SyncFailure::new(&code, message)),
            Msg::Bye { reason } => Err(disconnected(&format!("the big peer said bye: {reason}"))),
            other => Err(SyncFailure::new(
                "protocol/unexpected-message",
                format!("expected welcome, got {}", other.name()),
            )),
        }
    }

    /// The open session: until stopped (`Ok`) or an error.
    async fn serve(
        &mut self,
        subs: &mut Vec<Subscription>,
        cmds: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), SyncFailure> {
        for s in subs.clone() {
            self.subscribe(&s).await?;
        }
        // Changes refused in an earlier session whose answer never arrived (the cursor may have
        // moved past them since): ask again.
        let wanted = with_store(&self.ctx.store, |st| st.wanted()).await?;
        let n_wanted = wanted.len() as u64;
        for (collection, id, have) in wanted {
            self.send(&Msg::Want {
                collection,
                id,
                have,
            })
            .await?;
        }
        if n_wanted > 0 {
            self.ctx
                .status
                .send_modify(|s| s.stats.wants_sent += n_wanted);
        }
        self.ctx.local_writes.borrow_and_update();
        self.push_outbox().await?;
        let mut poll =
            tokio::time::interval(self.ctx.config.outbox_poll.max(Duration::from_millis(10)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        let mut writes_open = true;
        // The batch being written to the store, and what arrived since (decoded while it is
        // written: the two overlap on separate threads).
        let mut applying: Option<Applying> = None;
        let mut backlog: VecDeque<Msg> = VecDeque::new();
        loop {
            let deadline =
                (self.last_sent + self.heartbeat / 2).min(self.last_received + self.heartbeat * 2);
            tokio::select! {
                biased;
                done = applied(&mut applying) => {
                    if let Some(a) = applying.take() {
                        self.finish_batch(a.batch, a.received, done).await?;
                    }
                    while applying.is_none() {
                        let Some(msg) = backlog.pop_front() else { break };
                        applying = self.dispatch(msg).await?;
                    }
                }
                frame = self.ws.next(), if backlog.len() < READ_AHEAD => {
                    if let Some(msg) = self.on_frame(frame)? {
                        if applying.is_some() {
                            backlog.push_back(msg);
                        } else {
                            applying = self.dispatch(msg).await?;
                        }
                    }
                }
                cmd = cmds.recv() => match cmd {
                    None | Some(Command::Stop) => {
                        // Acknowledge what is being written, so that the big peer need not send
                        // it again next time.
                        if let Some(Applying { batch, received, task }) = applying.take() {
                            let done = task.await;
                            self.finish_batch(batch, received, done).await?;
                        }
                        return Ok(());
                    }
                    Some(Command::Subscribe(s)) => {
                        if add_subscription(self.ctx, subs, s.clone()) {
                            self.subscribe(&s).await?;
                        }
                    }
                    Some(Command::Unsubscribe(key)) => {
                        remove_subscription(self.ctx, subs, &key);
                        let ids: Vec<u32> = self.sub_ids.iter().filter(|(_, k)| **k == key).map(|(id, _)| *id).collect();
                        for sub in ids {
                            self.sub_ids.remove(&sub);
                            self.send(&Msg::Unsubscribe { sub }).await?;
                        }
                    }
                },
                changed = self.ctx.local_writes.changed(), if writes_open => {
                    if changed.is_err() {
                        writes_open = false;
                    }
                    self.push_outbox().await?;
                }
                _ = poll.tick() => self.push_outbox().await?,
                () = tokio::time::sleep_until(deadline) => self.on_timer().await?,
            }
        }
    }

    async fn on_timer(&mut self) -> Result<(), SyncFailure> {
        let now = Instant::now();
        if now >= self.last_received + self.heartbeat * 2 {
            return Err(SyncFailure::new(
                "sync/timeout",
                format!(
                    "nothing received from the big peer for {} ms",
                    (self.heartbeat * 2).as_millis()
                ),
            ));
        }
        if now >= self.last_sent + self.heartbeat / 2 {
            self.nonce += 1;
            self.send(&Msg::Ping { nonce: self.nonce }).await?;
        }
        Ok(())
    }

    async fn subscribe(&mut self, s: &Subscription) -> Result<(), SyncFailure> {
        let key = s.key();
        let cursor = {
            let key = key.clone();
            with_store(&self.ctx.store, move |st| st.cursor(&key)).await?
        };
        let sub = self.next_sub;
        self.next_sub += 1;
        self.sub_ids.insert(sub, key.clone());
        self.set_phase(&key, SubscriptionPhase::Active);
        self.send(&Msg::Subscribe {
            sub,
            query: s.query.clone(),
            args: s.args.clone(),
            cursor,
        })
        .await
    }

    fn set_phase(&self, key: &str, phase: SubscriptionPhase) {
        self.ctx.status.send_modify(|st| {
            for s in &mut st.subscriptions {
                if s.subscription.key() == key {
                    s.phase = phase.clone();
                }
            }
        });
    }

    async fn on_message(&mut self, msg: Msg) -> Result<(), SyncFailure> {
        match msg {
            Msg::Batch { .. } => Err(SyncFailure::new(
                "internal",
                "a batch reached the message handler instead of the store",
            )),
            Msg::SubState { sub, status } => self.on_sub_state(sub, status).await,
            Msg::PushAck { push, results, .. } => self.on_push_ack(push, results).await,
            Msg::Want {
                collection,
                id,
                have,
            } => self.on_want(collection, id, have).await,
            Msg::Ping { nonce } => self.send(&Msg::Pong { nonce }).await,
            Msg::Pong { .. } | Msg::Unknown { .. } => Ok(()),
            Msg::ClientInfo { info } => {
                let info = info.to_json();
                self.ctx.status.send_modify(|s| s.client_info = Some(info));
                Ok(())
            }
            Msg::Error {
                code,
                message,
                fatal,
            } => {
                let failure = SyncFailure::new(&code, message);
                if fatal {
                    return Err(failure);
                }
                tracing::warn!(code = %failure.code, message = %failure.message, "the big peer reported an error");
                self.ctx
                    .status
                    .send_modify(|s| s.last_error = Some(failure));
                Ok(())
            }
            Msg::Bye { reason } => Err(disconnected(&format!("the big peer said bye: {reason}"))),
            other => Err(SyncFailure::new(
                "protocol/unexpected-message",
                format!("{} is not sent by a big peer", other.name()),
            )),
        }
    }

    /// Handles a message: a batch starts being applied (returned, to be finished when its
    /// transaction is committed); anything else is handled now.
    async fn dispatch(&mut self, msg: Msg) -> Result<Option<Applying>, SyncFailure> {
        match msg {
            Msg::Batch {
                batch,
                subs,
                changes,
                cursor,
            } => Ok(Some(self.start_batch(batch, &subs, changes, cursor))),
            other => {
                self.on_message(other).await?;
                Ok(None)
            }
        }
    }

    /// Applies a batch in one transaction with its cursor, in the blocking pool.
    fn start_batch(
        &mut self,
        batch: u64,
        subs: &[u32],
        changes: Vec<DocChange>,
        cursor: Option<Cursor>,
    ) -> Applying {
        let cursors: Vec<(String, Cursor)> = match &cursor {
            Some(c) => subs
                .iter()
                .filter_map(|s| self.sub_ids.get(s))
                .map(|k| (k.clone(), c.clone()))
                .collect(),
            None => Vec::new(),
        };
        let received = changes.len() as u64;
        let store = self.ctx.store.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut st = lock(&store);
            let mut applied = 0u64;
            let mut wants = Vec::new();
            for (collection, id, o) in st.apply_remote_owned(changes, &cursors)? {
                match o {
                    MergeOutcome::Applied => applied += 1,
                    MergeOutcome::Unchanged => {}
                    MergeOutcome::Refused { have } => wants.push((collection, id, have)),
                }
            }
            Ok((applied, wants))
        });
        Applying {
            batch,
            received,
            task,
        }
    }

    /// A batch is committed (or failed): ask for what could not be applied, then acknowledge it.
    async fn finish_batch(
        &mut self,
        batch: u64,
        received: u64,
        done: Result<Applied, tokio::task::JoinError>,
    ) -> Result<(), SyncFailure> {
        let (applied, wants) = done
            .map_err(|e| SyncFailure::new("internal", format!("store task failed: {e}")))?
            .map_err(failure_of)?;
        let n_wants = wants.len() as u64;
        for (collection, id, have) in wants {
            self.send(&Msg::Want {
                collection,
                id,
                have,
            })
            .await?;
        }
        self.ctx.status.send_modify(|s| {
            s.stats.batches += 1;
            s.stats.changes_received += received;
            s.stats.changes_applied += applied;
            s.stats.wants_sent += n_wants;
        });
        self.send(&Msg::Ack {
            batch,
            credit: self.window,
        })
        .await
    }

    async fn on_sub_state(&mut self, sub: u32, status: SubStatus) -> Result<(), SyncFailure> {
        let Some(key) = self.sub_ids.get(&sub).cloned() else {
            return Ok(()); // unsubscribed since
        };
        match status {
            SubStatus::Active => self.set_phase(&key, SubscriptionPhase::Active),
            SubStatus::CaughtUp { cursor } => {
                // Every batch before this message is applied: the head is the new position.
                let k = key.clone();
                with_store(&self.ctx.store, move |st| {
                    st.apply_remote(&[], &[(k, cursor)]).map(|_| ())
                })
                .await?;
                self.set_phase(&key, SubscriptionPhase::CaughtUp);
            }
            SubStatus::Failed { code, message } => {
                tracing::warn!(%code, %message, "the big peer refused a subscription");
                self.sub_ids.remove(&sub);
                self.set_phase(
                    &key,
                    SubscriptionPhase::Failed(SyncFailure::new(&code, message)),
                );
            }
        }
        Ok(())
    }

    /// Pushes the next part of the outbox, unless a push of it is in flight.
    async fn push_outbox(&mut self) -> Result<(), SyncFailure> {
        if self.outbox_push.is_some() {
            return Ok(());
        }
        let max = self.ctx.config.push_max_changes.max(1);
        let mut changes = with_store(&self.ctx.store, move |st| st.pending_push(max)).await?;
        let budget = PUSH_BYTES.min(self.max_frame / 2).max(1);
        let mut bytes = 0;
        let mut keep = 0;
        for c in &changes {
            bytes += c.delta.encode().len() + c.collection.len() + 64;
            if keep > 0 && bytes > budget {
                break;
            }
            keep += 1;
        }
        changes.truncate(keep);
        if changes.is_empty() {
            return Ok(());
        }
        let push = self.start_push(changes).await?;
        self.outbox_push = Some(push);
        Ok(())
    }

    async fn start_push(&mut self, changes: Vec<DocChange>) -> Result<u64, SyncFailure> {
        let push = self.next_push;
        self.next_push += 1;
        let n = changes.len() as u64;
        let msg = Msg::Push { push, changes };
        self.send(&msg).await?;
        if let Msg::Push { changes, .. } = msg {
            self.in_flight.insert(push, changes);
        }
        self.ctx.status.send_modify(|s| {
            s.stats.pushes += 1;
            s.stats.changes_pushed += n;
        });
        Ok(push)
    }

    async fn on_push_ack(
        &mut self,
        push: u64,
        results: Vec<PushResult>,
    ) -> Result<(), SyncFailure> {
        let Some(changes) = self.in_flight.remove(&push) else {
            return Err(SyncFailure::new(
                "protocol/unexpected-message",
                format!("push acknowledgement for unknown push {push}"),
            ));
        };
        let denials: Vec<Denial> = changes
            .iter()
            .zip(&results)
            .filter_map(|(c, r)| match r {
                PushResult::Denied { code } => Some(Denial {
                    collection: c.collection.clone(),
                    id: c.id.clone(),
                    code: code.clone(),
                }),
                _ => None,
            })
            .collect();
        with_store(&self.ctx.store, move |st| st.ack_push(&changes, &results)).await?;
        for d in &denials {
            tracing::warn!(collection = %d.collection, id = %d.id, code = %d.code, "the big peer denied a local change");
        }
        self.ctx.status.send_modify(|s| {
            for d in denials {
                s.denied
                    .retain(|x| !(x.collection == d.collection && x.id == d.id));
                s.denied.push(d);
            }
        });
        if self.outbox_push == Some(push) {
            self.outbox_push = None;
            self.push_outbox().await?;
        }
        Ok(())
    }

    /// The big peer lacks a delta's base: send it what it is missing (as a push).
    async fn on_want(
        &mut self,
        collection: String,
        id: DocId,
        have: VersionVector,
    ) -> Result<(), SyncFailure> {
        let change = with_store(&self.ctx.store, move |st| {
            st.delta_since(&collection, &id, &have)
        })
        .await?;
        if let Some(c) = change {
            self.start_push(vec![c]).await?;
        }
        Ok(())
    }

    /// `Bye` and a normal close.
    async fn goodbye(&mut self, reason: &str) {
        let bye = Msg::Bye {
            reason: reason.to_owned(),
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            let _ = self.send(&bye).await;
            let _ = self.ws.close(None).await;
            // Read until the big peer's close arrives.
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Tells the big peer about an error of its own making (protocol errors), then closes.
    async fn close_with_error(&mut self, failure: &SyncFailure) {
        let ours = failure.code.starts_with("protocol/") || failure.code == "sync/timeout";
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            if ours {
                let _ = self
                    .send(&Msg::Error {
                        code: failure.code.clone(),
                        message: failure.message.clone(),
                        fatal: true,
                    })
                    .await;
            }
            let _ = self.ws.close(None).await;
        })
        .await;
    }
}

fn disconnected(why: &str) -> SyncFailure {
    SyncFailure::new("sync/disconnected", why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_bound_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| b.delay()).collect();
        let steps = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, step) in delays.iter().zip(steps) {
            let ms = d.as_millis() as u64;
            assert!(
                ms >= step / 2 && ms <= step,
                "{ms} not in [{}, {step}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.delay() <= Duration::from_millis(100));
    }

    #[test]
    fn only_incurable_errors_end_the_client() {
        for code in [
            "auth/invalid-token",
            "auth/expired",
            "protocol/malformed",
            "sync/refused",
        ] {
            assert!(terminal(code), "{code}");
        }
        for code in [
            "sync/unreachable",
            "sync/timeout",
            "sync/disconnected",
            "sync/slow-consumer",
            "internal",
            "store/unavailable",
            "auth/webhook-failed",
        ] {
            assert!(!terminal(code), "{code}");
        }
    }
}

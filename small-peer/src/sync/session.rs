//! The client's task: sessions with the big peer, and the reconnection loop around them.
//!
//! A session is a shell around `sync-core`'s [`ClientSession`], which makes every protocol
//! decision (hello and welcome, resuming subscriptions, acknowledging batches once they are
//! committed, pushing the outbox, answering `Want`, liveness, the errors that end a session).
//! The shell owns the socket, the timers and the store: it feeds the core the frames it reads,
//! the time and the store's answers to the core's requests, sends the frames the core produces,
//! and turns the core's events into the client's status.

use std::sync::Arc;
use std::time::Duration;

use bigpeer_schema::wire::DocChange;
use bigpeer_schema::{DocId, VersionVector};
use bigpeer_sync_core::client::{self, disconnected, ClientSession, Event, Phase, Request};
// The errors that end the client are the core's decision (`terminal` is used by `drive`).
use bigpeer_sync_core::client::terminal;
use bigpeer_sync_core::{Failure, Millis};
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

/// How long a goodbye may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

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

/// A batch being applied in the blocking pool; the core sends its `Want`s and `Ack` when it is
/// done.
type Applying = tokio::task::JoinHandle<Applied>;

/// The outcome of the batch being applied (never ready when there is none).
async fn applied(applying: &mut Option<Applying>) -> Result<Applied, tokio::task::JoinError> {
    match applying {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// A failure the core decided on.
fn failure(f: Failure) -> SyncFailure {
    SyncFailure::new(&f.code, f.message)
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

/// One session with the big peer: the socket, the timers and the store around the core.
struct Session<'a> {
    ctx: &'a mut Ctx,
    ws: Ws,
    core: ClientSession,
    /// The origin of the core's clock.
    origin: Instant,
}

/// A subscription as the core knows it.
fn core_subscription(s: &Subscription) -> client::Subscription {
    client::Subscription {
        key: s.key(),
        query: s.query.clone(),
        args: s.args.clone(),
    }
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
        let site = lock(&ctx.store).site();
        let config = client::Config {
            site,
            token: ctx.config.token.clone(),
            welcome_timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            push_max_changes: ctx.config.push_max_changes,
        };
        let mut s = Session {
            ctx,
            ws,
            core: ClientSession::new(config, 0),
            origin: Instant::now(),
        };
        match s.serve(subs, cmds).await {
            Ok(()) => {
                s.goodbye("the client stops").await;
                End::Stopped
            }
            Err(failure) => {
                s.close_with_error(&failure).await;
                End::Failed {
                    failure,
                    opened: s.core.is_open(),
                }
            }
        }
    }

    /// The core's clock: milliseconds since the session started.
    fn now(&self) -> Millis {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sends the frames the core produced.
    async fn flush(&mut self) -> Result<(), SyncFailure> {
        while let Some(frame) = self.core.frames().pop() {
            self.ws
                .send(Message::binary(frame))
                .await
                .map_err(|e| failure(disconnected(&e.to_string())))?;
        }
        Ok(())
    }

    /// A frame from the socket, fed to the core.
    fn on_frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), SyncFailure> {
        let now = self.now();
        let frame = match frame {
            None => return Err(failure(disconnected("the big peer closed the connection"))),
            Some(Err(e)) => return Err(failure(disconnected(&e.to_string()))),
            Some(Ok(f)) => f,
        };
        match frame {
            Message::Binary(bytes) => self.core.on_frame(now, &bytes).map_err(failure),
            Message::Text(_) => Err(failure(self.core.on_text())),
            Message::Close(frame) => Err(failure(disconnected(&match frame {
                Some(f) => format!(
                    "the big peer closed the connection ({} {})",
                    f.code, f.reason
                ),
                None => "the big peer closed the connection".into(),
            }))),
            // WebSocket pings and pongs are answered by the transport.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                self.core.on_transport_frame(now);
                Ok(())
            }
        }
    }

    /// The session, from `Hello` until stopped (`Ok`) or an error.
    async fn serve(
        &mut self,
        subs: &mut Vec<Subscription>,
        cmds: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), SyncFailure> {
        self.flush().await?;
        let mut poll =
            tokio::time::interval(self.ctx.config.outbox_poll.max(Duration::from_millis(10)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut writes_open = true;
        let mut was_open = false;
        // The batch being written to the store; the core reads ahead meanwhile (the two overlap
        // on separate threads).
        let mut applying: Option<Applying> = None;
        loop {
            let open = self.core.is_open();
            if open && !was_open {
                // The outbox is pushed when the session opens; the polling starts from there.
                was_open = true;
                poll.reset();
            }
            let deadline = self.origin + Duration::from_millis(self.core.deadline());
            tokio::select! {
                biased;
                done = applied(&mut applying) => {
                    applying = None;
                    self.finish_batch(done)?;
                }
                frame = self.ws.next(), if self.core.can_read() => self.on_frame(frame)?,
                // Commands wait for `Welcome`.
                cmd = cmds.recv(), if open => match cmd {
                    None | Some(Command::Stop) => {
                        // Acknowledge what is being written, so that the big peer need not send
                        // it again next time.
                        if let Some(task) = applying.take() {
                            let done = task.await;
                            self.finish_batch(done)?;
                            self.flush().await?;
                        }
                        return Ok(());
                    }
                    Some(Command::Subscribe(s)) => {
                        if add_subscription(self.ctx, subs, s.clone()) {
                            let key = s.key();
                            let cursor = with_store(&self.ctx.store, move |st| st.cursor(&key)).await?;
                            let now = self.now();
                            self.core.subscribe(now, core_subscription(&s), cursor);
                        }
                    }
                    Some(Command::Unsubscribe(key)) => {
                        remove_subscription(self.ctx, subs, &key);
                        let now = self.now();
                        self.core.unsubscribe(now, &key);
                    }
                },
                changed = self.ctx.local_writes.changed(), if open && writes_open => {
                    if changed.is_err() {
                        writes_open = false;
                    }
                    self.core.push_outbox();
                }
                _ = poll.tick(), if open => self.core.push_outbox(),
                () = tokio::time::sleep_until(deadline) => {
                    let now = self.now();
                    self.core.on_timer(now).map_err(failure)?;
                }
            }
            self.run_requests(subs, &mut applying).await?;
        }
    }

    /// Answers the core's requests until it waits, sending what it produces on the way.
    async fn run_requests(
        &mut self,
        subs: &[Subscription],
        applying: &mut Option<Applying>,
    ) -> Result<(), SyncFailure> {
        loop {
            let now = self.now();
            let req = self.core.next_request(now).map_err(failure);
            self.events();
            let Some(req) = req? else { break };
            // What the core said so far goes out before the store is asked.
            self.flush().await?;
            let answer = match req {
                Request::Resume => {
                    let keys: Vec<String> = subs.iter().map(Subscription::key).collect();
                    let (cursors, wanted) = with_store(&self.ctx.store, move |st| {
                        let cursors = keys
                            .iter()
                            .map(|k| st.cursor(k))
                            .collect::<crate::Result<Vec<_>>>()?;
                        Ok((cursors, st.wanted()?))
                    })
                    .await?;
                    let resumed = subs.iter().map(core_subscription).zip(cursors).collect();
                    let now = self.now();
                    self.core.resume(now, resumed, wanted)
                }
                Request::Apply {
                    changes, cursors, ..
                } => {
                    *applying = Some(start_batch(&self.ctx.store, changes, cursors));
                    Ok(())
                }
                Request::SaveCursor { key, cursor } => {
                    with_store(&self.ctx.store, move |st| {
                        st.apply_remote(&[], &[(key, cursor)]).map(|_| ())
                    })
                    .await?;
                    self.core.cursor_saved()
                }
                Request::Outbox { max } => {
                    let changes =
                        with_store(&self.ctx.store, move |st| st.pending_push(max)).await?;
                    let now = self.now();
                    self.core.outbox(now, changes)
                }
                Request::RecordPush { changes, results } => {
                    with_store(&self.ctx.store, move |st| st.ack_push(&changes, &results)).await?;
                    // The outbox changed: whoever waits for it to empty looks again.
                    self.ctx.status.send_modify(|_| {});
                    self.core.push_recorded()
                }
                Request::Delta {
                    collection,
                    id,
                    have,
                } => {
                    let change = with_store(&self.ctx.store, move |st| {
                        st.delta_since(&collection, &id, &have)
                    })
                    .await?;
                    let now = self.now();
                    self.core.delta(now, change)
                }
            };
            answer.map_err(failure)?;
        }
        self.events();
        self.flush().await
    }

    /// A batch is committed (or failed): the core asks for what could not be applied, then
    /// acknowledges it.
    fn finish_batch(
        &mut self,
        done: Result<Applied, tokio::task::JoinError>,
    ) -> Result<(), SyncFailure> {
        let (applied, wants) = done
            .map_err(|e| SyncFailure::new("internal", format!("store task failed: {e}")))?
            .map_err(failure_of)?;
        let now = self.now();
        let r = self.core.applied(now, applied, wants).map_err(failure);
        self.events();
        r
    }

    /// The core's events, as the client's status.
    fn events(&mut self) {
        while let Some(event) = self.core.next_event() {
            match event {
                Event::Opened { session, user } => {
                    tracing::debug!(%session, %user, "sync session open");
                    self.ctx.status.send_modify(|s| {
                        s.connected = true;
                        s.session = Some(session);
                        s.user = Some(user);
                        s.client_info = None;
                        s.stats.sessions += 1;
                    });
                    // Everything written so far is in the outbox the session pushes now.
                    self.ctx.local_writes.borrow_and_update();
                }
                Event::Phase { key, phase } => {
                    let phase = match phase {
                        Phase::Active => SubscriptionPhase::Active,
                        Phase::CaughtUp => SubscriptionPhase::CaughtUp,
                        Phase::Failed(f) => {
                            tracing::warn!(code = %f.code, message = %f.message, "the big peer refused a subscription");
                            SubscriptionPhase::Failed(failure(f))
                        }
                    };
                    self.set_phase(&key, phase);
                }
                Event::ClientInfo(info) => {
                    let info = info.to_json();
                    self.ctx.status.send_modify(|s| s.client_info = Some(info));
                }
                Event::Warning(f) => {
                    tracing::warn!(code = %f.code, message = %f.message, "the big peer reported an error");
                    self.ctx
                        .status
                        .send_modify(|s| s.last_error = Some(failure(f)));
                }
                Event::Denied {
                    collection,
                    id,
                    code,
                } => {
                    tracing::warn!(%collection, %id, %code, "the big peer denied a local change");
                    self.ctx.status.send_modify(|s| {
                        s.denied
                            .retain(|x| !(x.collection == collection && x.id == id));
                        s.denied.push(Denial {
                            collection,
                            id,
                            code,
                        });
                    });
                }
                Event::Batch {
                    received,
                    applied,
                    wants,
                } => self.ctx.status.send_modify(|s| {
                    s.stats.batches += 1;
                    s.stats.changes_received += received;
                    s.stats.changes_applied += applied;
                    s.stats.wants_sent += wants;
                }),
                Event::Pushed { changes } => self.ctx.status.send_modify(|s| {
                    s.stats.pushes += 1;
                    s.stats.changes_pushed += changes;
                }),
                Event::WantsSent(n) => self.ctx.status.send_modify(|s| s.stats.wants_sent += n),
            }
        }
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

    /// `Bye` and a normal close.
    async fn goodbye(&mut self, reason: &str) {
        let now = self.now();
        self.core.bye(now, reason);
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            let _ = self.flush().await;
            let _ = self.ws.close(None).await;
            // Read until the big peer's close arrives.
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Tells the big peer about an error of its own making (the core decides which), then
    /// closes.
    async fn close_with_error(&mut self, f: &SyncFailure) {
        let words = ClientSession::last_words(&Failure::new(&f.code, f.message.clone()));
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            if let Some(frame) = words {
                let _ = self.ws.send(Message::binary(frame)).await;
            }
            let _ = self.ws.close(None).await;
        })
        .await;
    }
}

/// Applies a batch in one transaction with its cursors, in the blocking pool.
fn start_batch(
    store: &SharedStore,
    changes: Vec<DocChange>,
    cursors: Vec<(String, bigpeer_schema::wire::Cursor)>,
) -> Applying {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
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
    })
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
            "sync/untrusted-certificate",
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

//! The run lease of a job name: `ledger/<name>/lease.json`.
//!
//! One incremental run of a name at a time: two runs planning at once would both see the
//! same objects as new (the ledger's append refuses the second job's entry, but only at
//! its finalize, after all its work). The lease is a small record with an expiry:
//!
//! - **acquire**: absent → create it (`If-None-Match: *`); present but released or expired
//!   → replace it (`If-Match` its ETag, [`crate::store::ObjectStore::put_if_match`]); held →
//!   [`Error::LeaseHeld`] naming the holder and the expiry (or wait, polling, up to
//!   [`LeaseOptions::wait`]). Of two runs racing for it, the conditional write lets one win.
//! - **renew**: a background task replaces it with a later expiry every third of the TTL,
//!   `If-Match` the version it wrote last. A renewal that finds another version means the
//!   lease was taken over (this run stalled past the expiry): the run learns it from
//!   [`Lease::check`] ([`Error::LeaseLost`]).
//! - **release**: replaced by a released record (not deleted: a conditional delete is
//!   not what every S3-compatible store offers, a conditional PUT is).
//! - **crash**: nothing renews the lease; it expires after the TTL and the next run takes
//!   it over, learning from [`Lease::took_over`] the job the dead run was running
//!   ([`Lease::set_job`]), so it can finish what that job left (re-finalize a job the ledger
//!   recorded without a manifest).
//!
//! The lease's record is read with a HEAD, then a GET: a version replaced between the two
//! makes the later swap fail (the ETag is the older one), never succeed on stale content.
//! Expiry compares wall clocks of different machines: keep the TTL far above their skew.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::records;
use crate::ids::JobId;
use crate::job::to_json_bytes;
use crate::store::{DynStore, PutOutcome, StoreError, SwapOutcome};
use crate::{Error, Result};

/// How long a lease lasts without renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
/// How often a waiting run tries the lease again.
pub const DEFAULT_LEASE_POLL: Duration = Duration::from_secs(1);

/// How a run takes the lease.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// Expiry after the last renewal (renewed every third of it).
    pub ttl: Duration,
    /// Who is asking, for messages (`host:pid` by default).
    pub holder: String,
    /// Wait up to this long for a held lease (`None`: refuse at once).
    pub wait: Option<Duration>,
    /// Between two tries while waiting.
    pub poll: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: DEFAULT_LEASE_TTL,
            holder: default_holder(),
            wait: None,
            poll: DEFAULT_LEASE_POLL,
        }
    }
}

/// `host:pid` (the Lambda log stream in Lambda: one per execution environment).
pub fn default_holder() -> String {
    let host = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// `lease.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The job name.
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// This holding's unique token (a holder may hold it twice, in turn).
    pub token: String,
    /// When it was taken (ms since the epoch).
    pub acquired_ms: u64,
    /// When it was last renewed.
    pub renewed_ms: u64,
    /// When it expires unless renewed.
    pub expires_ms: u64,
    /// The job the run is running, once planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// Released by its holder at the end of its run.
    #[serde(default)]
    pub released: bool,
}

impl LeaseRecord {
    /// Whether another run may take it at `now_ms`.
    pub fn is_free(&self, now_ms: u64) -> bool {
        self.released || self.expires_ms <= now_ms
    }
}

/// The version of the lease this holder wrote last.
#[derive(Debug)]
struct State {
    etag: String,
    record: LeaseRecord,
}

#[derive(Debug)]
struct Shared {
    store: DynStore,
    key: String,
    name: String,
    holder: String,
    ttl: Duration,
    state: tokio::sync::Mutex<State>,
    /// Who took the lease over, once a renewal found it gone.
    lost_to: std::sync::Mutex<Option<String>>,
}

/// A held lease, renewed in the background until released or dropped. Dropping it
/// without [`Lease::release`] (a crash, a cancelled run) stops the renewals: the lease
/// then expires after its TTL.
#[derive(Debug)]
pub struct Lease {
    shared: Arc<Shared>,
    renewer: tokio::task::JoinHandle<()>,
    previous: Option<LeaseRecord>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// What one try at the lease found.
enum Try {
    Got(Lease),
    Held(LeaseRecord),
    Raced,
}

impl Lease {
    /// Takes the lease of job name `name` in the work store `work`: [`Error::LeaseHeld`]
    /// when another run holds it (after waiting up to `opts.wait`).
    pub async fn acquire(work: DynStore, name: &str, opts: &LeaseOptions) -> Result<Lease> {
        let key = records::lease(name);
        let deadline = opts.wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            match try_acquire(&work, name, &key, opts).await? {
                Try::Got(lease) => return Ok(lease),
                Try::Raced => continue,
                Try::Held(held) => {
                    let now = tokio::time::Instant::now();
                    match deadline {
                        Some(d) if now < d => {
                            tracing::info!(name, holder = %held.holder, "lease held; waiting");
                            tokio::time::sleep(opts.poll.min(d - now)).await;
                        }
                        _ => {
                            return Err(Error::LeaseHeld {
                                name: name.to_string(),
                                holder: held.holder,
                                key,
                                expires_ms: held.expires_ms,
                            });
                        }
                    }
                }
            }
        }
    }

    /// The expired (not released) lease this one took over: a run that died, and the job
    /// it was running.
    pub fn took_over(&self) -> Option<&LeaseRecord> {
        self.previous.as_ref().filter(|p| !p.released)
    }

    /// The lease this one replaced, released or expired: the previous run of the name and
    /// its job.
    pub fn previous(&self) -> Option<&LeaseRecord> {
        self.previous.as_ref()
    }

    /// The lease as last written by this holder.
    pub async fn record(&self) -> LeaseRecord {
        self.shared.state.lock().await.record.clone()
    }

    /// Records the job this run runs, so a run taking over after a crash knows it.
    pub async fn set_job(&self, job_id: &JobId) -> Result<()> {
        let job_id = job_id.clone();
        self.shared
            .rewrite(move |r| r.job_id = Some(job_id.clone()))
            .await
    }

    /// Extends the expiry now (the background task does it every third of the TTL).
    pub async fn renew(&self) -> Result<()> {
        self.shared.rewrite(|_| {}).await
    }

    /// [`Error::LeaseLost`] when a renewal found the lease taken over.
    pub fn check(&self) -> Result<()> {
        self.shared.check()
    }

    /// Stops the renewals and releases the lease; [`Error::LeaseLost`] when it was taken
    /// over meanwhile (nothing is written then).
    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        self.shared.check()?;
        self.shared.rewrite(|r| r.released = true).await
    }
}

impl Shared {
    fn check(&self) -> Result<()> {
        let taker = self.lost_to.lock().map_or(None, |t| t.clone());
        match taker {
            None => Ok(()),
            Some(taker) => Err(self.lost(taker)),
        }
    }

    fn lost(&self, taker: String) -> Error {
        Error::LeaseLost {
            name: self.name.clone(),
            key: self.key.clone(),
            holder: self.holder.clone(),
            taker,
        }
    }

    /// Writes this holder's record changed by `change`, with a new expiry, `If-Match` the
    /// version it wrote last.
    async fn rewrite(&self, change: impl Fn(&mut LeaseRecord)) -> Result<()> {
        let mut state = self.state.lock().await;
        let mut next = state.record.clone();
        change(&mut next);
        let now = crate::clock::now_ms();
        next.renewed_ms = now;
        next.expires_ms = if next.released {
            now
        } else {
            now + self.ttl.as_millis() as u64
        };
        let bytes = to_json_bytes("lease", &next)?;
        match self
            .store
            .put_if_match(&self.key, bytes, &state.etag)
            .await?
        {
            SwapOutcome::Replaced { etag } => {
                *state = State { etag, record: next };
                Ok(())
            }
            SwapOutcome::Changed => {
                drop(state);
                let taker = match read_lease(&self.store, &self.key).await {
                    Ok(Some((_, r))) => r.holder,
                    _ => "another run".into(),
                };
                if let Ok(mut t) = self.lost_to.lock() {
                    *t = Some(taker.clone());
                }
                Err(self.lost(taker))
            }
        }
    }
}

/// Renews every third of the TTL until the lease is lost (or the task is aborted); a
/// failed renewal is tried again at the next tick, the expiry leaving two more.
async fn renew_forever(shared: Arc<Shared>) {
    let every = (shared.ttl / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        match shared.rewrite(|_| {}).await {
            Ok(()) => {}
            Err(e @ Error::LeaseLost { .. }) => {
                tracing::error!(error = %e, "lease lost");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed; trying again"),
        }
    }
}

/// One try: create, take over a free lease, or find it held.
async fn try_acquire(store: &DynStore, name: &str, key: &str, opts: &LeaseOptions) -> Result<Try> {
    let now = crate::clock::now_ms();
    let mine = LeaseRecord {
        name: name.to_string(),
        holder: opts.holder.clone(),
        token: new_token(&opts.holder),
        acquired_ms: now,
        renewed_ms: now,
        expires_ms: now + opts.ttl.as_millis() as u64,
        job_id: None,
        released: false,
    };
    let bytes = to_json_bytes("lease", &mine)?;
    let (etag, previous) = match read_lease(store, key).await? {
        None => match store.put_if_absent(key, bytes).await? {
            PutOutcome::AlreadyExists => return Ok(Try::Raced),
            PutOutcome::Created => match read_lease(store, key).await? {
                // The version this call created (its token), else someone replaced it
                // already, which only an expired lease allows: try again.
                Some((etag, r)) if r.token == mine.token => (etag, None),
                _ => return Ok(Try::Raced),
            },
        },
        Some((etag, held)) if held.is_free(now) => {
            match store.put_if_match(key, bytes, &etag).await? {
                SwapOutcome::Changed => return Ok(Try::Raced),
                SwapOutcome::Replaced { etag } => (etag, Some(held)),
            }
        }
        Some((_, held)) => return Ok(Try::Held(held)),
    };
    if let Some(dead) = previous.as_ref().filter(|p| !p.released) {
        tracing::warn!(name, holder = %dead.holder, job_id = ?dead.job_id, "took over an expired lease");
    }
    let shared = Arc::new(Shared {
        store: store.clone(),
        key: key.to_string(),
        name: name.to_string(),
        holder: opts.holder.clone(),
        ttl: opts.ttl,
        state: tokio::sync::Mutex::new(State { etag, record: mine }),
        lost_to: std::sync::Mutex::new(None),
    });
    Ok(Try::Got(Lease {
        renewer: tokio::spawn(renew_forever(shared.clone())),
        shared,
        previous,
    }))
}

/// The lease's ETag and record (HEAD first, then GET: see the module docs), `None` when
/// there is none.
async fn read_lease(store: &DynStore, key: &str) -> Result<Option<(String, LeaseRecord)>> {
    let Some(meta) = store.head(key).await? else {
        return Ok(None);
    };
    let bytes: Bytes = match store.get(key).await {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let record: LeaseRecord = serde_json::from_slice(&bytes).map_err(|e| {
        Error::record(
            format!("{}{key}", store.describe()),
            format!("unreadable lease ({e}): delete it if no run of the name is running"),
        )
    })?;
    Ok(Some((meta.etag, record)))
}

/// A token no other holding has: the holder, the time and a process-wide counter, hashed.
fn new_token(holder: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let d = Sha256::digest(format!("{holder}\n{nanos}\n{n}").as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

//! The embedded store: one [redb](https://docs.rs/redb) file under `data.dir` for the state
//! that must survive a restart on a single node (offline queues, push registrations).
//!
//! Writes go through one writer thread, in the order they were submitted: a component that
//! submits a write and later a read-modify-write of the same keys sees its own write. The
//! thread groups what is waiting into one transaction (one fsync per group), so a burst of
//! small writes costs one commit. Reads run on tokio's blocking pool against a snapshot.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::metrics;

/// Most writes committed in one transaction.
const GROUP: usize = 1024;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error (I/O, corruption).
    #[error("store: {0}")]
    Db(String),
    /// The write queue is full (the disk does not keep up).
    #[error("store write queue is full")]
    Busy,
    /// The store is closed (shutting down).
    #[error("store is closed")]
    Closed,
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        Self::Db(e.into().to_string())
    }
}

/// A write job: runs inside the group's transaction (or learns that none could be begun) and
/// returns what to do once the commit succeeded or failed.
type Job = Box<dyn FnOnce(Result<&WriteTransaction, &StoreError>) -> Option<Done> + Send>;
type Done = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A read that must see every write submitted before it.
type ReadJob = Box<dyn FnOnce(Result<&ReadTransaction, &StoreError>) + Send>;

/// What the writer thread is asked to do.
enum Msg {
    Write(Job),
    Read(ReadJob),
    /// Commit what is queued, close the file, acknowledge.
    Close(mpsc::Sender<()>),
}

/// The database, until [`Store::close`].
type Slot = Arc<RwLock<Option<Arc<Database>>>>;

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Slot,
    writes: mpsc::SyncSender<Msg>,
}

impl Store {
    /// Opens (or creates) `dir/switchboard.redb` and starts the writer thread, which ends
    /// when the last handle is dropped. At most `queue` writes wait for it; beyond that
    /// [`Store::submit`] refuses. Fails if another process has the file open.
    pub fn open(dir: &Path, queue: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot create the data directory {}: {e}", dir.display()),
            )
        })?;
        let path = dir.join("switchboard.redb");
        let db = Database::create(&path).map_err(|e| {
            std::io::Error::other(format!(
                "cannot open the embedded store {}: {e} (is another switchboard using this \
                 data directory? set SWITCHBOARD_DATA_DIR)",
                path.display()
            ))
        })?;
        let db: Slot = Arc::new(RwLock::new(Some(Arc::new(db))));
        let (writes, rx) = mpsc::sync_channel::<Msg>(queue.max(1));
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("switchboard-store".into())
            .spawn(move || write_loop(&writer_db, &rx))?;
        Ok(Self { db, writes })
    }

    /// Commits every write queued so far and closes the file (the next `open` of the same
    /// directory, in this process or another, succeeds). Later calls fail with `Closed`.
    pub async fn close(&self) {
        let (tx, rx) = mpsc::channel();
        let writes = self.writes.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if writes.send(Msg::Close(tx)).is_ok() {
                let _ = rx.recv();
            }
        })
        .await;
    }

    /// Queues `f` to run in a write transaction, without waiting; `done` learns whether it
    /// was committed. Never blocks: a full queue answers [`StoreError::Busy`].
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        done: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let job: Job = Box::new(move |txn| {
            let txn = match txn {
                Ok(t) => t,
                Err(e) => {
                    done(Err(StoreError::Db(e.to_string())));
                    return None;
                }
            };
            let out = f(txn);
            Some(Box::new(move |commit: Result<(), &StoreError>| {
                done(match (out, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(StoreError::Db(e.to_string())),
                })
            }))
        });
        self.enqueue(Msg::Write(job))
    }

    /// Hands `msg` to the writer thread without blocking; a full queue is counted.
    fn enqueue(&self, msg: Msg) -> Result<(), StoreError> {
        self.writes.try_send(msg).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                metrics::store_busy();
                StoreError::Busy
            }
            mpsc::TrySendError::Disconnected(_) => StoreError::Closed,
        })
    }

    /// Runs `f` in a write transaction and waits until it is committed.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for start-up code outside the runtime's async context: blocks the
    /// calling thread until the write is committed.
    pub fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` against a snapshot that includes every write submitted before this call
    /// (committed first if needed; writes submitted just after may be included too), without
    /// a write transaction: ordered like a write, costs no fsync of its own.
    pub async fn read_after_writes<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |txn| {
            let _ = tx.send(match txn {
                Ok(t) => f(t),
                Err(e) => Err(StoreError::Db(e.to_string())),
            });
        });
        self.enqueue(Msg::Read(job))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` against a snapshot of everything committed so far.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = current(&self.db).ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || f(&db.begin_read()?))
            .await
            .map_err(|_| StoreError::Closed)?
    }
}

fn current(slot: &Slot) -> Option<Arc<Database>> {
    slot.read().expect("store slot poisoned").clone()
}

/// The writer thread: one transaction per group of queued jobs, until closed.
fn write_loop(slot: &Slot, rx: &mpsc::Receiver<Msg>) {
    let mut closing = None;
    while let Ok(first) = rx.recv() {
        let (mut jobs, mut reads) = (Vec::new(), Vec::new());
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(j) => jobs.push(j),
                // Reads run after the group's commit: they see every write submitted before
                // them (and possibly some after, which their callers accept), and a burst of
                // reads and writes still costs one fsync.
                Msg::Read(r) => reads.push(r),
                Msg::Close(ack) => {
                    closing = Some(ack);
                    break;
                }
            }
            if jobs.len() + reads.len() < GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !jobs.is_empty() {
            commit_group(slot, jobs);
        }
        if !reads.is_empty() {
            match current(slot).map(|db| db.begin_read()) {
                Some(Ok(txn)) => reads.into_iter().for_each(|r| r(Ok(&txn))),
                Some(Err(e)) => {
                    let e = StoreError::from(e);
                    reads.into_iter().for_each(|r| r(Err(&e)));
                }
                None => reads.into_iter().for_each(|r| r(Err(&StoreError::Closed))),
            }
        }
        if let Some(ack) = closing.take() {
            slot.write().expect("store slot poisoned").take();
            let _ = ack.send(());
            // Anything submitted later fails: its completion is dropped with the channel.
            return;
        }
    }
}

fn commit_group(slot: &Slot, jobs: Vec<Job>) {
    let Some(db) = current(slot) else {
        for job in jobs {
            job(Err(&StoreError::Closed));
        }
        return;
    };
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let err = StoreError::from(e);
            tracing::error!(error = %err, "embedded store: cannot begin a write");
            for job in jobs {
                job(Err(&err));
            }
            return;
        }
    };
    let done: Vec<Done> = jobs.into_iter().filter_map(|job| job(Ok(&txn))).collect();
    let result = txn.commit().map_err(StoreError::from);
    if let Err(e) = &result {
        tracing::error!(error = %e, "embedded store: commit failed");
    }
    for d in done {
        d(result.as_ref().map(|_| ()));
    }
}

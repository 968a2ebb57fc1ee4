//! History of the single-node broker across a graceful restart: written to the embedded store
//! at shutdown, read back (and deleted) at start-up, with the id counter, so ids handed out
//! before the restart stay valid for `since`. A crash loses the in-memory history (a replay
//! then says `complete: false`); user events are covered by the offline queue, which is
//! written as they happen.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::event::Event;
use crate::ids::AppId;
use crate::store::{Store, StoreError};

const META: TableDefinition<&str, u64> = TableDefinition::new("history_meta");
/// `(app, stream, seq)` → event JSON.
const EVENTS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("history_events");
/// `(app, stream)` → the highest sequence trimmed from the stream.
const TRIMMED: TableDefinition<(&str, &str), u64> = TableDefinition::new("history_trimmed");

/// One stream: its key, trimmed mark and events (oldest first).
pub(super) type StreamDump = ((AppId, String), u64, Vec<(u64, Event)>);

/// The broker's history at shutdown.
#[derive(Default)]
pub(super) struct Snapshot {
    pub epoch: u64,
    pub next: u64,
    pub streams: Vec<StreamDump>,
}

/// Reads the snapshot and deletes it, so that it is used once: a crash after this start must
/// not bring back ids this process hands out again.
pub(super) fn take(store: &Store) -> Result<Option<Snapshot>, StoreError> {
    store.write_blocking(|txn| {
        let mut meta = txn.open_table(META)?;
        let (Some(epoch), Some(next)) = (
            meta.get("epoch")?.map(|g| g.value()),
            meta.get("next")?.map(|g| g.value()),
        ) else {
            return Ok(None);
        };
        meta.remove("epoch")?;
        meta.remove("next")?;
        let mut snap = Snapshot {
            epoch,
            next,
            streams: Vec::new(),
        };
        {
            let trimmed = txn.open_table(TRIMMED)?;
            let events = txn.open_table(EVENTS)?;
            for item in trimmed.iter()? {
                let (k, v) = item?;
                let (app, stream) = k.value();
                let mut list = Vec::new();
                for e in events.range((app, stream, 0)..=(app, stream, u64::MAX))? {
                    let (k, v) = e?;
                    if let Ok(ev) = serde_json::from_slice::<Event>(v.value()) {
                        list.push((k.value().2, ev));
                    }
                }
                snap.streams
                    .push(((AppId::new(app), stream.to_owned()), v.value(), list));
            }
        }
        clear(txn)?;
        Ok(Some(snap))
    })
}

/// Replaces the stored snapshot with `snap`.
pub(super) async fn save(store: &Store, snap: Snapshot) -> Result<usize, StoreError> {
    store
        .write(move |txn| {
            clear(txn)?;
            let mut meta = txn.open_table(META)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut trimmed = txn.open_table(TRIMMED)?;
            let mut n = 0;
            for ((app, stream), trim, list) in &snap.streams {
                trimmed.insert((app.as_str(), stream.as_str()), *trim)?;
                for (seq, e) in list {
                    let json = serde_json::to_vec(e).expect("an event always serializes");
                    events.insert((app.as_str(), stream.as_str(), *seq), json.as_slice())?;
                    n += 1;
                }
            }
            meta.insert("epoch", snap.epoch)?;
            meta.insert("next", snap.next)?;
            Ok(n)
        })
        .await
}

fn clear(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.delete_table(EVENTS)?;
    txn.delete_table(TRIMMED)?;
    Ok(())
}

//! Running several nodes as one server over Redis (see `redis_base` for the connection):
//! node leases, the reaper that removes a dead node's presence, and the sync of local counts.
//!
//! Every node holds a lease (`{prefix}:nodes`, a sorted set of node → expiry) that it renews
//! every `lease/3`. Shared state written by a node (presence members, user connection
//! counts, channel counts) is tagged with the node, and readers ignore nodes whose lease has
//! expired, so a node killed with `kill -9` stops counting within one lease period. The
//! reaper (any node, every `lease/4`; a dead node is claimed by exactly one of them with
//! `ZREM`) then deletes its entries and announces what its death changed: `member_removed`
//! and `offline`.

mod quota;
mod reaper;
mod sync;

pub use crate::redis_base::Redis;

pub use quota::{Admit, Quota, Slot};
pub use reaper::{resign, spawn_reaper, Reaper};
pub use sync::{spawn_sync, Counts};

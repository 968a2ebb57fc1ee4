//! Where a key lives: one Switchboard cluster's keys in shards, each shard one hash slot of
//! a Redis Cluster, so that a script's keys are in one slot and the shards spread over the
//! primaries. On one server (or behind Sentinels) there is one shard: the prefix.

use super::Redis;

/// Shards of one Switchboard cluster's keys on a Redis Cluster. A constant, not a setting:
/// every node must name a channel's keys and pub/sub channel alike, and a node that counted
/// differently would miss the others' events without an error. Up to this many primaries
/// share the cluster's work; more Switchboard clusters (prefixes) spread further.
pub const CLUSTER_SHARDS: u16 = 16;

/// Hash slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// A part of the keyspace whose keys share one hash slot on a Redis Cluster (its prefix is
/// the hash tag), so a script may touch any of them. A channel's keys (history stream,
/// cache, presence, pub/sub channel) are in the channel's shard, a user's (history stream,
/// offline queue, connection state, pub/sub channels) in the user's; what belongs to the
/// whole cluster (apps, per-node counts, connection quotas) is in [`Shard::HOME`]; node
/// leases are in every shard, so each shard's scripts can tell a live node from a dead one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard(pub(super) u16);

impl Shard {
    /// Where the cluster-wide keys live.
    pub const HOME: Shard = Shard(0);

    /// Its place in [`Redis::shards`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Each shard's key prefix and hash slot. Shard `k`'s tag (`{prefix.j}`, the first `j`
/// found) hashes into the `k`-th sixteenth of the slots: a Redis Cluster assigns slots in
/// even ranges, so the shards spread evenly over its primaries. Deterministic, so every node
/// computes the same names.
pub(super) fn prefixes(prefix: &str, shards: u16) -> Vec<(String, u16)> {
    let width = SLOTS / shards;
    (0..shards)
        .map(|k| {
            (0u32..)
                .map(|j| {
                    let tag = format!("{prefix}.{j}");
                    let slot = crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % SLOTS;
                    (format!("{{{tag}}}"), slot)
                })
                .find(|(_, slot)| slot / width == k)
                .expect("some tag hashes into every range")
        })
        .collect()
}

impl Redis {
    /// `{prefix}:{part}:{part}...` in [`Shard::HOME`].
    pub fn key(&self, parts: &[&str]) -> String {
        self.key_at(Shard::HOME, parts)
    }

    /// `{shard's prefix}:{part}:{part}...`
    pub fn key_at(&self, shard: Shard, parts: &[&str]) -> String {
        let mut k = self.prefix_at(shard).to_owned();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// The key prefix of `shard`: a script's `P`.
    fn prefix_at(&self, shard: Shard) -> &str {
        &self.shards[usize::from(shard.0)].0
    }

    /// `script` to run in `shard`: the shard's prefix is its `KEYS[1]`, so a node that no
    /// longer owns the slot answers MOVED (the client follows it; without a declared key it
    /// would run the script against keys it does not hold), and its `ARGV[1]`, the `lua!`
    /// prelude's `P`.
    pub fn script<'a>(
        &self,
        script: &'a redis::Script,
        shard: Shard,
    ) -> redis::ScriptInvocation<'a> {
        let prefix = self.prefix_at(shard);
        let mut inv = script.prepare_invoke();
        inv.key(prefix).arg(prefix);
        inv
    }

    /// Every shard, [`Shard::HOME`] first.
    pub fn shards(&self) -> impl Iterator<Item = Shard> + '_ {
        (0..self.shards.len() as u16).map(Shard)
    }

    /// How many shards there are: a cluster-wide bound kept per shard is this share of it.
    pub fn shard_count(&self) -> u64 {
        self.shards.len() as u64
    }

    /// The shard of `app`'s topic `parts` (joined by `:`, as `"c", channel` or a history
    /// stream's name `"c:{channel}"`: both name the same shard).
    fn shard_of(&self, app: &str, parts: &[&str]) -> Shard {
        let n = self.shards.len() as u16;
        if n == 1 {
            return Shard::HOME;
        }
        let mut h = crc16::State::<crc16::XMODEM>::new();
        h.update(app.as_bytes());
        for p in parts {
            h.update(b":");
            h.update(p.as_bytes());
        }
        Shard(h.get() % n)
    }

    /// The shard of an owner's keys: `("c", channel)` or `("u", user)` (`Target::owner`).
    pub fn shard(&self, app: &str, (kind, name): (&str, &str)) -> Shard {
        self.shard_of(app, &[kind, name])
    }

    /// The shard of a channel's keys.
    pub fn channel_shard(&self, app: &str, channel: &str) -> Shard {
        self.shard(app, ("c", channel))
    }

    /// The shard of a user's keys.
    pub fn user_shard(&self, app: &str, user: &str) -> Shard {
        self.shard(app, ("u", user))
    }

    /// The shard of a history stream (`c:{channel}` or `u:{user}`, as `event::stream_of`).
    pub fn stream_shard(&self, app: &str, stream: &str) -> Shard {
        self.shard_of(app, &[stream])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shard_hashes_into_its_own_range_of_slots() {
        let shards = prefixes("switchboard", CLUSTER_SHARDS);
        assert_eq!(shards.len(), usize::from(CLUSTER_SHARDS));
        let width = SLOTS / CLUSTER_SHARDS;
        for (k, (tag, slot)) in shards.iter().enumerate() {
            assert_eq!(usize::from(slot / width), k, "{tag}");
            // What Redis computes: CRC16 (XMODEM) of the text between the braces.
            let inner = tag.trim_start_matches('{').trim_end_matches('}');
            let crc = crc16::State::<crc16::XMODEM>::calculate(inner.as_bytes());
            assert_eq!(crc % SLOTS, *slot);
        }
        assert_eq!(
            shards,
            prefixes("switchboard", CLUSTER_SHARDS),
            "deterministic"
        );
    }
}

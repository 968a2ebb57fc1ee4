//! Lua shared by the cluster scripts. Every script starts with [`PRELUDE`]: `now` (ms, from
//! the Redis clock, so nodes' clocks do not matter) and `alive(node)` (its lease has not
//! expired). Keys are built inside the scripts from `ARGV[1]` (the prefix). On a Redis Cluster
//! the prefix is a hash tag (`{switchboard}`), so every key a script builds is in the slot the
//! script is sent to.

/// Common Lua header.
#[macro_export]
macro_rules! lua {
    ($body:expr) => {
        concat!(
            "local P = ARGV[1]\n",
            "local t = redis.call('TIME')\n",
            "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            "local function alive(n)\n",
            "  local e = redis.call('ZSCORE', P .. ':nodes', n)\n",
            "  return e ~= false and e ~= nil and tonumber(e) > now\n",
            "end\n",
            $body
        )
    };
}

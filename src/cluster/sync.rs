//! Publishing this node's channel and connection counts to Redis.

//! Lease renewal and the reaper of dead nodes.

//! The accounting. For every published event: was it acknowledged, which fault window it
//! falls in, and, for each consumer that subscribes to its stream, whether that consumer
//! was expected to receive it and how often (and in what order) it did.
//!
//! - A consumer *covers* an event when one of its sessions (subscribed → disconnected)
//!   began before the event's first attempt and lasted at least 1 s past its
//!   acknowledgement. Consumers connected throughout cover every event unless a fault
//!   disconnected them after all (counted as `uncovered`).
//! - *Lost*: acknowledged, and missing at a throughout consumer that covered it.
//! - *Delivered*: acknowledged and received by every throughout consumer that covered it.
//! - *Duplicated* / *reordered*: received more than once / after a later event of the same
//!   publisher, at a throughout consumer.
//! - For the other consumers, every acknowledged event started after their first
//!   subscription is expected; a missing one is `missed_connected` when a session covered
//!   it, `missed_dropped` when that session ended with the server's slow-consumer close
//!   (4100, which drops what was queued), else `missed_gap` (published while it was
//!   disconnected: a replay must fill it).
//! - An event belongs to the first fault whose window (injection → recovery + 2 s)
//!   overlaps its first attempt → acknowledgement; else to `none`.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::consume::{Proto, Role, Rx, Session};
use crate::faults::{Fault, KINDS};
use crate::ledger::{Rec, Seen, Stream, AMBIGUOUS, GAVE_UP, NOT_ACKED, REFUSED};

/// Samples kept per list.
const SAMPLES: usize = 50;

#[derive(Default)]
struct Tally {
    acknowledged: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    uncovered: u64,
    unacked: u64,
    unacked_delivered: u64,
    f_expected: u64,
    f_delivered: u64,
    f_missed_connected: u64,
    f_missed_dropped: u64,
    f_missed_gap: u64,
    f_missed_gap_bus: u64,
    f_duplicated: u64,
    f_reordered: u64,
}

impl Tally {
    fn json(&self) -> Value {
        json!({
            "acknowledged": self.acknowledged, "delivered": self.delivered, "lost": self.lost,
            "duplicated": self.duplicated, "reordered": self.reordered,
            "uncovered": self.uncovered, "unacknowledged": self.unacked,
            "unacknowledged_delivered": self.unacked_delivered,
            "faulted": {
                "expected": self.f_expected, "delivered": self.f_delivered,
                "missed_connected": self.f_missed_connected,
                "missed_dropped": self.f_missed_dropped, "missed_gap": self.f_missed_gap,
                "missed_gap_bus": self.f_missed_gap_bus,
                "duplicated": self.f_duplicated, "reordered": self.f_reordered,
            },
        })
    }
}

/// The session that covers `r`, if any.
fn covering_session(sessions: &[Session], r: &Rec) -> Option<Session> {
    let until = u64::from(r.acked) + 1_000;
    sessions
        .iter()
        .find(|s| s.start <= u64::from(r.sent) && s.end >= until)
        .copied()
}

fn secs(ms: u64) -> f64 {
    (ms as f64 / 10.0).round() / 100.0
}

fn window(f: &Fault) -> (u64, u64) {
    (f.start, f.recovered.unwrap_or(f.restore + 120_000) + 2_000)
}

/// Per consumer, while judging.
struct View<'a> {
    rx: &'a Rx,
    seen: Seen,
    sessions: Vec<Session>,
    first: u64,
    t: Tally,
}

fn stats(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    json!({"min": v[0], "median": v[v.len() / 2], "max": v[v.len() - 1], "n": v.len()})
}

/// The result line.
pub fn build(streams: &[Arc<Stream>], rxs: &[Arc<Rx>], faults: &[Fault]) -> Map<String, Value> {
    let mut kinds: Vec<Tally> = (0..=KINDS.len()).map(|_| Tally::default()).collect();
    let mut overall = Tally::default();
    let mut per_fault: Vec<Tally> = faults.iter().map(|_| Tally::default()).collect();
    let mut views: Vec<View> = rxs
        .iter()
        .map(|rx| {
            let sessions = rx.sessions();
            View {
                rx,
                seen: Seen::default(),
                first: sessions.first().map_or(u64::MAX, |s| s.start),
                sessions,
                t: Tally::default(),
            }
        })
        .collect();
    let (mut lost, mut dups, mut late, mut missed) = (vec![], vec![], vec![], vec![]);
    let mut faulted_dups = vec![];
    let mut stream_out = vec![];
    for (p, stream) in streams.iter().enumerate() {
        let recs = stream.records();
        for v in views.iter_mut() {
            if v.rx.streams.contains(&p) {
                v.seen = v.rx.seen_of(p);
            }
        }
        let (mut acked, mut gave_up, mut refused, mut ambiguous, mut attempts) = (0, 0, 0, 0, 0);
        for (seq, r) in recs.iter().enumerate() {
            let seq = seq as u64;
            let is_acked = r.acked != NOT_ACKED;
            acked += u64::from(is_acked);
            gave_up += u64::from(r.flags & GAVE_UP != 0);
            refused += u64::from(r.flags & REFUSED != 0);
            ambiguous += u64::from(r.flags & AMBIGUOUS != 0);
            attempts += u64::from(r.attempts);
            let end = if is_acked { r.acked } else { r.sent };
            let fault = faults.iter().position(|f| {
                let (a, b) = window(f);
                u64::from(r.sent) <= b && u64::from(end) >= a
            });
            let kind = fault.map_or(KINDS.len(), |i| {
                KINDS.iter().position(|k| *k == faults[i].kind).unwrap_or(0)
            });
            let mut e = Tally {
                acknowledged: u64::from(is_acked),
                unacked: u64::from(!is_acked),
                ..Tally::default()
            };
            let (mut missing_at, mut any_seen, mut covering) = (vec![], false, 0);
            for v in views.iter_mut().filter(|v| v.rx.streams.contains(&p)) {
                let has = v.seen.has(seq);
                any_seen |= has;
                let (dup, is_late) = (v.seen.dup(seq), v.seen.late(seq));
                let session = covering_session(&v.sessions, r).filter(|_| is_acked);
                let cov = session.is_some();
                let dropped = session.is_some_and(|s| s.slow_close);
                let mut f = Tally::default();
                if is_acked && u64::from(r.sent) >= v.first {
                    f.f_expected = 1;
                    f.f_delivered = u64::from(has);
                    f.f_missed_connected = u64::from(!has && cov && !dropped);
                    f.f_missed_dropped = u64::from(!has && dropped);
                    f.f_missed_gap = u64::from(!has && !cov);
                    f.f_missed_gap_bus = f.f_missed_gap * u64::from(v.rx.proto == Proto::Bus);
                }
                f.f_duplicated = u64::from(dup);
                f.f_reordered = u64::from(is_late);
                add_faulted(&mut v.t, &f);
                if v.rx.role == Role::Throughout {
                    e.duplicated |= u64::from(dup);
                    e.reordered |= u64::from(is_late);
                    if is_acked && cov {
                        covering += 1;
                        if !has {
                            missing_at.push(v.rx.name.clone());
                        }
                    } else if is_acked {
                        e.uncovered = 1;
                    }
                    continue;
                }
                add_faulted(&mut e, &f);
                if dup && faulted_dups.len() < SAMPLES {
                    faulted_dups.push(json!({"consumer": v.rx.name, "stream": stream.name,
                        "seq": seq, "sent_s": secs(r.sent.into()),
                        "acked_s": if is_acked { json!(secs(r.acked.into())) } else { Value::Null },
                        "attempts": r.attempts, "ambiguous": r.flags & AMBIGUOUS != 0,
                        "fault": fault.map(|i| format!("#{i} {}", faults[i].kind)),
                        "while_connected": cov}));
                }
                let notable = v.rx.proto == Proto::Bus || (cov && !dropped);
                if f.f_expected == 1 && !has && notable && missed.len() < SAMPLES {
                    missed.push(json!({"consumer": v.rx.name, "stream": stream.name,
                        "seq": seq, "sent_s": secs(r.sent.into()),
                        "acked_s": secs(r.acked.into()), "while_connected": cov,
                        "dropped_by_4100": dropped}));
                }
            }
            e.unacked_delivered = u64::from(!is_acked && any_seen);
            e.lost = u64::from(!missing_at.is_empty());
            e.delivered = u64::from(is_acked && covering > 0 && missing_at.is_empty());
            let sample = || {
                json!({"stream": stream.name, "seq": seq, "sent_s": secs(r.sent.into()),
                    "acked_s": if is_acked { json!(secs(r.acked.into())) } else { Value::Null },
                    "attempts": r.attempts, "ambiguous": r.flags & AMBIGUOUS != 0,
                    "fault": fault.map(|i| format!("#{i} {}", faults[i].kind)),
                    "missing_at": missing_at})
            };
            if e.lost == 1 && lost.len() < SAMPLES {
                lost.push(sample());
            }
            if e.duplicated == 1 && dups.len() < SAMPLES {
                dups.push(sample());
            }
            if e.reordered == 1 && late.len() < SAMPLES {
                late.push(sample());
            }
            for t in [&mut kinds[kind], &mut overall] {
                add(t, &e);
            }
            if let Some(i) = fault {
                add(&mut per_fault[i], &e);
            }
        }
        stream_out.push(
            json!({"name": stream.name, "kind": format!("{:?}", stream.kind),
            "events": recs.len(), "acknowledged": acked, "gave_up": gave_up,
            "refused": refused, "ambiguous_retries": ambiguous,
            "attempts_per_event": if recs.is_empty() { 0.0 } else {
                attempts as f64 / recs.len() as f64 }}),
        );
    }
    let mut by_kind = Map::new();
    for (i, t) in kinds.iter().enumerate() {
        let name = KINDS.get(i).copied().unwrap_or("none");
        let mine: Vec<&Fault> = faults.iter().filter(|f| f.kind == name).collect();
        let rec = |from: fn(&Fault) -> u64| {
            stats(
                mine.iter()
                    .filter_map(|f| f.recovered.map(|r| secs(r - from(f))))
                    .collect(),
            )
        };
        let mut v = t.json();
        v["injections"] = json!(mine.len());
        v["not_recovered"] = json!(mine.iter().filter(|f| f.recovered.is_none()).count());
        v["recovery_s"] = rec(|f| f.restore);
        v["disruption_s"] = rec(|f| f.start);
        by_kind.insert(name.to_owned(), v);
    }
    let mut total = overall.json();
    total["injections"] = json!(faults.len());
    by_kind.insert("overall".into(), total);
    let fault_out: Vec<Value> = faults
        .iter()
        .zip(&per_fault)
        .map(|(f, t)| {
            json!({"kind": f.kind, "target": f.target, "start_s": secs(f.start),
                "restore_s": secs(f.restore), "recovered_s": f.recovered.map(secs),
                "recovery_s": f.recovered.map(|r| secs(r - f.restore)), "note": f.note,
                "acknowledged": t.acknowledged, "lost": t.lost, "duplicated": t.duplicated,
                "reordered": t.reordered,
                "faulted_missed": t.f_missed_connected + t.f_missed_dropped + t.f_missed_gap})
        })
        .collect();
    let consumers: Vec<Value> = views
        .iter()
        .map(|v| {
            let rx = v.rx;
            json!({"name": rx.name, "proto": format!("{:?}", rx.proto).to_lowercase(),
                "node": rx.node + 1, "role": rx.role.name(), "sessions": v.sessions.len(),
                "closes": rx.closes(), "incomplete_replays": rx.incomplete.load(
                    std::sync::atomic::Ordering::Relaxed),
                "unexpected": rx.unexpected.load(std::sync::atomic::Ordering::Relaxed),
                "expected": v.t.f_expected, "delivered": v.t.f_delivered,
                "missed_connected": v.t.f_missed_connected,
                "missed_dropped": v.t.f_missed_dropped, "missed_gap": v.t.f_missed_gap,
                "duplicated": v.t.f_duplicated, "reordered": v.t.f_reordered})
        })
        .collect();
    let mut out = Map::new();
    out.insert("by_fault".into(), Value::Object(by_kind));
    out.insert("faults".into(), json!(fault_out));
    out.insert("consumers".into(), json!(consumers));
    out.insert("streams".into(), json!(stream_out));
    out.insert("lost_samples".into(), json!(lost));
    out.insert("duplicate_samples".into(), json!(dups));
    out.insert("reorder_samples".into(), json!(late));
    out.insert("faulted_missed_samples".into(), json!(missed));
    out.insert("faulted_duplicate_samples".into(), json!(faulted_dups));
    out
}

fn add_faulted(t: &mut Tally, f: &Tally) {
    t.f_expected += f.f_expected;
    t.f_delivered += f.f_delivered;
    t.f_missed_connected += f.f_missed_connected;
    t.f_missed_dropped += f.f_missed_dropped;
    t.f_missed_gap += f.f_missed_gap;
    t.f_missed_gap_bus += f.f_missed_gap_bus;
    t.f_duplicated += f.f_duplicated;
    t.f_reordered += f.f_reordered;
}

fn add(t: &mut Tally, e: &Tally) {
    t.acknowledged += e.acknowledged;
    t.delivered += e.delivered;
    t.lost += e.lost;
    t.duplicated += e.duplicated;
    t.reordered += e.reordered;
    t.uncovered += e.uncovered;
    t.unacked += e.unacked;
    t.unacked_delivered += e.unacked_delivered;
    add_faulted(t, e);
}

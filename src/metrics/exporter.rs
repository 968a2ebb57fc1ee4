//! The Prometheus recorder and what `/metrics` renders.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// What `/metrics` renders: the recorder's series and the process's, read on each scrape.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    /// Counters this node keeps itself (see [`Exporter::own`]).
    own: Vec<(&'static str, Arc<AtomicU64>)>,
}

impl Exporter {
    /// The Prometheus text of every series, the process series read now.
    pub fn render(&self) -> String {
        self.process.collect();
        let text = self.handle.render();
        if self.own.is_empty() {
            return text;
        }
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let own = self.own.iter().find(|(name, _)| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' '))
            });
            match own {
                Some((name, n)) => {
                    out.push_str(&format!("{name} {}", n.load(Ordering::Relaxed)));
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// Renders the unlabelled counter `name` from this node's own `value`. The recorder is
    /// process-wide, so nodes that share a process (tests, embedders) would otherwise show
    /// each other's counts; this one is how interest is measured from outside.
    pub fn own(mut self, name: &'static str, value: Arc<AtomicU64>) -> Self {
        self.own.push((name, value));
        self
    }
}

/// Installs the process-wide Prometheus recorder once and returns its exporter. Call it
/// before loading apps: handles made before it count into nothing.
pub fn install() -> Exporter {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    let handle = HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone();
    Exporter {
        handle,
        process: metrics_process::Collector::default(),
        own: Vec::new(),
    }
}

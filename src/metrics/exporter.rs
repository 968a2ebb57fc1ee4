//! The Prometheus recorder and what `/metrics` renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// What `/metrics` renders: the recorder's series and the process's, read on each scrape.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl Exporter {
    /// The Prometheus text of every series, the process series read now.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
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
    }
}

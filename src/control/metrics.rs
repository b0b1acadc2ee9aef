//! Server metrics in the Prometheus (OpenMetrics) text format, with
//! `prometheus-client`.
//!
//! Counters (HTTP requests by status, bytes served) are bumped by delivery
//! as responses leave; gauges about streams are refreshed from the stream
//! snapshots when `/metrics` is scraped, so nothing here touches media work.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::deliver::viewers::ViewerStats;
use crate::live::StreamStatus;

/// The content type of the text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenditionLabels {
    stream: String,
    rendition: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Counts webhook deliveries by result: `ok`, `retry` (an attempt failed
/// and will be retried), `failed` (all attempts failed) and `dropped` (the
/// webhook's queue was full).
#[derive(Debug, Clone, Default)]
pub struct WebhookCounter(Family<ResultLabels, Counter>);

impl WebhookCounter {
    pub fn count(&self, result: &'static str) {
        self.0.get_or_create(&ResultLabels { result }).inc();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Counts closed event sockets and streams by why: `client` (it left),
/// `slow_consumer`, `heartbeat_timeout`, `shutdown` or `protocol`.
#[derive(Debug, Clone, Default)]
pub struct DisconnectCounter(Family<ReasonLabels, Counter>);

impl DisconnectCounter {
    /// Counts one socket ended with `code` (`None`: the client closed it).
    pub fn count(&self, code: Option<u16>) {
        let reason = match code {
            None => "client",
            Some(4008) => "slow_consumer",
            Some(4002) => "heartbeat_timeout",
            Some(1001) => "shutdown",
            Some(_) => "protocol",
        };
        self.0.get_or_create(&ReasonLabels { reason }).inc();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EncoderLabels {
    stream: String,
    rendition: String,
    encoder: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<StatusLabels, Counter>,
    bytes_served: Counter,
    streams_live: Gauge,
    publishers: Gauge,
    viewers: Gauge,
    stream_viewers: Family<StreamLabels, Gauge>,
    rendition_viewers: Family<RenditionLabels, Gauge>,
    webhooks: WebhookCounter,
    disconnects: DisconnectCounter,
    ingest_fps: Family<StreamLabels, Gauge<f64, AtomicU64>>,
    ingest_bitrate: Family<StreamLabels, Gauge>,
    rendition_bandwidth: Family<RenditionLabels, Gauge>,
    rendition_fps: Family<RenditionLabels, Gauge<f64, AtomicU64>>,
    rendition_encoder: Family<EncoderLabels, Gauge>,
    dropped_frames: Family<StreamLabels, Gauge>,
    disk_mirror_failing: Family<StreamLabels, Gauge>,
    /// Serialises scrapes: each clears and refills the stream families.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bigfoot");
        let http_requests = Family::<StatusLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP responses sent, by status code",
            http_requests.clone(),
        );
        let bytes_served = Counter::default();
        registry.register(
            "bytes_served",
            "Bytes of HTTP response bodies sent",
            bytes_served.clone(),
        );
        let streams_live = Gauge::default();
        registry.register(
            "streams_live",
            "Streams with a live publisher",
            streams_live.clone(),
        );
        let publishers = Gauge::default();
        registry.register(
            "publishers",
            "RTMP publishers connected",
            publishers.clone(),
        );
        let viewers = Gauge::default();
        registry.register(
            "viewers",
            "Current viewers (player sessions) over all streams",
            viewers.clone(),
        );
        let stream_viewers = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "stream_viewers",
            "Current viewers of each stream",
            stream_viewers.clone(),
        );
        let rendition_viewers = Family::<RenditionLabels, Gauge>::default();
        registry.register(
            "rendition_viewers",
            "Current viewers of each rendition (by the last one they fetched)",
            rendition_viewers.clone(),
        );
        let webhooks = WebhookCounter::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by result: ok, retry, failed (gave up), dropped (queue full)",
            webhooks.0.clone(),
        );
        let disconnects = DisconnectCounter::default();
        registry.register(
            "event_disconnects",
            "Event sockets and streams closed, by reason: client, slow_consumer, \
             heartbeat_timeout, shutdown, protocol",
            disconnects.0.clone(),
        );
        let ingest_fps = Family::<StreamLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "ingest_fps",
            "Frames per second received from the publisher",
            ingest_fps.clone(),
        );
        let ingest_bitrate = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "ingest_bitrate_kbps",
            "Bitrate received from the publisher, in kbit/s",
            ingest_bitrate.clone(),
        );
        let rendition_bandwidth = Family::<RenditionLabels, Gauge>::default();
        registry.register(
            "rendition_bandwidth_bps",
            "Peak bandwidth of each rendition's segments, in bit/s",
            rendition_bandwidth.clone(),
        );
        let rendition_fps = Family::<RenditionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "rendition_fps",
            "Frames per second encoded (or passed through) for each video rendition",
            rendition_fps.clone(),
        );
        let rendition_encoder = Family::<EncoderLabels, Gauge>::default();
        registry.register(
            "rendition_encoder",
            "1 for the encoder backend each rendition uses now",
            rendition_encoder.clone(),
        );
        let disk_mirror_failing = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "disk_mirror_failing",
            "1 while writing a stream's disk mirror fails (a full disk)",
            disk_mirror_failing.clone(),
        );
        let dropped_frames = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "dropped_frames",
            "Source video frames dropped since the stream started",
            dropped_frames.clone(),
        );
        Self {
            registry,
            rendition_fps,
            rendition_encoder,
            dropped_frames,
            disk_mirror_failing,
            http_requests,
            bytes_served,
            streams_live,
            publishers,
            viewers,
            stream_viewers,
            rendition_viewers,
            webhooks,
            disconnects,
            ingest_fps,
            ingest_bitrate,
            rendition_bandwidth,
            scrape: Mutex::new(()),
        }
    }

    /// Counts one HTTP response and its body bytes.
    pub fn record_http(&self, status: u16, body_bytes: u64) {
        self.http_requests
            .get_or_create(&StatusLabels { status })
            .inc();
        self.bytes_served.inc_by(body_bytes);
    }

    /// The counter closed event sockets report to.
    pub fn disconnects(&self) -> DisconnectCounter {
        self.disconnects.clone()
    }

    /// The counter webhook deliveries report to.
    pub fn webhooks(&self) -> WebhookCounter {
        self.webhooks.clone()
    }

    /// The text exposition, with the stream gauges taken from `streams`
    /// and the viewer gauges from `viewers`.
    pub fn render(
        &self,
        streams: &[(String, StreamStatus)],
        viewers: &HashMap<String, ViewerStats>,
    ) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(streams);
        self.refresh_viewers(viewers);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    fn refresh(&self, streams: &[(String, StreamStatus)]) {
        self.ingest_fps.clear();
        self.ingest_bitrate.clear();
        self.rendition_bandwidth.clear();
        self.rendition_fps.clear();
        self.rendition_encoder.clear();
        self.dropped_frames.clear();
        self.disk_mirror_failing.clear();
        let live: Vec<_> = streams.iter().filter(|(_, s)| s.live).collect();
        self.streams_live.set(count(live.len()));
        self.publishers.set(count(
            live.iter().filter(|(_, s)| s.publisher.is_some()).count(),
        ));
        for (name, status) in live {
            let labels = StreamLabels {
                stream: name.clone(),
            };
            if let Some(fps) = status.ingest.fps {
                self.ingest_fps.get_or_create(&labels).set(fps);
            }
            self.disk_mirror_failing
                .get_or_create(&labels)
                .set(i64::from(status.disk_mirror_failing));
            self.dropped_frames
                .get_or_create(&labels)
                .set(i64::try_from(status.dropped_frames).unwrap_or(i64::MAX));
            if let Some(kbps) = status.ingest.bitrate_kbps {
                self.ingest_bitrate
                    .get_or_create(&labels)
                    .set(i64::try_from(kbps).unwrap_or(i64::MAX));
            }
            for rendition in &status.renditions {
                let labels = RenditionLabels {
                    stream: name.clone(),
                    rendition: rendition.name.clone(),
                };
                if let Some(fps) = rendition.fps {
                    self.rendition_fps.get_or_create(&labels).set(fps);
                }
                let encoder = EncoderLabels {
                    stream: name.clone(),
                    rendition: rendition.name.clone(),
                    encoder: rendition.encoder.clone(),
                };
                self.rendition_encoder.get_or_create(&encoder).set(1);
                let bandwidth = i64::try_from(rendition.bandwidth).unwrap_or(i64::MAX);
                self.rendition_bandwidth
                    .get_or_create(&labels)
                    .set(bandwidth);
            }
        }
    }
}

impl Metrics {
    fn refresh_viewers(&self, viewers: &HashMap<String, ViewerStats>) {
        self.stream_viewers.clear();
        self.rendition_viewers.clear();
        self.viewers
            .set(count(viewers.values().map(|v| v.current).sum()));
        for (stream, stats) in viewers.iter().filter(|(_, v)| v.current > 0) {
            let labels = StreamLabels {
                stream: stream.clone(),
            };
            self.stream_viewers
                .get_or_create(&labels)
                .set(count(stats.current));
            for (rendition, n) in &stats.by_rendition {
                let labels = RenditionLabels {
                    stream: stream.clone(),
                    rendition: rendition.clone(),
                };
                self.rendition_viewers.get_or_create(&labels).set(count(*n));
            }
        }
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_families_and_labels() {
        let metrics = Metrics::new();
        metrics.record_http(200, 1000);
        metrics.record_http(404, 20);
        let mut status = StreamStatus {
            live: true,
            publisher: Some("127.0.0.1:5000".into()),
            ..StreamStatus::default()
        };
        status.ingest.fps = Some(29.97);
        let viewers = HashMap::from([(
            "cam".to_string(),
            ViewerStats {
                current: 2,
                by_rendition: HashMap::from([("source".to_string(), 2)]),
                ..ViewerStats::default()
            },
        )]);
        metrics.webhooks().count("retry");
        let text = metrics.render(
            &[("cam".into(), status), ("idle".into(), Default::default())],
            &viewers,
        );
        for line in [
            "bigfoot_http_requests_total{status=\"200\"} 1",
            "bigfoot_http_requests_total{status=\"404\"} 1",
            "bigfoot_bytes_served_total 1020",
            "bigfoot_streams_live 1",
            "bigfoot_publishers 1",
            "bigfoot_viewers 2",
            "bigfoot_stream_viewers{stream=\"cam\"} 2",
            "bigfoot_rendition_viewers{stream=\"cam\",rendition=\"source\"} 2",
            "bigfoot_webhook_deliveries_total{result=\"retry\"} 1",
            "bigfoot_ingest_fps{stream=\"cam\"} 29.97",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}

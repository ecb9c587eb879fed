//! Following containerd's image events in pullgate's namespace, so the [`NameCache`] forgets a
//! name as soon as containerd says it changed, and is trusted only while it hears.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use containerd_client::{
    services::v1::{events_client::EventsClient, ImageDelete, PublishRequest, SubscribeRequest},
    types::Envelope,
};
use prost::Message;
use tonic::{codec::Streaming, metadata::MetadataValue, transport::Channel, Request, Status};

use super::names::{NameCache, MAX_LAG};

/// Published by pullgate in its namespace until its own subscription delivers one: containerd
/// sends nothing back, not even the reply's headers, before the first event, and a marker that
/// came back proves the subscription was registered before it was published. Then one every
/// [`HEARTBEAT`]: each that comes back says every event published before it was heard.
pub const MARKER_TOPIC: &str = "/pullgate/subscribed";

/// How often a marker is published while the events are followed: well within
/// [`super::names::MAX_LAG`], so a stream that keeps up keeps the cache in use.
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Markers remembered, by sequence, until they come back; one heard later than this many newer
/// ones were published says nothing a newer one would not.
const MARKERS_KEPT: usize = 16;

/// A subscription whose markers stop coming back for this long is made again.
const MARKERS_SILENT: Duration = Duration::from_secs(4);

/// What a marker carries: its sequence number, and a number drawn for this process so that
/// another publisher's markers (a second pullgate, a forger) never count as pullgate's own.
#[derive(Clone, PartialEq, prost::Message)]
struct Marker {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(uint64, tag = "2")]
    nonce: u64,
}

/// How long a marker is waited for before another is published (the first may have been
/// published before containerd registered the subscription).
const MARKER_INTERVAL: Duration = Duration::from_millis(50);

/// Markers published on one subscription before it is given up and made again.
const MARKER_TRIES: u32 = 40;

/// Waits between subscriptions after one failed: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Why a subscription ended.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("containerd: {}", .0.message())]
    Containerd(#[from] Status),
    #[error("containerd's event stream ended")]
    Ended,
    #[error("no marker came back in time")]
    NoMarker,
    #[error("containerd did not take a marker within {MAX_LAG:?}")]
    Unanswered,
}

/// containerd's events service, followed for one namespace.
pub struct ImageEvents {
    events: EventsClient<Channel>,
    namespace: MetadataValue<tonic::metadata::Ascii>,
    cache: Arc<NameCache>,
    /// Markers published and not yet heard: (sequence, when published), oldest first.
    sent: Mutex<VecDeque<(u64, Instant)>>,
    next: std::sync::atomic::AtomicU64,
    nonce: u64,
    /// When a marker of pullgate's own last came back (or the subscription started).
    last_heard: Mutex<Instant>,
}

// === impl ImageEvents ===

impl ImageEvents {
    pub fn new(
        events: EventsClient<Channel>,
        namespace: MetadataValue<tonic::metadata::Ascii>,
        cache: Arc<NameCache>,
    ) -> Self {
        Self {
            events,
            namespace,
            cache,
            sent: Mutex::default(),
            next: std::sync::atomic::AtomicU64::new(0),
            // std's hasher keys are drawn from the OS once per process: random enough to tell
            // pullgate's markers from another publisher's, which is all this is for.
            nonce: std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8),
            last_heard: Mutex::new(Instant::now()),
        }
    }

    /// Follows the events for as long as the process runs, subscribing again after every loss
    /// (containerd restarting, a stream error) with a bounded backoff. While not subscribed the
    /// cache is empty and bypassed.
    pub async fn follow(self) {
        let mut retry = RETRY_FIRST;
        loop {
            let lost = self.follow_once().await;
            if self.cache.is_live() {
                retry = RETRY_FIRST;
                tracing::info!(error = %lost, "containerd's image events lost; names are looked up until they are back");
            } else {
                tracing::debug!(error = %lost, retry_in = ?retry, "no subscription to containerd's image events yet");
            }
            self.cache.set_live(false);
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    /// One subscription, until it fails or ends.
    async fn follow_once(&self) -> Lost {
        let mut stream = match self.subscribe().await {
            Ok(stream) => stream,
            Err(lost) => return lost,
        };
        let reader = async {
            loop {
                let envelope = match stream.message().await {
                    Ok(Some(envelope)) => envelope,
                    Ok(None) => return Lost::Ended,
                    Err(status) => return Lost::Containerd(status),
                };
                self.heard(&envelope);
            }
        };
        // The reply started with whatever event came first; the subscription is registered now,
        // so every marker from here on is sure to come back, after every event published
        // before it. The first goes at once. A containerd that stops answering, or markers that
        // stop coming back, end the subscription: it is made again.
        *lock(&self.last_heard) = Instant::now();
        let heartbeat = async {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if lock(&self.last_heard).elapsed() > MARKERS_SILENT {
                    return Lost::NoMarker;
                }
                let mut events = self.events.clone();
                let publish = events.publish(self.marker());
                match tokio::time::timeout(MAX_LAG, publish).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => return Lost::Containerd(status),
                    Err(_) => return Lost::Unanswered,
                }
            }
        };
        tokio::select! {
            lost = reader => lost,
            lost = heartbeat => lost,
        }
    }

    /// Subscribes, and publishes markers until the reply starts.
    async fn subscribe(&self) -> Result<Streaming<Envelope>, Lost> {
        let namespace = self.namespace.to_str().unwrap_or_default();
        let request = SubscribeRequest {
            filters: vec![
                format!("namespace=={},topic~=\"^/images/\"", quoted(namespace)),
                format!("namespace=={},topic=={}", quoted(namespace), quoted(MARKER_TOPIC)),
            ],
        };
        let mut events = self.events.clone();
        let subscribed = events.subscribe(request);
        tokio::pin!(subscribed);
        for _ in 0..MARKER_TRIES {
            let mut publisher = self.events.clone();
            let published = publisher.publish(self.marker());
            // The subscription may answer while the marker is on its way.
            let waited = async {
                published.await?;
                tokio::time::sleep(MARKER_INTERVAL).await;
                Ok::<_, Status>(())
            };
            tokio::select! {
                reply = &mut subscribed => return Ok(reply?.into_inner()),
                waited = waited => waited?,
            }
        }
        Err(Lost::NoMarker)
    }

    /// One event: a marker makes the cache live, an image event drops its name.
    fn heard(&self, envelope: &Envelope) {
        if envelope.topic == MARKER_TOPIC {
            // Any marker proves the subscription registered; only one of pullgate's own, by
            // its sequence, says how recent the events are.
            if !self.cache.is_live() {
                self.cache.set_live(true);
                tracing::info!("following containerd's image events");
            }
            let sequence = envelope
                .event
                .as_ref()
                .and_then(|any| Marker::decode(any.value.as_slice()).ok())
                .filter(|marker| marker.nonce == self.nonce)
                .map(|marker| marker.sequence);
            let published = sequence.and_then(|sequence| {
                let mut sent = lock(&self.sent);
                let at = sent.iter().position(|(s, _)| *s == sequence)?;
                let published = sent[at].1;
                sent.drain(..=at);
                Some(published)
            });
            if let Some(published) = published {
                *lock(&self.last_heard) = Instant::now();
                self.cache.heard_marker(published);
            }
            return;
        }
        // ImageCreate, ImageUpdate and ImageDelete all carry the name as field 1.
        let name = envelope
            .event
            .as_ref()
            .and_then(|any| ImageDelete::decode(any.value.as_slice()).ok())
            .map(|event| event.name)
            .filter(|name| !name.is_empty());
        match name {
            Some(name) => self.cache.changed(&name),
            None => {
                tracing::debug!(topic = %envelope.topic, "an image event without a name");
                self.cache.changed_all();
            }
        }
    }

    /// A new marker, remembered as published now.
    fn marker(&self) -> Request<PublishRequest> {
        let sequence = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut sent = lock(&self.sent);
            if sent.len() >= MARKERS_KEPT {
                sent.pop_front();
            }
            sent.push_back((sequence, Instant::now()));
        }
        let mut request = Request::new(PublishRequest {
            topic: MARKER_TOPIC.to_string(),
            event: Some(prost_types::Any {
                type_url: "types.googleapis.com/google.protobuf.UInt64Value".to_string(),
                value: Marker {
                    sequence,
                    nonce: self.nonce,
                }
                .encode_to_vec(),
            }),
        });
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }
}

/// The lock's value; what it guards is whole after every statement, so a panic elsewhere leaves
/// it usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `value` as a quoted string of containerd's filter syntax.
pub fn quoted(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(request: &PublishRequest) -> Envelope {
        Envelope {
            timestamp: None,
            namespace: "k8s.io".to_string(),
            topic: request.topic.clone(),
            event: request.event.clone(),
        }
    }

    /// A marker counts only when it is one of this process's own: another publisher's, with a
    /// sequence it guessed, makes the subscription known to be live but never the cache used.
    #[tokio::test]
    async fn only_pullgates_own_markers_say_the_events_are_recent() {
        let channel = tonic::transport::Endpoint::from_static("http://containerd.sock").connect_lazy();
        let cache = Arc::new(NameCache::default());
        let namespace = MetadataValue::from_static("k8s.io");
        let events = ImageEvents::new(EventsClient::new(channel), namespace, cache.clone());

        let own = events.marker().into_inner();
        let mut forged = own.clone();
        let any = forged.event.as_mut().expect("an event");
        let mut marker = Marker::decode(any.value.as_slice()).expect("a marker");
        marker.nonce = marker.nonce.wrapping_add(1);
        any.value = marker.encode_to_vec();

        events.heard(&envelope(&forged));
        assert!(cache.is_live());
        assert_eq!(cache.ticket(), None, "a forged marker made the cache usable");
        events.heard(&envelope(&own));
        assert!(cache.ticket().is_some());
    }

    #[test]
    fn filter_values_are_quoted_with_quotes_and_backslashes_escaped() {
        assert_eq!(quoted("k8s.io"), r#""k8s.io""#);
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}

//! The one publish path. Every event, wherever it comes from (the HTTP API, a client's message,
//! presence, the store's writer, a publisher's message through the broker, the Pusher face), is
//! checked, shaped by its channel's rules and serialized here, once, then handed to the broker:
//! sequenced first when its stream keeps history.
//!
//! A [`Publisher`] is the handles the path uses, borrowed from the node (`Node::publisher`); it
//! is a few pointers, made per call.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::broker::{Broker, BrokerError, Published};
use crate::hub::event::{EventError, compact_object, prepare_payload};
use crate::hub::rules::ChannelRules;
use crate::hub::{ConnId, Event, Hub, Target};
use crate::presence::activity::RoomActivity;
use crate::protocol::validate_name;
use crate::stats::NodeCounters;
use crate::store::crypto::Keyring;
use crate::streams::History;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event or its target is invalid.
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// The broker could not take it.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// What publishing an event needs.
pub struct Publisher<'a> {
    /// This node's id.
    pub id: &'a Arc<str>,
    /// Per-channel rules (default `type`, broadcast, shape).
    pub rules: &'a ChannelRules,
    /// Where events go to every node.
    pub broker: &'a Broker,
    /// This node's hub (the broker delivers local copies to it).
    pub hub: &'a Hub,
    /// The node's publish counters.
    pub counters: &'a NodeCounters,
    /// Which streams keep history.
    pub history: &'a History,
    /// Seals sensitive events before they are recorded.
    pub keyring: &'a Keyring,
    /// Room activity, recorded only while the bare room list is on (`api.bare_room_list`).
    pub activity: Option<&'a RoomActivity>,
}

impl Publisher<'_> {
    /// Checks a target's names and applies its channel's `broadcast` rule.
    fn check_target(&self, mut target: Target) -> Result<Target, EventError> {
        for (what, name) in [("channel", &target.channel), ("room", &target.room), ("user", &target.user)] {
            if let Some(name) = name {
                validate_name(what, name).map_err(|e| EventError::InvalidName(e.message))?;
            }
        }
        if target.is_empty() {
            return Err(EventError::NoTarget);
        }
        if target.channel.as_deref().and_then(|c| self.rules.get(c)).is_some_and(|r| r.broadcast) {
            target.broadcast = true;
        }
        Ok(target)
    }

    /// Resolves where an event goes and serializes it, applying the channel's rules (default
    /// `type`, broadcast to everyone, shape). This runs once per event, before the fan-out.
    pub fn prepare(&self, target: Target, event: Value) -> Result<(Target, Bytes), EventError> {
        let Value::Object(event) = event else {
            return Err(EventError::NotAnObject);
        };
        let target = self.check_target(target)?;
        let rule = target.channel.as_deref().and_then(|c| self.rules.get(c));
        let (event, kind) = match rule.and_then(|r| r.shape.as_deref()) {
            Some(shape) => (shape.apply(event), shape.kind().or(rule.and_then(|r| r.default_type.as_deref()))),
            None => (event, rule.and_then(|r| r.default_type.as_deref())),
        };
        Ok((target, prepare_payload(event, kind)))
    }

    /// [`Publisher::prepare`] for an event still in its request's text: when the channel has no
    /// default `type` and no shape, the object's text is kept (compacted) instead of being
    /// parsed into a `Value` and serialized again; otherwise it is parsed and prepared as usual.
    pub fn prepare_raw(&self, target: Target, event: &RawValue) -> Result<(Target, Bytes), EventError> {
        let rule = target.channel.as_deref().and_then(|c| self.rules.get(c));
        if rule.is_some_and(|r| r.default_type.is_some() || r.shape.is_some()) {
            let value: Value = serde_json::from_str(event.get()).map_err(|_| EventError::NotAnObject)?;
            return self.prepare(target, value);
        }
        let payload = compact_object(event.get()).ok_or(EventError::NotAnObject)?;
        let target = self.check_target(target)?;
        Ok((target, payload))
    }

    /// Validates and publishes an event to every node.
    pub async fn publish(
        &self,
        target: Target,
        event: Value,
        exclude: Option<ConnId>,
    ) -> Result<Published, PublishError> {
        self.publish_prepared(self.prepare(target, event), exclude).await
    }

    /// [`Publisher::publish`] for an event still in its request's text (see
    /// [`Publisher::prepare_raw`]).
    pub async fn publish_raw(&self, target: Target, event: &RawValue) -> Result<Published, PublishError> {
        self.publish_prepared(self.prepare_raw(target, event), None).await
    }

    /// Publishes what [`Publisher::prepare`] or [`Publisher::prepare_raw`] made of an event,
    /// counting a refused one as a publish error.
    async fn publish_prepared(
        &self,
        prepared: Result<(Target, Bytes), EventError>,
        exclude: Option<ConnId>,
    ) -> Result<Published, PublishError> {
        let (target, payload) = prepared.inspect_err(|_| {
            self.counters.publish_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        let event = match exclude {
            Some(conn) => Event::excluding(target, payload, conn),
            None => Event::new(target, payload),
        };
        self.publish_event(event).await
    }

    /// Publishes prepared events in order (one broker round trip).
    pub async fn publish_events(&self, events: Vec<Arc<Event>>) -> Published {
        if events.is_empty() {
            // An empty pipeline is an error to Redis, which would read as an outage.
            return Published::Everywhere;
        }
        let count = events.len() as u64;
        if events.iter().any(|e| self.history.stream_for(&e.target).is_some()) {
            // Events of streams with history are sequenced one by one, in order.
            let mut published = Published::Everywhere;
            for event in events {
                if let Ok(Published::LocalOnly) = self.publish_event(event).await {
                    published = Published::LocalOnly;
                }
            }
            return published;
        }
        for event in &events {
            self.note_room_event(&event.target);
        }
        let published = self.broker.publish_batch(self.hub, self.id, events).await;
        self.counters.publishes.fetch_add(count, Ordering::Relaxed);
        published
    }

    /// Counts an event sent to a room for the bare rooms list, when one is configured.
    pub fn note_room_event(&self, target: &Target) {
        if let (Some(activity), Some(room)) = (self.activity, &target.room) {
            activity.message(room, crate::store::now_ms());
        }
    }

    /// Publishes a prepared event.
    pub async fn publish_event(&self, event: Arc<Event>) -> Result<Published, PublishError> {
        self.note_room_event(&event.target);
        let result = match self.history.stream_for(&event.target) {
            Some((stream, settings)) => crate::streams::publish(self, event, stream, settings).await,
            None => self.broker.publish(self.hub, self.id, event).await,
        };
        match result {
            Ok(published) => {
                self.counters.publishes.fetch_add(1, Ordering::Relaxed);
                Ok(published)
            }
            Err(e) => {
                self.counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    /// A publisher's message taken in by the broker (every node receives it): prepared, then
    /// delivered to this node's recipients, or, for a stream with history, sequenced and sent
    /// to every node by the stream's owner only (`owns`), so each event is sequenced once.
    pub async fn ingest(
        &self,
        target: Target,
        message: Value,
        owns: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(), EventError> {
        let (target, payload) = self.prepare(target, message)?;
        self.note_room_event(&target);
        if let Some((stream, settings)) = self.history.stream_for(&target) {
            if owns(&stream) {
                self.counters.publishes.fetch_add(1, Ordering::Relaxed);
                let _ = crate::streams::publish(self, Event::new(target, payload), stream, settings).await;
            }
            return Ok(());
        }
        self.counters.publishes.fetch_add(1, Ordering::Relaxed);
        self.hub.dispatch(Event::new(target, payload)).await;
        Ok(())
    }
}

/// Publishing into a stream with history needs the broker, the hub, the node's id and keyring.
impl crate::streams::Sequencer for Publisher<'_> {
    fn broker(&self) -> &Broker {
        self.broker
    }

    fn hub(&self) -> &Hub {
        self.hub
    }

    fn node_id(&self) -> &Arc<str> {
        self.id
    }

    fn keyring(&self) -> &Keyring {
        self.keyring
    }
}

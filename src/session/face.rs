//! Protocol faces other than Herald's own, as the session sees them.
//!
//! A session runs one connection's socket, limits and index entries whatever protocol its
//! client speaks; what the frames *mean* belongs to the face. Herald's own protocol is the
//! session's `dispatch`. Another face (the Pusher Channels protocol) plugs in through these
//! traits: its upgrade handler puts an [`Opening`] into the [`ConnectPlan`](super::ConnectPlan),
//! the session starts it on the shard, and from then on the connection's [`FaceConn`] state
//! names the [`Face`] that handles its frames and its end. The session never names a face.

use std::any::Any;
use std::cell::RefMut;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;

use super::Session;
use crate::session::Shard;

/// A protocol face's handlers for the connections that speak it.
pub trait Face: Sync + 'static {
    /// Handles one text message (the face's errors are its own replies; the connection carries on).
    fn text<'a>(&self, shard: &'a Rc<Shard>, session: &'a Rc<Session>, text: Bytes) -> LocalBoxFuture<'a, ()>;

    /// Handles one binary message.
    fn binary(&self, shard: &Rc<Shard>, session: &Rc<Session>);

    /// Runs after the connection left its shard's index (departures, freed slots). The face
    /// takes its state back with [`Session::take_face_state`].
    fn finish<'a>(&self, shard: &'a Rc<Shard>, session: &'a Rc<Session>) -> LocalBoxFuture<'a, ()>;
}

/// What a face decided at the upgrade, carried to the shard in the plan.
pub trait Opening: Send {
    /// Starts the connection on its shard: its first message and its state
    /// ([`Session::set_face_state`]), or its refusal.
    fn start(self: Box<Self>, shard: &Rc<Shard>, session: &Rc<Session>);
}

/// A face's per-connection state, kept by the session (one pointer while absent).
pub trait FaceConn: Any {
    /// The face that handles this connection.
    fn face(&self) -> &'static dyn Face;

    /// The id of the face's app (namespace) the connection belongs to, for the admin API.
    fn app_id(&self) -> Option<&str> {
        None
    }

    /// The name the connection's app knows for a hub name (channel or user) of its own.
    fn own_name<'a>(&self, _hub_name: &'a str) -> Option<&'a str> {
        None
    }
}

impl Session {
    /// The face of a connection that speaks one (once started).
    pub fn face(&self) -> Option<&'static dyn Face> {
        self.face.borrow().as_ref().map(|state| state.face())
    }

    /// The id of the face's app the connection belongs to (see [`FaceConn::app_id`]).
    pub fn face_app(&self) -> Option<String> {
        self.face.borrow().as_ref().and_then(|state| state.app_id().map(String::from))
    }

    /// A hub name (channel or user) of this connection as its client knows it: the face's own
    /// name for it, else the hub name itself.
    pub fn client_name(&self, hub_name: &str) -> String {
        let face = self.face.borrow();
        face.as_ref().and_then(|state| state.own_name(hub_name)).unwrap_or(hub_name).to_string()
    }

    /// Gives the connection its face's state.
    pub fn set_face_state(&self, state: Box<dyn FaceConn>) {
        *self.face.borrow_mut() = Some(state);
    }

    /// The face's state, when it is a `T`. Borrowed until the guard is dropped: never hold it
    /// across an `await`.
    pub fn face_state<T: FaceConn>(&self) -> Option<RefMut<'_, T>> {
        RefMut::filter_map(self.face.borrow_mut(), |state| {
            state.as_mut().and_then(|s| (&mut **s as &mut dyn Any).downcast_mut::<T>())
        })
        .ok()
    }

    /// Takes the face's state back (at the end of the connection), when it is a `T`.
    pub fn take_face_state<T: FaceConn>(&self) -> Option<Box<T>> {
        let mut slot = self.face.borrow_mut();
        if !slot.as_ref().is_some_and(|s| (&**s as &dyn Any).is::<T>()) {
            return None;
        }
        let state: Box<dyn Any> = slot.take()?;
        state.downcast::<T>().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointKind;
    use crate::hub::event::Wire;
    use crate::session::ConnInfo;
    use crate::transport::io::{ConnIo, StreamIo};

    struct Quiet;

    impl Face for Quiet {
        fn text<'a>(&self, _: &'a Rc<Shard>, _: &'a Rc<Session>, _: Bytes) -> LocalBoxFuture<'a, ()> {
            Box::pin(async {})
        }

        fn binary(&self, _: &Rc<Shard>, _: &Rc<Session>) {}

        fn finish<'a>(&self, _: &'a Rc<Shard>, _: &'a Rc<Session>) -> LocalBoxFuture<'a, ()> {
            Box::pin(async {})
        }
    }

    static QUIET: Quiet = Quiet;

    struct Counter(u32);

    impl FaceConn for Counter {
        fn face(&self) -> &'static dyn Face {
            &QUIET
        }

        fn own_name<'a>(&self, hub_name: &'a str) -> Option<&'a str> {
            hub_name.strip_prefix("app:")
        }
    }

    struct Other;

    impl FaceConn for Other {
        fn face(&self) -> &'static dyn Face {
            &QUIET
        }
    }

    fn session() -> Session {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let info = ConnInfo {
            client_id: "c".into(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            kind: EndpointKind::Pusher,
            path: "/app/k".into(),
            connected_at: std::time::SystemTime::now(),
            max_message: 1024,
            wire: Wire::default(),
            seq: false,
        };
        let io = ConnIo::Stream(Box::new(StreamIo::new(tx, Default::default())));
        Session::new(1, "n-1".into(), info, io, None, None)
    }

    #[test]
    fn a_faces_state_is_found_by_its_own_type_only() {
        let session = session();
        assert!(session.face().is_none() && session.face_state::<Counter>().is_none());
        assert_eq!(session.client_name("app:jobs"), "app:jobs", "no face: the hub name as it is");
        session.set_face_state(Box::new(Counter(1)));
        assert!(session.face().is_some());
        session.face_state::<Counter>().expect("its own type").0 += 1;
        assert!(session.face_state::<Other>().is_none(), "another face's type finds nothing");
        assert!(session.take_face_state::<Other>().is_none(), "and takes nothing");
        assert_eq!(session.client_name("app:jobs"), "jobs", "the face names it");
        assert_eq!(session.take_face_state::<Counter>().map(|c| c.0), Some(2));
        assert!(session.face().is_none(), "taken back");
    }
}

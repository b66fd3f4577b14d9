//! The protocol and routing of the core issue, over real sockets against the real binary.

use serde_json::json;

use crate::common::{Herald, Options};

const CAMPAIGNS: &str = r#"
[server]
mounts = ["/ws", "/api/v1/ws"]

[[endpoints]]
path = "/campaigns"
channels = ["campaigns"]
rooms = ["campaign:{campaign_id}"]

[[endpoints]]
path = "/demos"
channels = ["demos"]
rooms = ["demo:{demo_id}"]

[[endpoints]]
path = "/connect"
welcome = "connection_established"

[[channels]]
name = "jobs:updates"
default_type = "job_update"
broadcast = true
"#;

#[tokio::test]
async fn welcome_names_the_connection_and_its_subscriptions() {
    let herald = Herald::start(CAMPAIGNS).await;
    let client = herald.connect("/ws?client_id=user123&channels=leads,notifications").await;
    let welcome = &client.welcome;
    assert_eq!(welcome["type"], "connection");
    assert_eq!(welcome["client_id"], "user123");
    assert!(welcome["connection_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(welcome["channels"], json!(["leads", "notifications"]));
    assert!(welcome["timestamp"].as_str().is_some());

    let chat = herald.connect("/ws/connect").await;
    assert_eq!(chat.welcome["type"], "connection_established");
    assert!(chat.welcome["connection_id"].is_string());
}

#[tokio::test]
async fn ping_subscribe_unsubscribe_join_and_leave_are_acknowledged() {
    let herald = Herald::start("").await;
    let mut client = herald.connect("/ws").await;

    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert!(pong["timestamp"].is_string());

    let ack = client.request(json!({"type": "subscribe", "channels": ["campaigns", "emails"], "id": 1})).await;
    assert_eq!(
        ack,
        json!({"type": "subscribed", "channels": ["campaigns", "emails"], "timestamp": ack["timestamp"], "id": 1})
    );

    let ack = client.request(json!({"type": "unsubscribe", "channels": ["emails"]})).await;
    assert_eq!(ack["type"], "unsubscribed");
    assert_eq!(ack["channels"], json!(["emails"]));

    let ack = client.request(json!({"type": "join_room", "room": "campaign:456"})).await;
    assert_eq!(ack["type"], "room_joined");
    assert_eq!(ack["room"], "campaign:456");

    let ack = client.request(json!({"type": "join_room", "room_id": "workspace_123"})).await;
    assert_eq!(ack["room_id"], "workspace_123");

    let ack = client.request(json!({"type": "leave_room", "room_id": "workspace_123"})).await;
    assert_eq!(ack["type"], "room_left");

    // Unsubscribed channels and left rooms no longer deliver; subscribed ones do.
    herald.publish(json!({"channel": "emails", "event": {"type": "email:opened"}})).await;
    herald.publish(json!({"room": "workspace_123", "event": {"type": "left-room-event"}})).await;
    herald.publish(json!({"channel": "campaigns", "event": {"type": "campaign:launched"}})).await;
    assert_eq!(client.recv_event().await["type"], "campaign:launched");
}

#[tokio::test]
async fn an_event_reaches_channel_room_and_user_once_each() {
    let herald = Herald::start("").await;
    let mut in_all = herald.connect("/ws?channels=campaigns&user_id=alice").await;
    in_all.request(json!({"type": "join_room", "room": "campaign:1"})).await;
    let mut channel_only = herald.connect("/ws?channels=campaigns").await;
    let mut room_only = herald.connect("/ws").await;
    room_only.request(json!({"type": "join_room", "room": "campaign:1"})).await;
    let mut user_tab_two = herald.connect("/ws?user_id=alice").await;
    let mut outsider = herald.connect("/ws?channels=emails&user_id=bob").await;

    herald
        .publish(json!({"channel": "campaigns", "room": "campaign:1", "user_id": "alice", "event": {"type": "campaign:launched", "n": 1}}))
        .await;
    // A marker published afterwards proves nothing else (no duplicate) came in between.
    herald.publish(json!({"broadcast": true, "event": {"type": "marker"}})).await;

    for client in [&mut in_all, &mut channel_only, &mut room_only, &mut user_tab_two] {
        assert_eq!(client.recv_event().await["type"], "campaign:launched");
        assert_eq!(client.recv_event().await["type"], "marker");
    }
    assert_eq!(outsider.recv_event().await["type"], "marker");
}

#[tokio::test]
async fn a_user_is_notified_on_every_connection() {
    let herald = Herald::start(CAMPAIGNS).await;
    let mut tab_one = herald.connect("/ws?user_id=user_123").await;
    let mut tab_two = herald.connect("/api/v1/ws?user_id=user_123").await;
    let (status, _) = herald
        .post(
            "/api/v1/ws/users/user_123/notify",
            json!({"type": "direct_message", "from": "admin", "message": "Please review"}),
        )
        .await;
    assert_eq!(status, 200);
    for tab in [&mut tab_one, &mut tab_two] {
        let event = tab.recv_event().await;
        assert_eq!(event["type"], "direct_message");
        assert_eq!(event["message"], "Please review");
    }
}

#[tokio::test]
async fn dedicated_endpoints_presubscribe_from_query_parameters() {
    let herald = Herald::start(CAMPAIGNS).await;
    let mut campaign = herald.connect("/ws/campaigns?campaign_id=123").await;
    assert_eq!(campaign.welcome["channels"], json!(["campaigns"]));
    assert_eq!(campaign.welcome["rooms"], json!(["campaign:123"]));
    let mut demo = herald.connect("/api/v1/ws/demos?demo_id=demo_789&client_id=dash").await;
    assert_eq!(demo.welcome["rooms"], json!(["demo:demo_789"]));
    let mut no_param = herald.connect("/ws/campaigns").await;
    assert_eq!(no_param.welcome["rooms"], json!([]));

    herald.publish(json!({"room": "campaign:123", "event": {"type": "email:opened", "room": "campaign:123"}})).await;
    herald.publish(json!({"channel": "demos", "room": "demo:demo_789", "event": {"type": "demo:completed"}})).await;
    herald.publish(json!({"channel": "campaigns", "event": {"type": "campaign:completed"}})).await;

    assert_eq!(campaign.recv_event().await["type"], "email:opened");
    assert_eq!(campaign.recv_event().await["type"], "campaign:completed");
    assert_eq!(demo.recv_event().await["type"], "demo:completed");
    assert_eq!(no_param.recv_event().await["type"], "campaign:completed");
}

#[tokio::test]
async fn channel_defaults_give_a_type_and_broadcast_to_everyone() {
    let herald = Herald::start(CAMPAIGNS).await;
    // The job-updates document's clients connect to /ws and subscribe to nothing.
    let mut browser_one = herald.connect("/ws").await;
    let mut browser_two = herald.connect("/api/v1/ws").await;
    herald
        .publish(json!({"channel": "jobs:updates", "event": {"job_id": "test-123", "status": "completed", "data": {"success": true}}}))
        .await;
    for browser in [&mut browser_one, &mut browser_two] {
        let event = browser.recv_event().await;
        assert_eq!(event["type"], "job_update");
        assert_eq!(event["job_id"], "test-123");
        assert_eq!(event["status"], "completed");
        assert_eq!(event["data"]["success"], true);
    }
}

#[tokio::test]
async fn heartbeats_and_ping_frames_arrive_at_the_configured_interval() {
    let herald = Herald::start("[websocket]\nheartbeat_interval = \"200ms\"\nidle_timeout = \"5s\"").await;
    let mut raw = crate::common::raw::RawClient::connect(herald.addr, "/ws").await;
    let mut saw_heartbeat = false;
    let mut saw_ping = false;
    while !(saw_heartbeat && saw_ping) {
        match raw.next().await {
            Some(herald::transport::frame::Message::Ping(_)) => saw_ping = true,
            Some(herald::transport::frame::Message::Text(text)) => {
                let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
                if value["type"] == "heartbeat" {
                    assert!(value["timestamp"].is_string());
                    saw_heartbeat = true;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn heartbeat_messages_can_be_turned_off() {
    let herald = Herald::start_with(Options::toml(
        "[websocket]\nheartbeat_interval = \"100ms\"\nheartbeat_message = false\nidle_timeout = \"5s\"",
    ))
    .await;
    let mut raw = crate::common::raw::RawClient::connect(herald.addr, "/ws").await;
    // Three ping frames and no heartbeat text in between.
    let mut pings = 0;
    while pings < 3 {
        match raw.next().await {
            Some(herald::transport::frame::Message::Ping(_)) => pings += 1,
            Some(herald::transport::frame::Message::Text(text)) => {
                let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
                assert_ne!(value["type"], "heartbeat");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

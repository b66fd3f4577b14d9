// Seed document 003 (collaborative spreadsheet), sections "WebSocket Connection" (its first form;
// the second, with a headers option, is for Node clients), "Connection Events" and "Join Room",
// copied verbatim; the join is sent once the connection is open. The Node test runs it with
// only ws://localhost:8000 and the token placeholder replaced; `handleMessage` is the
// application's, which the test provides.

const token = "your-jwt-token";
const ws = new WebSocket(`ws://localhost:8000/api/v1/ws?token=${token}`);

ws.onopen = function(event) {
    console.log('Connected to WebSocket');
};

ws.onmessage = function(event) {
    const message = JSON.parse(event.data);
    handleMessage(message);
};

ws.onclose = function(event) {
    console.log('WebSocket connection closed');
};

ws.onerror = function(error) {
    console.error('WebSocket error:', error);
};

ws.addEventListener("open", () => {
ws.send(JSON.stringify({
    type: "join_room",
    room_id: "workspace_123"
}));
});

// Seed document 000 ("WebSocket Infrastructure Guide"), section "JavaScript/TypeScript (Browser)",
// copied verbatim. The browser test serves it with only ws://localhost:8000 replaced by the test
// server's address.

// Connect to main WebSocket with channel subscriptions
const ws = new WebSocket(
  'ws://localhost:8000/ws?client_id=user123&channels=campaigns,emails'
);

// Connection opened
ws.onopen = () => {
  console.log('WebSocket connected');

  // Subscribe to additional channels
  ws.send(JSON.stringify({
    type: 'subscribe',
    channels: ['scrapers', 'ai']
  }));

  // Join a specific campaign room
  ws.send(JSON.stringify({
    type: 'join_room',
    room: 'campaign:123'
  }));
};

// Receive messages
ws.onmessage = (event) => {
  const message = JSON.parse(event.data);

  switch (message.type) {
    case 'connection':
      console.log('Connected:', message);
      break;

    case 'campaign:launched':
      console.log('Campaign launched:', message);
      // Update UI
      break;

    case 'email:opened':
      console.log('Email opened:', message);
      // Update stats
      break;

    case 'scraper:progress':
      console.log('Scraper progress:', message.percent + '%');
      // Update progress bar
      break;

    case 'heartbeat':
      // Connection is healthy
      break;

    default:
      console.log('Unknown message:', message);
  }
};

// Error handling
ws.onerror = (error) => {
  console.error('WebSocket error:', error);
};

// Connection closed
ws.onclose = () => {
  console.log('WebSocket disconnected');
  // Implement reconnection logic
};

// Send ping to test connection
function ping() {
  ws.send(JSON.stringify({ type: 'ping' }));
}

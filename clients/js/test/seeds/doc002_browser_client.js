// Seed document 002 ("WebSocket Real-Time Updates"), section "JavaScript Example", copied
// verbatim. The browser test serves it with only ws://localhost:8080 replaced by the test server's
// address; `updateJobStatus` is the application's UI function, which the test page provides.

// Connect to WebSocket
const ws = new WebSocket('ws://localhost:8080/ws');

// Handle connection open
ws.onopen = () => {
    console.log('Connected to WebSocket server');
};

// Handle incoming messages
ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    
    if (message.type === 'job_update') {
        console.log(`Job ${message.job_id} status: ${message.status}`);
        console.log('Data:', message.data);
        
        // Update UI based on status
        updateJobStatus(message.job_id, message.status, message.data);
    }
};

// Handle errors
ws.onerror = (error) => {
    console.error('WebSocket error:', error);
};

// Handle connection close
ws.onclose = () => {
    console.log('Disconnected from WebSocket server');
    // Implement reconnection logic here
};

// Send heartbeat (optional - server sends pings)
setInterval(() => {
    if (ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: 'ping' }));
    }
}, 30000);

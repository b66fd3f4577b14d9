// Seed document 004 (message dashboard), section "Frontend Hook", copied verbatim. The Node test
// transpiles it with TypeScript and runs it with React's useCallback and state setters provided
// by the test, and only ws://localhost:8000 replaced by the test server's address.

const connectWebSocket = useCallback(() => {
  const ws = new WebSocket('ws://localhost:8000/ws/stats');

  ws.onopen = () => {
    console.log('WebSocket connected');
    setWsConnected(true);
  };

  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);

    // Update stats from WebSocket
    const newStats: SystemStats = {
      total_messages: data.total_messages || 0,
      queue_depth: data.queue_depth || 0,
      messages_per_second: data.messages_per_second || 0,
      total_batches: data.total_batches || 0,
      avg_batch_size: data.avg_batch_size || 0,
    };

    setStats(newStats);

    // Add to throughput history for chart
    setThroughputHistory((prev) => {
      const newPoint = {
        timestamp: new Date().toISOString(),
        time: new Date().toLocaleTimeString(),
        messages: newStats.messages_per_second,
      };
      return [...prev, newPoint].slice(-20); // Keep last 20 points
    });
  };

  ws.onclose = () => {
    // Auto-reconnect after 3 seconds
    setTimeout(connectWebSocket, 3000);
  };
}, []);

// Seed document 001 (manufacturing chat), section "JavaScript/TypeScript Client", copied
// verbatim. The Node test transpiles it with TypeScript and runs it with only
// ws://localhost:8000 replaced by the test server's address.

class WebSocketClient {
  private ws: WebSocket | null = null;
  private token: string;
  private reconnectAttempts = 0;
  private maxReconnectAttempts = 5;
  
  constructor(token: string) {
    this.token = token;
  }
  
  connect() {
    const wsUrl = `ws://localhost:8000/ws/connect?token=${this.token}&client_type=web`;
    this.ws = new WebSocket(wsUrl);
    
    this.ws.onopen = () => {
      console.log('WebSocket connected');
      this.reconnectAttempts = 0;
    };
    
    this.ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      this.handleMessage(message);
    };
    
    this.ws.onclose = () => {
      console.log('WebSocket disconnected');
      this.reconnect();
    };
    
    this.ws.onerror = (error) => {
      console.error('WebSocket error:', error);
    };
  }
  
  private handleMessage(message: any) {
    switch (message.type) {
      case 'chat_message':
        this.onChatMessage(message);
        break;
      case 'order_status_update':
        this.onOrderUpdate(message);
        break;
      case 'typing_indicator':
        this.onTypingIndicator(message);
        break;
      case 'presence_update':
        this.onPresenceUpdate(message);
        break;
    }
  }
  
  sendMessage(room: string, content: string) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({
        type: 'chat_message',
        room,
        content,
        message_type: 'text'
      }));
    }
  }
  
  joinRoom(room: string) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({
        type: 'join_room',
        room
      }));
    }
  }
  
  private reconnect() {
    if (this.reconnectAttempts < this.maxReconnectAttempts) {
      this.reconnectAttempts++;
      const delay = Math.pow(2, this.reconnectAttempts) * 1000; // Exponential backoff
      setTimeout(() => this.connect(), delay);
    }
  }
  
  // Event handlers (implement based on your UI framework)
  private onChatMessage(message: any) { /* Handle new message */ }
  private onOrderUpdate(message: any) { /* Handle order update */ }
  private onTypingIndicator(message: any) { /* Show/hide typing indicator */ }
  private onPresenceUpdate(message: any) { /* Update user presence */ }
}

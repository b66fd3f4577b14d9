# The campaign-events document's Python client, exactly as written there.
# The test replaces only "localhost:8000" with the test server's address.
import asyncio
import websockets
import json

async def connect_websocket():
    uri = "ws://localhost:8000/ws?channels=campaigns,emails"

    async with websockets.connect(uri) as websocket:
        print("Connected to WebSocket")

        # Subscribe to additional channels
        await websocket.send(json.dumps({
            "type": "subscribe",
            "channels": ["scrapers"]
        }))

        # Listen for messages
        async for message in websocket:
            data = json.loads(message)

            if data["type"] == "campaign:launched":
                print(f"Campaign launched: {data['campaign_name']}")

            elif data["type"] == "scraper:progress":
                print(f"Scraper progress: {data['percent']}%")

            elif data["type"] == "heartbeat":
                # Connection is healthy
                pass

            else:
                print(f"Received: {data}")

# Run
asyncio.run(connect_websocket())

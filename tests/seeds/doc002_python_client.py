# The job-updates document's Python client, exactly as written there.
# The test replaces only "localhost:8080" with the test server's address.
import asyncio
import websockets
import json

async def listen_to_updates():
    uri = "ws://localhost:8080/ws"
    
    async with websockets.connect(uri) as websocket:
        print("Connected to WebSocket server")
        
        async for message in websocket:
            data = json.loads(message)
            
            if data['type'] == 'job_update':
                print(f"Job {data['job_id']}: {data['status']}")
                print(f"Data: {json.dumps(data['data'], indent=2)}")

asyncio.run(listen_to_updates())

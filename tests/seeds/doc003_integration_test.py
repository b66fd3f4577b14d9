# The spreadsheet document's "Integration Tests" example. FastAPI's TestClient only talks to the
# FastAPI app in-process, so its websocket_connect is the `websockets` client's connect here;
# the body of the test is the document's. The test replaces "localhost:8000" with the server's
# address and "test_token" with a valid token.
import json
from websockets.sync.client import connect

def test_websocket_endpoint():
    with connect("ws://localhost:8000/api/v1/ws?token=test_token") as websocket:
        websocket.send(json.dumps({"type": "ping"}))
        data = json.loads(websocket.recv())
        assert data["type"] == "pong"

test_websocket_endpoint()
print("test_websocket_endpoint passed")

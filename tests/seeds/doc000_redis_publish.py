# The campaign-events document's "Direct Redis Publishing (Advanced)" snippet, exactly as written.
# The test replaces only "redis://localhost:6379" with the test Redis server's URL.
import redis
import json
from datetime import datetime

r = redis.from_url("redis://localhost:6379")

# Publish event
r.publish("fliptechpro:campaigns", json.dumps({
    "type": "campaign:launched",
    "campaign_id": 123,
    "campaign_name": "Test",
    "total_recipients": 100,
    "timestamp": datetime.utcnow().isoformat()
}))

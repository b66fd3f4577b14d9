# The message-dashboard document's "Send Test Messages" step, exactly as written there.
# The test replaces only "localhost:8000" with the test server's address.
# Send 100 messages to generate activity
for i in {1..100}; do
  curl -X POST http://localhost:8000/messages \
    -H "Content-Type: application/json" \
    -d "{\"user_id\": $i, \"channel_id\": 1, \"content\": \"Test $i\"}" &
done
wait

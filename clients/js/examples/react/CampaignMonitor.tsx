/**
 * The campaign document's `CampaignMonitor`, on `useHerald`: the room is joined once and kept
 * across reconnects (the document re-sent `join_room` whenever `connected` changed).
 */
import { useEffect } from 'react';

import { useHerald } from './useHerald';

export function CampaignMonitor({ campaignId }: { campaignId: number }) {
  const { connected, messages, joinRoom, leaveRoom } = useHerald('ws://localhost:8000/ws/campaigns', ['campaigns']);

  useEffect(() => {
    const room = `campaign:${campaignId}`;
    joinRoom(room)?.catch((error: unknown) => console.error('could not join', room, error));
    return () => {
      leaveRoom(room)?.catch(() => undefined);
    };
  }, [campaignId, joinRoom, leaveRoom]);

  const campaignEvents = messages.filter((message) => message.type.startsWith('campaign:'));

  return (
    <div>
      <h2>Campaign Monitor</h2>
      <p>Status: {connected ? 'Connected' : 'Disconnected'}</p>
      <ul>
        {campaignEvents.map((event, i) => (
          <li key={i}>
            {event.type}: {JSON.stringify(event)}
          </li>
        ))}
      </ul>
    </div>
  );
}

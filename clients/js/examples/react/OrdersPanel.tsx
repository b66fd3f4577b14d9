/**
 * The hooks of `@herald/client/react` with a typed event map: one client for the app, a
 * subscription and a room's presence per component. Type-checked by `npm run typecheck:examples`.
 */
import { useHerald, usePresence, useSubscription } from '@herald/client/react';
import type { HeraldMessage } from '@herald/client';

interface OrderEvent extends HeraldMessage {
  type: 'order:created' | 'order:shipped';
  order_id: number;
}

interface AppEvents {
  orders: OrderEvent;
  [room: `support:${string}`]: HeraldMessage;
}

export function OrdersPanel({ url, getToken }: { url: string; getToken: () => Promise<string> }) {
  const { client, state } = useHerald<AppEvents>({ url, getToken });
  const orders = useSubscription(client, 'orders', {
    onEvent: (e) => console.log('order', e.order_id),
  });
  const members = usePresence(client, 'support:42');
  return (
    <section>
      <p>connection: {state}; orders: {orders.state}</p>
      {orders.last && <p>last order: #{orders.last.order_id} ({orders.last.type})</p>}
      {orders.error && <p role="alert">{orders.error.code}</p>}
      <ul>{members?.map((m) => <li key={m.user_id}>{m.username ?? m.user_id}</li>)}</ul>
    </section>
  );
}

/**
 * A typed event map: the application says which events each channel and room carries, and
 * subscriptions hand out those types. Type-checked by `npm run typecheck:examples`; the
 * `@ts-expect-error` lines show mistakes the compiler catches.
 */
import { HeraldClient, type HeraldMessage } from '@herald/client';

interface OrderEvent extends HeraldMessage {
  type: 'order:created' | 'order:shipped';
  order_id: number;
  total_cents: number;
}

interface ChatEvent extends HeraldMessage {
  type: 'chat_message' | 'user_joined' | 'user_left' | 'room_state';
  content?: string;
  user_id?: string;
}

/** Channel or room name → the events it carries; template keys cover families of names. */
interface MyEvents {
  orders: OrderEvent;
  [room: `support:${string}`]: ChatEvent;
}

export async function main(): Promise<void> {
  const client = new HeraldClient<MyEvents>({ url: 'wss://example.com/ws', getToken: async () => 'jwt' });
  await client.connect();

  const orders = client.channel('orders');
  orders.on('event', (e: MyEvents['orders']) => console.log(e.order_id, e.total_cents / 100));
  orders.on('order:shipped', (e) => console.log(`order ${e.order_id} shipped`));
  orders.on('order:created', (e) => {
    // @ts-expect-error: order_id is a number
    const id: string = e.order_id;
    console.log(id);
  });
  await orders.subscribe();

  const room = client.room('support:42');
  room.on('chat_message', (e) => console.log(e.content?.toUpperCase()));
  room.on('join', (e) => console.log(`${e.user_id} joined ${e.room}`));
  const members = await room.presence();
  console.log(members.map((m) => m.user_id));
  await room.publish('hello');
  const { events } = await orders.history({ limit: 10 });
  const totals: number[] = events.map((e) => e.total_cents);
  console.log(totals);

  // Names outside the map are plain messages.
  client.channel('other').on('event', (e: HeraldMessage) => console.log(e.type));
}

// Types for the script-tag build (dist/herald.global.js), which defines the global `Herald`: the
// core plus the fallback transports and the MessagePack decoder.
// Reference it with `/// <reference types="@herald/client/global" />`.
declare global {
  const Herald: typeof import('./index.js') & typeof import('./fallback.js') & typeof import('./msgpack.js');
}
export {};

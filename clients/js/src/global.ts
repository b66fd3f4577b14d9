// The script-tag build (global `Herald`): the core plus the optional parts that the module
// builds keep in their own entry points (fallback transports, MessagePack).
export * from './index.js';
export { HttpStreamSocket, sse, stream } from './fallback.js';
export { decodeMsgpack } from './msgpack.js';

import { ClientErrorCode, HeraldError } from './errors.js';

const utf8 = new TextDecoder();

/**
 * Decodes one MessagePack value (Herald's `herald.msgpack` subprotocol: the JSON messages as
 * MessagePack maps). Covers every type a JSON document can become: nil, booleans, integers up to
 * 64 bits (as numbers; beyond 2^53 precision is lost, as in `JSON.parse`), floats, strings,
 * binary (as `Uint8Array`), arrays and maps. Extension types are refused.
 */
export function decodeMsgpack(input: Uint8Array): unknown {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  let at = 0;
  const need = (n: number): number => {
    if (at + n > input.length) throw new HeraldError(ClientErrorCode.INVALID_FRAME, 'truncated MessagePack');
    const start = at;
    at += n;
    return start;
  };
  const u = (n: 1 | 2 | 4): number => {
    const p = need(n);
    return n === 1 ? view.getUint8(p) : n === 2 ? view.getUint16(p) : view.getUint32(p);
  };
  const str = (n: number): string => {
    const p = need(n);
    return utf8.decode(input.subarray(p, p + n));
  };
  const list = (n: number): unknown[] => {
    const out: unknown[] = [];
    for (let i = 0; i < n; i++) out.push(value());
    return out;
  };
  const map = (n: number): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const key = value();
      // Own property even for "__proto__", like JSON.parse.
      Object.defineProperty(out, String(key), { value: value(), enumerable: true, writable: true, configurable: true });
    }
    return out;
  };
  const value = (): unknown => {
    const b = u(1);
    if (b < 0x80) return b;
    if (b < 0x90) return map(b & 0x0f);
    if (b < 0xa0) return list(b & 0x0f);
    if (b < 0xc0) return str(b & 0x1f);
    if (b >= 0xe0) return b - 0x100;
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
      case 0xc5:
      case 0xc6: {
        const n = u(b === 0xc4 ? 1 : b === 0xc5 ? 2 : 4);
        const p = need(n);
        return input.slice(p, p + n);
      }
      case 0xca:
        return view.getFloat32(need(4));
      case 0xcb:
        return view.getFloat64(need(8));
      case 0xcc:
        return u(1);
      case 0xcd:
        return u(2);
      case 0xce:
        return u(4);
      case 0xcf:
        return Number(view.getBigUint64(need(8)));
      case 0xd0:
        return view.getInt8(need(1));
      case 0xd1:
        return view.getInt16(need(2));
      case 0xd2:
        return view.getInt32(need(4));
      case 0xd3:
        return Number(view.getBigInt64(need(8)));
      case 0xd9:
        return str(u(1));
      case 0xda:
        return str(u(2));
      case 0xdb:
        return str(u(4));
      case 0xdc:
        return list(u(2));
      case 0xdd:
        return list(u(4));
      case 0xde:
        return map(u(2));
      case 0xdf:
        return map(u(4));
    }
    throw new HeraldError(ClientErrorCode.INVALID_FRAME, `unsupported MessagePack type 0x${b.toString(16)}`);
  };
  const result = value();
  if (at !== input.length) throw new HeraldError(ClientErrorCode.INVALID_FRAME, 'trailing bytes after a MessagePack value');
  return result;
}

// Types for the script-tag build (dist/herald.global.js), which defines the global `Herald`.
// Reference it with `/// <reference types="@herald/client/global" />`.
declare global {
  const Herald: typeof import('./index.js');
}
export {};

// Checks docs/asyncapi.yaml: it is valid AsyncAPI 3.0 (@asyncapi/parser, the AsyncAPI
// initiative's own validator), and it is in step with the code: every client message type the
// dispatch table (`BUILT_IN` in src/protocol/kinds.rs) handles and every error code (src/protocol/error.rs)
// is in the document, every client message and error code in the document is one the code knows,
// every server message type in the document is one the code sends, and every type the code builds
// (`outbound::reply("…")`, `"type": "…"`) is documented. It also renders the book's
// message reference (docs/book/src/protocol-reference.md) from the document and fails when the
// committed page differs; `node check-asyncapi.mjs --write` (scripts/docs) rewrites it.
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser } from '@asyncapi/parser';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const text = readFileSync(join(root, 'docs', 'asyncapi.yaml'), 'utf8');
const failures = [];

const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);
// Severity 0 is an error; the rest are style hints.
for (const d of diagnostics.filter((d) => d.severity === 0)) {
  failures.push(`invalid AsyncAPI: ${d.message} at ${d.path.join('.')}`);
}
if (!document) {
  console.error(failures.join('\n'));
  process.exit(1);
}
const json = document.json();
if (json.asyncapi !== '3.0.0') failures.push(`asyncapi is ${json.asyncapi}, expected 3.0.0`);

// The code's side.
// The dispatcher finds every handler in one table, `BUILT_IN` in src/protocol/kinds.rs.
const kinds = readFileSync(join(root, 'src/protocol/kinds.rs'), 'utf8');
const start = kinds.indexOf('pub const BUILT_IN');
const table = start < 0 ? '' : kinds.slice(start, kinds.indexOf('];', start));
const handled = new Set([...table.matchAll(/\("([a-z_]+)",\s*Builtin::/g)].map((m) => m[1]));
const errors = readFileSync(join(root, 'src/protocol/error.rs'), 'utf8');
const codes = new Set([...errors.matchAll(/=> "([A-Z_]+)"/g)].map((m) => m[1]));
if (handled.size < 10 || codes.size < 10) failures.push('could not read the dispatch table or the error codes');
const sources = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    // Test modules spell made-up types; only the code that runs counts.
    else if (name.endsWith('.rs')) {
      const code = readFileSync(path, 'utf8').split('#[cfg(test)]')[0];
      // Comments show examples of configured types, not messages Herald builds.
      const text = code.split('\n').filter((line) => !line.trim().startsWith('//')).join('\n');
      sources.push({ path, text });
    }
  }
};
walk(join(root, 'src'));
const everything = sources.map((s) => s.text).join('\n');
// Server message types as Herald's own protocol code builds them: `outbound::reply("kind", …)`,
// `"type": "kind"` in a json! object, `insert("type".into(), "kind".into())`. The Pusher face
// (src/pusher) speaks Pusher's protocol and is not described here.
const own = sources.filter((s) => !s.path.includes('/pusher/') && !s.path.endsWith('/config/pusher.rs'));
const sent = new Set();
for (const { text } of own) {
  for (const m of text.matchAll(/reply\(\s*"([a-z_]+)"/g)) sent.add(m[1]);
  for (const m of text.matchAll(/"type"\s*:\s*"([a-z_]+)"/g)) sent.add(m[1]);
  for (const m of text.matchAll(/"type"\.into\(\),\s*"([a-z_]+)"\.into\(\)/g)) sent.add(m[1]);
}

// The document's side.
const messages = Object.entries(json.components.messages);
const typeOf = (m) => m.payload?.properties?.type?.const;
const documentedClient = new Set(messages.filter(([k]) => k.startsWith('client_')).map(([, m]) => typeOf(m)).filter(Boolean));
const documentedServer = new Set(messages.filter(([k]) => k.startsWith('server_')).map(([, m]) => typeOf(m)).filter(Boolean));
const documentedCodes = new Set(json.components.schemas.ErrorCode.enum);

for (const t of handled) if (!documentedClient.has(t)) failures.push(`client message type "${t}" is handled (protocol/kinds.rs) but not documented`);
for (const t of documentedClient) if (!handled.has(t)) failures.push(`client message type "${t}" is documented but the dispatch table (protocol/kinds.rs) does not handle it`);
for (const c of codes) if (!documentedCodes.has(c)) failures.push(`error code ${c} is in error.rs but not documented`);
for (const c of documentedCodes) if (!codes.has(c)) failures.push(`error code ${c} is documented but not in error.rs`);
for (const t of documentedServer) if (!everything.includes(`"${t}"`)) failures.push(`server message type "${t}" is documented but the code never spells it`);
for (const t of sent) {
  if (!documentedServer.has(t) && !documentedClient.has(t)) failures.push(`message type "${t}" is built in src/ but not documented`);
}

// The book's message reference, rendered from the document.
const cell = (s) => String(s ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ');
const fields = (m) =>
  Object.keys(m.payload?.properties ?? {})
    .filter((k) => k !== 'type')
    .map((k) => `\`${k}\``)
    .join(', ');
const rows = (prefix) =>
  messages
    .filter(([k]) => k.startsWith(prefix))
    .map(([, m]) => `| \`${typeOf(m) ?? m.name}\` | ${cell(fields(m))} | ${cell(m.summary)} |`)
    .join('\n');
const reference = `<!-- Generated from docs/asyncapi.yaml by \`scripts/docs\` (tests/docs/check-asyncapi.mjs). Do not edit. -->

# Message reference

Every message of Herald's WebSocket protocol, from the AsyncAPI document
(\`docs/asyncapi.yaml\` in the repository).
Every message is a JSON object with a \`type\`; the fields listed are the main ones, and messages may
carry more.

## Client messages

| \`type\` | Fields | What it does |
|---|---|---|
${rows('client_')}

## Server messages

| \`type\` | Fields | What it is |
|---|---|---|
${rows('server_')}

## Error codes

The \`code\` of an \`error\` message: ${[...documentedCodes].map((c) => `\`${c}\``).join(', ')}.
`;
const page = join(root, 'docs', 'book', 'src', 'protocol-reference.md');
if (process.argv.includes('--write')) writeFileSync(page, reference);
let committed = '';
try {
  committed = readFileSync(page, 'utf8');
} catch {}
if (committed !== reference) failures.push(`${page} is out of date with docs/asyncapi.yaml: run scripts/docs`);

if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
console.log(
  `docs/asyncapi.yaml: valid AsyncAPI ${json.asyncapi}; ${documentedClient.size} client and ${documentedServer.size} server message types, ${documentedCodes.size} error codes, in step with the code`,
);
